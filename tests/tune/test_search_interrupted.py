"""An interrupted search (Ctrl+C) continues with --resume: every trial ends, no finished trial
runs again, and unfinished ones continue from their checkpoints instead of starting over."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import yaml

from tune.cli import search

SPACE = {
    "name": "interrupted",
    "method": "grid",
    "seed": 0,
    "max_concurrent": 2,
    "baseline": False,
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"values": [2, 5]}, "lambda_div": {"values": [0.05, 0.5]}},
    "train": {"iterations": 120, "batch_size": 2, "teacher_steps": 6},
    # 4 samples of one prompt: the teacher's k-NN precision, so its fidelity (the default quality),
    # can be 0, which nothing can be normalised by
    "eval": {"prompts": ["3"], "seeds_per_prompt": 4, "every": 4, "quality_metric": "class_prob"},
    "scheduler": {"type": "fifo"},
    "wandb": {"enabled": False},
}


def test_ctrl_c_then_resume_finishes_every_trial_once(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    storage = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "tune.search", "--space", str(path), "--storage", str(storage)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list(storage.glob("interrupted/*/checkpoint_*"))) < 2:
            time.sleep(0.5)
        assert len(list(storage.glob("interrupted/*/checkpoint_*"))) >= 2, "no trial reported in time"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C: Tune saves the experiment and stops
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    reported_before = {p.parent.name for p in storage.glob("interrupted/*/checkpoint_*")}

    assert search.main(["--space", str(path), "--storage", str(storage), "--resume"]) == 0
    trials = pd.read_parquet(storage / "interrupted" / "trials.parquet")
    assert trials["trial_id"].nunique() == 4
    final = trials.groupby("trial_id")["student_updates"].max()
    assert (final == 20).all(), final.to_dict()  # every trial reached the end
    # each evaluation point appears once per trial: nothing was trained twice from scratch
    assert not trials.duplicated(["trial_id", "student_updates"]).any()
    assert reported_before, "the interruption came before any checkpoint"
    summary = json.loads((storage / "interrupted" / "summary.json").read_text())
    assert summary["trials"] == 4
