"""Load at thousands of trials (issue 24, section 6): what the driver keeps per trial. The times
and the curve are bench/load.py's (docs/results/load.md); these check the behaviour
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


def test_the_next_trial_is_rays_choice_made_among_the_live_trials():
    """Ray's FIFO choice (the first PENDING trial in the controller's list, else the first PAUSED)
    walked every trial at each step of Tune's loop; the search's schedulers make the same choice
    among the live ones, through additions, trials ending and requeued trials (moved last)."""
    import random

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler

    from tune.schedulers import make_scheduler
    from tune.space.schema import SchedulerSpec

    class Controller:  # Tune's: the list in order, and the live set
        def __init__(self):
            self.trials, self.live = [], set()

        def get_trials(self):
            return self.trials

        def get_live_trials(self):
            return self.live

    rng = random.Random(0)
    for kind in ("fifo", "asha", "moasha"):
        scheduler, controller = make_scheduler(SchedulerSpec(type=kind), max_t=100), Controller()
        for step in range(300):
            move = rng.random()
            if move < 0.3 or not controller.trials:  # a new trial
                trial = Trial("dpdmd_stub", stub=True, trial_id=f"t{step}")
                controller.trials.append(trial)
                controller.live.add(trial)
                scheduler.on_trial_add(controller, trial)
            else:
                trial = rng.choice(controller.trials)
                if trial.status in (Trial.TERMINATED, Trial.ERROR):
                    continue
                status = rng.choice([Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED, Trial.ERROR, "requeue"])
                if status == "requeue":  # TuneController._requeue_trial
                    trial.set_status(Trial.PENDING)
                    controller.trials.remove(trial)
                    controller.trials.append(trial)
                    scheduler.on_trial_add(controller, trial)
                else:
                    trial.set_status(status)
                    if status in (Trial.TERMINATED, Trial.ERROR):
                        controller.live.discard(trial)
            assert scheduler.choose_trial_to_run(controller) is FIFOScheduler().choose_trial_to_run(controller), \
                (kind, step)


def test_the_load_bench_runs_a_small_search():
    proc = subprocess.run([sys.executable, "bench/load.py", "--one", "moasha", "60"], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["trials"] == 60 and row["reports"] >= 60
    assert row["state_kib"] > 0  # the rungs were saved as a live search saves them
    for key in ("scheduler_ms_per_report", "searcher_ms_per_report", "driver_mib", "outputs_s"):
        assert row[key] >= 0, key
