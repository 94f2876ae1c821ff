"""Load at thousands of trials (issue 24, section 6): what the driver keeps per trial. The times
and the curve are bench/load.py's (docs/results/load-2026-12-05.md); these check the behaviour
behind them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_trials_keep_no_metric_windows_in_the_driver():
    from ray.tune.experiment import Trial

    from tune.run.trial_metadata import LightTrialMetadata

    kept, light = Trial("dpdmd_stub", stub=True), Trial("dpdmd_stub", stub=True)
    LightTrialMetadata().on_trial_start(iteration=0, trials=[light], trial=light)
    for step in range(1, 13):
        result = {"training_iteration": step, "student_updates": 2 * step, "diversity": 0.1 * step, "quality": 0.5}
        kept.update_last_result(result)
        light.update_last_result(result)
    assert len(kept.run_metadata.metric_n_steps["diversity"]["10"]) == 10  # Ray's default: the last 10 kept
    assert light.run_metadata.metric_n_steps["diversity"] == {}  # none here
    assert light.run_metadata.metric_analysis["diversity"] == {k: v for k, v in kept.run_metadata.metric_analysis[
        "diversity"].items() if not k.startswith("last-")}  # max, min, avg and last stay
    assert light.last_result["student_updates"] == 24


def test_the_tuner_installs_it(tmp_path):
    import argparse

    import yaml

    from tune.run.trial_metadata import LightTrialMetadata
    from tune.run.tuner import build_tuner
    from tune.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "load", "method": "grid", "backbones": {"digits-flow": {}},
                                    "parameters": {"anchor_k": {"values": [2]}}, "wandb": {"enabled": False}}))
    space = load_space(path)
    args = argparse.Namespace(name=None, num_samples=None, resume=False)
    tuner = build_tuner(space, args, storage=str(tmp_path / "runs"), cache={"enabled": False})
    callbacks = tuner._local_tuner._run_config.callbacks
    assert any(isinstance(c, LightTrialMetadata) for c in callbacks)


def test_the_load_bench_runs_a_small_search():
    proc = subprocess.run([sys.executable, "bench/load.py", "--one", "moasha", "60"], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["trials"] == 60 and row["reports"] >= 60
    assert row["state_kib"] > 0  # the rungs were saved as a live search saves them
    for key in ("scheduler_ms_per_report", "searcher_ms_per_report", "driver_mib", "outputs_s"):
        assert row[key] >= 0, key
