"""An interrupted search (Ctrl+C) says so and continues with --resume: it exits 130, its
summary.json and printed table say "interrupted", it prints the --resume command; then every
trial ends, no finished trial runs again, and unfinished ones continue from their checkpoints
instead of starting over. SIGTERM and a second Ctrl+C: tests/faults/test_interrupts.py."""

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


def interrupt(space_path, storage, name: str, sig: int, *, times: int = 1, group: bool = True,
              checkpoints: int = 2) -> tuple[int, str]:
    """Start the search, send ``sig`` ``times`` (to its process group, as a terminal's Ctrl+C, or
    to the driver alone, as ``timeout`` or Kubernetes) once ``checkpoints`` checkpoints exist;
    returns its exit status and output."""
    log = storage.parent / f"{name}-{signal.Signals(sig).name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tune.search", "--space", str(space_path), "--storage",
                                 str(storage)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, RAY_AUTH_MODE="disabled"))
        try:
            deadline = time.time() + 300
            while time.time() < deadline and len(list(storage.glob(f"{name}/*/checkpoint_*"))) < checkpoints:
                time.sleep(0.5)
            assert len(list(storage.glob(f"{name}/*/checkpoint_*"))) >= checkpoints, "no trial reported in time"
            for _ in range(times):
                os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
                time.sleep(1.0)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, log.read_text()


def assert_said_interrupted(exp, code: int, output: str, sig: str, storage, space_path) -> None:
    assert code == 128 + int(getattr(signal, sig)), output[-3000:]  # 130 (SIGINT) / 143 (SIGTERM), not 0
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["status"] == f"interrupted ({sig})" and summary["interrupted"] == sig
    assert summary["unfinished_trials"] >= 1
    command = (f"python -m tune.search --space {space_path.resolve()} --storage {storage.resolve()} "
               f"--name {exp.name} --resume")
    assert summary["resume_command"] == command
    assert f"INTERRUPTED ({sig}): a partial search" in output and command in output
    assert "Tuner.restore" not in output  # Ray's own advice, for its API, not this command line
    assert "Traceback" not in output and "Exception ignored" not in output


def test_ctrl_c_then_resume_finishes_every_trial_once(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    storage = tmp_path / "runs"
    code, output = interrupt(path, storage, "interrupted", signal.SIGINT)  # Ctrl+C: Tune saves the experiment and stops
    assert_said_interrupted(storage / "interrupted", code, output, "SIGINT", storage, path)
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
    assert summary["status"] == "finished" and summary["interrupted"] is None
