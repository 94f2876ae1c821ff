"""Search-level faults (issue 13, sections 1, 2 and 5): a diverging trial stopped, listed and kept
off the front with exit status 1; the cache actor removed with ray.kill mid-search and recreated
from its spill; --resume of another space refused; concurrency honoured for grid searches."""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import pytest

from tests.faults import spaces
from tests.faults.spaces import SMALL_SEARCH
from tune.cli import search
from tune.run.tuner import build_tuner
from tune.storage.uri import join_uri

SPACE = {**SMALL_SEARCH, "name": "faults",
    "parameters": {"lr": {"values": [1.0e-4, 1.0e30]}, "anchor_k": {"value": 2}, "lambda_div": {"value": 0.5}},
    "train": {"iterations": 24, "batch_size": 2, "teacher_steps": 10, "fake_updates": 1},
}


def write_space(tmp_path, **changes):
    return spaces.write_space(tmp_path, SPACE, **changes)


def _kill_store_after_first_hit(spill_uri: str, killed: list):
    """Wait until the store holds an anchor, then remove the actor with ray.kill (not just its
    process: Ray does not restart it)."""
    import ray

    from tune.trial.anchor_store import find_store

    deadline = time.time() + 300
    while time.time() < deadline and not killed:
        try:
            if ray.is_initialized():
                store = find_store(spill_uri)
                if ray.get(store.stats.remote(), timeout=10).get("spill_writes", 0) >= 2:
                    ray.kill(store)
                    killed.append(time.time())
                    return
        except Exception:  # noqa: BLE001 - not there yet
            pass
        time.sleep(0.2)


@pytest.fixture(scope="module")
def diverged_search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    path = write_space(tmp)
    storage = tmp / "runs"
    killed: list = []
    killer = threading.Thread(target=_kill_store_after_first_hit,
                              args=(join_uri(str(storage.resolve()), "anchor_cache"), killed), daemon=True)
    killer.start()
    code = search.main(["--space", str(path), "--storage", str(storage)])
    killer.join(timeout=1)
    return code, storage / "faults", killed


def test_diverging_trial_is_stopped_listed_and_kept_off_the_front(diverged_search, capsys):
    code, exp, _ = diverged_search
    assert code == 1  # a trial failed: the exit status says so
    summary = json.loads((exp / "summary.json").read_text())
    (failed,) = summary["failed_trials"]
    assert failed["status"] == "diverged" and ("not finite" in failed["error"] or "nan" in failed["error"])
    trials = pd.read_parquet(exp / "trials.parquet")
    assert set(trials["trial_id"]) >= {failed["trial_id"]}  # its rows are kept
    assert trials[trials["trial_id"] == failed["trial_id"]]["diverged"].iloc[-1] == 1
    front = pd.read_parquet(exp / "pareto.parquet")
    assert failed["trial_id"] not in set(front["trial_id"])  # (the healthy one may be below the quality floor)


def test_cache_actor_removed_mid_search_is_recreated(diverged_search):
    _, exp, killed = diverged_search
    assert killed, "the store was never killed: the test did not exercise the fault"
    trials = pd.read_parquet(exp / "trials.parquet")
    healthy = trials[trials["diverged"] == 0]
    assert healthy["student_updates"].max() == 12  # the healthy trial ran to the end
    assert not trials.duplicated(["trial_id", "student_updates"]).any()
    summary = json.loads((exp / "summary.json").read_text())
    assert "unavailable" not in summary["cache"]  # the driver read the recreated store
    assert summary["cache"]["spill_reads"] >= 1  # the new store refilled from the spill


def test_resume_with_another_space_is_refused(diverged_search, tmp_path, capsys):
    _, exp, _ = diverged_search
    other = write_space(tmp_path, parameters={**SPACE["parameters"], "lr": {"values": [1.0e-3]}})
    args = ["--space", str(other), "--storage", str(exp.parent)]
    assert search.main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume: the search 'faults' was started from a different space" in err and "--name NEW_NAME" in err
    assert search.main(args) == 2  # a new search may not reuse the name either
    assert "already exists" in capsys.readouterr().err


def test_grid_and_random_searches_honour_max_concurrent(tmp_path):
    # Ray's ConcurrencyLimiter (max_concurrent_trials) only wraps a Searcher; a BasicVariantGenerator
    # ignored the limit. Every method's search algorithm is a Searcher, so the limit holds.
    from ray.tune.search import Searcher

    from tune.space import load_space

    for method in ("grid", "random"):
        changes = {"method": method}
        if method == "random":
            changes["parameters"] = {"lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3},
                                     "anchor_k": {"value": 2}}
        space = load_space(write_space(tmp_path, **changes))
        args = search.parse_args(["--space", str(space.path)])
        tuner = build_tuner(space, args, storage=str(tmp_path / "runs"),
                                   cache={"enabled": False, "spill_uri": None})
        tune_config = tuner._local_tuner._tune_config
        assert isinstance(tune_config.search_alg, Searcher), method
        assert tune_config.max_concurrent_trials == 1
