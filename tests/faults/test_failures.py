"""Failed trials as data (tune.outputs.failures): errored and diverged trials listed with their error,
and kept off the front; counts add up across a resume (dpdmd.training)."""

from __future__ import annotations

import pandas as pd
from ray.tune import Result

from tune.outputs.failures import failed_trials, failures_table, without_failed


def result(trial_id, error=None, rows=()):
    frame = pd.DataFrame(rows) if rows else None
    return Result(metrics={"trial_id": trial_id} if rows else {}, checkpoint=None, error=error,
                  path=f"/runs/x/run_search_trial_{trial_id}_lr=1", metrics_dataframe=frame,
                  _storage_filesystem=None)


def test_errored_and_diverged_trials_are_listed_and_kept_off_the_front():
    error = RuntimeError("Traceback (most recent call last):\n  ...\nLinAlgError: Array must not contain infs or NaNs")
    results = [result("aaaaa_00000", rows=[{"trial_id": "aaaaa_00000", "diversity": 0.1, "quality": 0.9}]),
               result("aaaaa_00001", error=error),  # errored before its first report: no rows
               result("aaaaa_00002", rows=[{"trial_id": "aaaaa_00002", "diversity": 0.2, "quality": 0.95}])]
    final = pd.DataFrame([
        {"trial_id": "aaaaa_00000", "diversity": 0.1, "quality": 0.9, "diverged": 0},
        {"trial_id": "aaaaa_00002", "diversity": float("nan"), "quality": float("nan"), "diverged": 1,
         "diverged_reason": "loss_dmd = nan at iteration 7"}])
    failed = failed_trials(results, final)
    assert [(f["trial_id"], f["status"]) for f in failed] == [("aaaaa_00001", "error"), ("aaaaa_00002", "diverged")]
    assert failed[0]["error"] == "LinAlgError: Array must not contain infs or NaNs"
    assert failed[1]["error"] == "loss_dmd = nan at iteration 7"
    assert list(without_failed(final, failed)["trial_id"]) == ["aaaaa_00000"]
    table = failures_table(failed)
    assert "aaaaa_00001  error" in table and "LinAlgError" in table


def test_counts_add_up_across_a_resume(tmp_path):
    from dpdmd import EvalConfig, TrainConfig
    from dpdmd.training.checkpoints import CHECKPOINT
    from dpdmd.training.loop import train

    from ..dpdmd.helpers import register_random_backbones

    register_random_backbones()
    config = TrainConfig(backbone="test-random-flow", iterations=8, batch_size=2, teacher_steps=6, anchor_k=2,
                         fake_updates=1, device="cpu", eval=EvalConfig(prompts=["3"], seeds_per_prompt=4, every=2))
    first = train(config.replace(iterations=4), out_dir=tmp_path / "a", progress=False)
    import torch

    state = torch.load(tmp_path / "a" / CHECKPOINT / "state.pt", weights_only=False)
    assert state["counters"]["prompts_encoded"] == first["prompts_encoded"] > 0
    state["config"]["iterations"] = 8  # as if the run of 8 iterations was stopped at 4
    torch.save(state, tmp_path / "a" / CHECKPOINT / "state.pt")
    resumed = train(config, out_dir=tmp_path / "a", resume_from=tmp_path / "a" / CHECKPOINT, progress=False)
    fresh_process = train(config.replace(iterations=4), progress=False)  # what one process alone counts
    assert resumed["prompts_encoded"] == first["prompts_encoded"] + fresh_process["prompts_encoded"]
    assert resumed["seconds"] > first["seconds"]


def test_store_statistics_add_up_over_the_stores_of_a_search(tmp_path):
    """A resumed search (or a store recreated after ray.kill) counts from 0 in a new store: the
    summary adds every store's counts; re-recording one store replaces its earlier record."""
    import numpy as np

    from tune.trial.anchor_store import _Store
    from tune.trial.cache_stats import record_stats, total_stats

    uri = str(tmp_path / "exp" / "cache_stats.jsonl")
    first, second = _Store(), _Store()
    assert first.store_id != second.store_id
    for key in ("a", "b"):
        first.lookup(key)
        first.publish(key, {"x": np.zeros(3, np.float32)}, teacher_calls=5)
    record_stats(uri, first.stats())
    first.lookup("a")  # a hit after the first record: the later record replaces the earlier
    record_stats(uri, first.stats())
    second.lookup("c")
    second.publish("c", {"x": np.zeros(2, np.float32)}, teacher_calls=5)
    second.lookup("a")  # the resumed part's store; its latest counts given directly
    total = total_stats(uri, second.stats())
    assert total["teacher_calls"] == 15 and total["misses"] == 4 and total["hits"] == 1
    assert total["entries"] == 1 and total["bytes"] == 8  # what the current store holds, not a sum
    assert [s["store_id"] for s in total["stores"]] == [first.store_id, second.store_id]
    assert total_stats(str(tmp_path / "none.jsonl"), second.stats())["teacher_calls"] == 5


def test_a_spill_that_cannot_be_written_or_read_keeps_the_store_working(tmp_path):
    """The anchor store's spill on a full or lost storage: entries stay in memory, counted, and no
    half-written file is left; a lookup whose spill cannot be read computes instead."""
    import numpy as np
    import pytest

    from tune.trial.anchor_store import _Store

    store = _Store(spill_uri=str(tmp_path / "spill"))

    class Failing:  # the store's pyarrow filesystem, with some calls failing as a full disk's do
        def __init__(self, fs, *failing):
            self.fs, self.failing = fs, failing

        def __getattr__(self, name):
            if name in self.failing:
                def fail(*args, **kwargs):
                    raise OSError(28, "No space left on device")
                return fail
            return getattr(self.fs, name)

    local = store.fs
    store.fs = Failing(local, "open_output_stream")
    assert store.lookup("a")[0] == "compute"
    with pytest.warns(UserWarning, match="cannot spill"):
        store.publish("a", {"x": np.ones(3, np.float32)}, teacher_calls=5)
    assert store.lookup("a")[0] == "hit" and store.stats()["spill_errors"] == 1
    assert not list((tmp_path / "spill").iterdir())
    store.fs = Failing(local, "get_file_info")  # the storage is gone: reading the spill fails
    assert store.lookup("b")[0] == "compute" and store.stats()["spill_errors"] == 2
