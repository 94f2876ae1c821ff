"""A quickstart-sized search on a local Ray with 2 CPUs: outputs, the front, ASHA, the anchor
cache (computed once, bit-for-bit equal to a recomputation), the offline W&B run, resume."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tune.cli import search

SPACE = {
    "name": "e2e",
    "method": "grid",
    "seed": 0,
    "max_concurrent": 2,
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"values": [2, 5]}, "lambda_div": {"values": [0.05, 1.0]}},
    "train": {"iterations": 48, "batch_size": 4, "teacher_steps": 10},
    "eval": {"prompts": ["3", "7"], "seeds_per_prompt": 4, "every": 1},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    # 8 student updates scored on 4 seeds: k-NN precision takes a few values only, so no floor
    # here (the floor is tested in test_objective.py); the front is still in teacher units
    "objective": {"min_quality": 0.0},
    "wandb": {"enabled": True, "project": "dpdmd-tune-test"},
}


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    import os

    tmp = tmp_path_factory.mktemp("search")
    for var in ("WANDB_API_KEY",):
        os.environ.pop(var, None)
    os.environ["WANDB_DIR"] = str(tmp / "wandb")
    os.environ["WANDB_CONFIG_DIR"] = str(tmp / "wandb-config")
    os.environ["NETRC"] = str(tmp / "no-netrc")
    os.environ.pop("WANDB_MODE", None)  # offline must be chosen automatically (no API key)
    space_path = tmp / "space.yaml"
    space_path.write_text(yaml.safe_dump(SPACE))
    storage = tmp / "runs"
    assert search.main(["--space", str(space_path), "--storage", str(storage)]) == 0
    return space_path, storage, storage / "e2e"


def test_every_output_is_written(finished_search):
    _, _, exp = finished_search
    for name in ("trials.parquet", "kept.parquet", "pareto.parquet", "pareto.png", "curves.png", "summary.json"):
        assert (exp / name).stat().st_size > 0, name
    trials = pd.read_parquet(exp / "trials.parquet")
    assert {"trial_id", "anchor_k", "lambda_div", "backbone", "student_updates", "diversity", "quality",
            "diversity_score", "quality_score", "objective", "loss_dmd", "anchor_hits", "anchor_misses"} <= set(trials.columns)
    assert trials["trial_id"].nunique() == 5  # 4 grid points + the vanilla-DMD baseline
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["trials"] == 5 and summary["hypervolume"]["digits-flow"] > 0 and "front" not in summary
    assert summary["rungs"] == [1.0, 2.0, 4.0, 8.0]  # grace 1, reduction 2, max_t 8
    kept = pd.read_parquet(exp / "kept.parquet")
    assert sorted(kept["trial_id"]) == sorted(trials["trial_id"].unique())
    assert summary["compute"]["teacher_calls_spent"] < summary["compute"]["teacher_calls_without_cache"]


def dominates(a, b) -> bool:
    """a >= b everywhere and > somewhere (both maximised)."""
    return bool(np.all(np.greater_equal(a, b)) and np.any(np.greater(a, b)))


def test_front_equals_brute_force_non_dominated_filter(finished_search):
    _, _, exp = finished_search
    trials = pd.read_parquet(exp / "trials.parquet")
    # each trial's best report by J (ties: the later one; J finite), as its kept checkpoint
    shown = {}
    for r in trials.sort_values("student_updates", kind="stable").itertuples():
        if np.isfinite(r.objective) and (r.trial_id not in shown or r.objective >= shown[r.trial_id].objective):
            shown[r.trial_id] = r
    pts = {t: (r.diversity_score, r.quality_score) for t, r in shown.items()}
    brute = {t for t, p in pts.items()
             if np.all(np.isfinite(p)) and not any(dominates(q, p) for u, q in pts.items() if u != t)}
    front = pd.read_parquet(exp / "pareto.parquet")
    assert set(front["trial_id"]) == brute and brute and set(front["backbone"]) == {"digits-flow"}
    summary = json.loads((exp / "summary.json").read_text())
    best_j = max(front["objective"])
    pick = summary["recommended"]["digits-flow"]
    assert pick["trial_id"] in brute and pick["objective"] == best_j
    assert {m["trial_id"] for m in summary["fronts"]["digits-flow"]} == brute


def test_each_front_member_is_its_trials_kept_checkpoint_on_disk(finished_search):
    """summary.json names, for each front member, the report it is and its checkpoint: the
    trial's last report with a checkpoint, its best by J, which Ray's own analysis ranks best."""
    from ray.tune import ExperimentAnalysis

    _, _, exp = finished_search
    summary = json.loads((exp / "summary.json").read_text())
    trials = pd.read_parquet(exp / "trials.parquet")
    analysis = ExperimentAnalysis(str(exp))
    for member in summary["fronts"]["digits-flow"]:
        checkpoint = Path(member["checkpoint"])
        assert (checkpoint / "student").is_dir(), member
        mine = trials[trials["trial_id"] == member["trial_id"]].sort_values("student_updates")
        assert member["objective"] == mine["objective"].max()
        assert mine["checkpoint_dir_name"].dropna().iloc[-1] == checkpoint.name
        report = mine[mine["checkpoint_dir_name"] == checkpoint.name]
        assert report["student_updates"].tolist() == [member["student_updates"]]
        trial = next(t for t in analysis.trials if t.trial_id == member["trial_id"])
        assert Path(analysis.get_best_checkpoint(trial, "shown_objective", "max").path) == checkpoint


def test_asha_stops_some_trials_early(finished_search):
    _, _, exp = finished_search
    trials = pd.read_parquet(exp / "trials.parquet")
    last = trials.groupby("trial_id")["student_updates"].max()
    assert last.max() == 8  # max_t: 48 iterations / 6
    assert (last < 8).any(), last.to_dict()


def test_each_anchor_computed_once_and_equal_to_recomputation(finished_search):
    _, storage, exp = finished_search
    summary = json.loads((exp / "summary.json").read_text())
    cache = summary["cache"]
    assert cache["keys_computed_twice"] == 0
    trials = pd.read_parquet(exp / "trials.parquet")
    final = trials.sort_values("student_updates").groupby("trial_id").tail(1)
    guided = final[final["lambda_div"] > 0]
    # every student iteration of every DP-DMD trial asked once; the distinct anchor keys are
    # the student iterations of the longest trial; each cost one teacher pass to K = 5
    anchors_asked = int((guided["anchor_hits"] + guided["anchor_misses"]).sum())
    assert anchors_asked == int(guided["student_updates"].sum())
    anchor_keys = int(guided["student_updates"].max())
    assert cache["teacher_calls"] == anchor_keys * 5
    assert int(guided["anchor_misses"].sum()) == anchor_keys

    # a spilled anchor equals a fresh recomputation bit for bit
    from safetensors import safe_open

    from dpdmd.anchors import teacher_anchors
    from dpdmd.config import from_mapping
    from dpdmd.data.prompt_cache import PromptEmbeddingCache
    from dpdmd.stream import iteration_batch
    from dpdmd.training.build import build_backbone

    files = sorted((storage / "anchor_cache").glob("*.safetensors"))
    anchor_files = []
    for f in files:
        with safe_open(str(f), "np") as h:
            key = h.metadata()["key"]
            if key.startswith("anchor/"):
                anchor_files.append((key, {k: h.get_tensor(k) for k in h.keys()}))
    assert len(anchor_files) == anchor_keys
    key, arrays = anchor_files[0]
    iteration = int(key.split("/i")[1].split("/")[0])
    config = from_mapping({**SPACE["train"], "eval": SPACE["eval"], "device": "cpu"})
    backbone = build_backbone(config)
    teacher = backbone.build_networks()[0]
    batch = iteration_batch(seed=0, iteration=iteration, prompts=list(backbone.default_prompts), batch_size=4,
                            latent_shape=backbone.latent_shape, num_dmd_levels=1000)
    embed = PromptEmbeddingCache(backbone)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trials
    try:
        fresh = teacher_anchors(backbone, teacher, batch.x1, embed(batch.prompts), embed([""] * 4), [2, 5])
    finally:
        torch.set_num_threads(threads)
    for k in (2, 5):
        assert np.array_equal(arrays[str(k)], fresh[k].numpy()), k


def test_offline_wandb_summary_run_holds_the_front(finished_search):
    _, _, exp = finished_search
    runs = list((exp / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].glob("files/media/table/pareto/front_*.table.json"))
    assert tables
    table = json.loads(tables[0].read_text())
    front = pd.read_parquet(exp / "pareto.parquet")
    assert len(table["data"]) == len(front) + 1  # the front and the teacher's row at (1, 1)
    assert {"diversity", "quality", "diversity_score", "quality_score"} <= set(table["columns"])
    teacher = dict(zip(table["columns"], table["data"][-1]))
    assert teacher["trial_id"] == "teacher" and teacher["diversity_score"] == teacher["quality_score"] == 1.0
    import wandb

    from tests.tune.wandb_log import by_type

    wandb.teardown()  # the search's process would flush the transaction log as it exits
    log = by_type(runs[0])
    assert log["run"][0].run.run_group == "e2e"  # beside the per-trial runs of the experiment
    models = [a.artifact for a in log["artifact"] if a.artifact.type == "model"]
    assert {m.name for m in models} == {f"e2e-digits-flow-{t}" for t in front["trial_id"]}
    assert all(e.ref.startswith("file://") for m in models for e in m.manifest.contents)


def test_resume_reruns_nothing_and_recomputes_no_anchor(finished_search, capsys):
    space_path, storage, exp = finished_search
    before = pd.read_parquet(exp / "trials.parquet")
    first = json.loads((exp / "summary.json").read_text())["cache"]
    assert search.main(["--space", str(space_path), "--storage", str(storage), "--resume"]) == 0
    after = pd.read_parquet(exp / "trials.parquet")
    assert len(after) == len(before)  # finished trials were not run again
    cache = json.loads((exp / "summary.json").read_text())["cache"]
    assert len(cache["stores"]) == 2 and cache["stores"][-1].get("teacher_calls", 0) == 0  # nothing recomputed
    # the store's counts add up over both parts (the resumed part's store counted from 0)
    assert first["teacher_calls"] > 0 and cache["teacher_calls"] == first["teacher_calls"]
    assert cache["misses"] == first["misses"] and cache["hits"] >= first["hits"]
