"""The search's storage on S3-compatible storage, against a local S3 server (moto): Tune's
experiment (trial results, checkpoints, search state), the outputs and the anchor spill all land
in the bucket; ``--resume`` from the bucket re-runs nothing and recomputes no anchor; a second
search on the same storage reads every anchor from the spill instead of running the teacher.

Nothing but the environment points the search at the server: ``AWS_ENDPOINT_URL`` (and test
credentials), which pyarrow's S3FileSystem reads, hence Ray's storage and the anchor spill, in
the driver and in every Ray worker process the driver starts."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest

from .conftest import run_search, tiny_space, write_space

SPACE = tiny_space("s3", iterations=24, batch_size=4, eval_every=2)  # 4 student updates
STUDENT_UPDATES = 24 // 6
OUTPUTS = ("trials.parquet", "kept.parquet", "pareto.parquet", "pareto.png", "curves.png", "summary.json")


def _parquet(s3, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(s3.read(key)))


def _summary(s3, name: str) -> dict:
    return json.loads(s3.read(f"runs/{name}/summary.json"))


def _spill_keys(s3) -> dict[str, str]:
    """S3 key of each spilled entry -> the cache key it holds (from the safetensors header)."""
    out = {}
    for key in s3.keys("runs/anchor_cache/"):
        if key.endswith(".safetensors"):
            blob = s3.read(key)
            header_len = int.from_bytes(blob[:8], "little")
            out[key] = json.loads(blob[8:8 + header_len])["__metadata__"]["key"]
    return out


def _trial_results(s3, name: str) -> dict[str, bytes]:
    """Each trial directory's result.json (one line per report), by trial directory."""
    return {k.split("/")[2]: s3.read(k) for k in s3.keys(f"runs/{name}/") if k.endswith("/result.json")}


@pytest.fixture(scope="module")
def first(s3_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3")
    space = write_space(tmp / "space.yaml", SPACE)
    storage = f"s3://{s3_server.bucket}/runs"
    run_search("--space", str(space), "--storage", storage, "--name", "s3-a", env=s3_server.env)
    return {"s3": s3_server, "space": space, "storage": storage, "keys": s3_server.keys(),
            "trials": _parquet(s3_server, "runs/s3-a/trials.parquet"), "summary": _summary(s3_server, "s3-a"),
            "results": _trial_results(s3_server, "s3-a"), "spill": _spill_keys(s3_server)}


def test_outputs_are_in_the_bucket(first):
    keys = set(first["keys"])
    for name in OUTPUTS:
        assert f"runs/s3-a/{name}" in keys, name
    assert first["summary"]["trials"] == 2
    front = _parquet(first["s3"], "runs/s3-a/pareto.parquet")
    assert len(front) >= 1 and set(front["trial_id"]) <= set(first["trials"]["trial_id"])


def test_the_fronts_redraw_from_the_bucket(first, tmp_path):
    """python -m tune.front reads a search at an s3:// URI and writes into a local --out."""
    import subprocess
    import sys

    from .conftest import REPO

    run = f"{first['storage']}/s3-a"
    proc = subprocess.run([sys.executable, "-m", "tune.front", run, "--min-quality", "0.0", "--out", str(tmp_path / "o")],
                          cwd=REPO, env=first["s3"].env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    redrawn = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert redrawn["fronts"] == first["summary"]["fronts"]  # the same floor: the same fronts
    assert (tmp_path / "o" / "pareto.png").is_file() and (tmp_path / "o" / "kept.parquet").is_file()
    kept = _parquet(first["s3"], "runs/s3-a/kept.parquet")
    assert all(c is None or c.startswith("s3://") for c in kept["checkpoint"])  # storage URIs, not local paths


def test_tune_experiment_with_checkpoints_is_in_the_bucket(first):
    keys = first["keys"]
    assert "runs/s3-a/tuner.pkl" in keys
    assert any(re.fullmatch(r"runs/s3-a/experiment_state-.*\.json", k) for k in keys)
    trial_dirs = {k.split("/")[2] for k in keys if k.startswith("runs/s3-a/") and k.endswith("/params.json")}
    assert len(trial_dirs) == 2
    for trial in trial_dirs:
        files = {k.split("/", 3)[3] for k in keys if k.startswith(f"runs/s3-a/{trial}/")}
        assert {"result.json", "params.json", "progress.csv"} <= files, files
        checkpoints = {f.split("/")[0] for f in files if f.startswith("checkpoint_")}
        assert len(checkpoints) == 1, files  # num_to_keep=1: the last one
        assert len([f for f in files if f.startswith("checkpoint_")]) > 1  # a directory with the trainer's files
        reports = first["results"][trial].decode().strip().splitlines()
        assert json.loads(reports[-1])["student_updates"] == STUDENT_UPDATES


def test_anchor_spill_is_in_the_bucket(first):
    spill, cache, final = first["spill"], first["summary"]["cache"], first["trials"]
    assert len(spill) == cache["spill_writes"] == cache["keys_computed"] > 0
    assert cache["keys_computed_twice"] == 0
    anchors = [k for k in spill.values() if k.startswith("anchor/")]
    assert len(anchors) == STUDENT_UPDATES
    assert int(final.groupby("trial_id")["anchor_misses"].max().sum()) == len(anchors)
    assert cache["teacher_calls"] == len(anchors) * 5  # one teacher pass to the largest K per key


@pytest.fixture(scope="module")
def resumed(first):
    s3 = first["s3"]
    run_search("--space", str(first["space"]), "--storage", first["storage"], "--name", "s3-a", "--resume",
               env=s3.env)
    return {"trials": _parquet(s3, "runs/s3-a/trials.parquet"), "summary": _summary(s3, "s3-a"),
            "results": _trial_results(s3, "s3-a"), "spill": _spill_keys(s3)}


def test_resume_from_the_bucket_reruns_nothing(first, resumed):
    before, after = first["trials"], resumed["trials"]
    assert len(after) == len(before)
    assert sorted(after["trial_id"].unique()) == sorted(before["trial_id"].unique())
    assert resumed["results"] == first["results"]  # no trial reported anything again
    cache = resumed["summary"]["cache"]  # the totals add up both runs' stores; the resumed one's is last
    assert cache["teacher_calls"] == first["summary"]["cache"]["teacher_calls"]
    resumed_store = cache["stores"][-1]
    assert len(cache["stores"]) == 2
    assert resumed_store.get("teacher_calls", 0) == 0 and resumed_store.get("keys_computed", 0) == 0
    assert resumed["spill"] == first["spill"]


@pytest.fixture(scope="module")
def second(first):
    s3 = first["s3"]
    run_search("--space", str(first["space"]), "--storage", first["storage"], "--name", "s3-b", env=s3.env)
    return {"trials": _parquet(s3, "runs/s3-b/trials.parquet"), "summary": _summary(s3, "s3-b"),
            "spill": _spill_keys(s3)}


def test_second_search_on_the_same_storage_reads_the_spill(first, second):
    cache = second["summary"]["cache"]
    assert cache.get("teacher_calls", 0) == 0 and cache.get("keys_computed", 0) == 0
    assert cache["spill_reads"] == len(first["spill"])  # each entry read back once, then served from memory
    final = second["trials"].sort_values("student_updates").groupby("trial_id").tail(1)
    assert len(final) == 2 and (final["student_updates"] == STUDENT_UPDATES).all()
    assert (final["anchor_misses"] == 0).all() and (final["anchor_hits"] == STUDENT_UPDATES).all()
    assert int(final["anchor_teacher_calls"].sum()) == 0
    assert second["spill"] == first["spill"]  # nothing new written
