"""`dpdmd.train` faults (issue 13, sections 1-3): no silent overwrite, nothing written before a
--resume is validated, a damaged checkpoint named and the previous one used, divergence stopped
and marked instead of crashing."""

from __future__ import annotations

import csv
import importlib
import math

import pytest
import torch

from dpdmd import EvalConfig, TrainConfig
from dpdmd.training.checkpoints import CHECKPOINT, PREVIOUS
from dpdmd.training.loop import train

from ..dpdmd.helpers import register_random_backbones

register_random_backbones()
train_cli = importlib.import_module("dpdmd.cli.train")

FLAGS = ["--backbone", "test-random-flow", "--iterations", "12", "--batch-size", "2", "--teacher-steps", "10",
         "--anchor-k", "3", "--fake-updates", "1", "--eval-prompts", "3", "--eval-seeds-per-prompt", "4",
         "--eval-every", "2", "--device", "cpu", "--no-progress"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert train_cli.main([*FLAGS, "--out", str(out)]) == 0
    return out


def test_non_empty_out_is_refused_without_resume_or_overwrite(finished_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    assert train_cli.main([*FLAGS, "--lambda-div", "0.5", "--out", str(finished_run)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert before == {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}


def test_resume_with_other_flags_writes_nothing(finished_run, capsys):
    before = {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file()}
    assert train_cli.main([*FLAGS, "--lambda-div", "0.5", "--out", str(finished_run), "--resume"]) == 2
    assert "different config" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file()}


def test_overwrite_clears_a_run_and_refuses_foreign_folders(tmp_path, finished_run, capsys):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(finished_run, out)
    (out / "samples" / "stale.png").write_bytes(b"x")
    assert train_cli.main([*FLAGS, "--lambda-div", "0.5", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "samples" / "stale.png").exists()
    assert [int(r["student_updates"]) for r in rows(out / "metrics.csv")] == [2, 4, 6]  # no old rows
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    assert train_cli.main([*FLAGS, "--out", str(home), "--overwrite"]) == 2
    assert "holds files a run does not write (thesis.tex)" in capsys.readouterr().err
    assert (home / "thesis.tex").read_text() == "precious"


def test_truncated_checkpoint_is_named_and_the_previous_one_used(tmp_path, finished_run, capsys):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(finished_run, out)
    assert (out / (CHECKPOINT + PREVIOUS) / "state.pt").exists()
    state = out / CHECKPOINT / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match=rf"{state} is damaged .*previous checkpoint"):
        assert train_cli.main([*FLAGS, "--out", str(out), "--resume"]) == 0
    # it continued from the previous checkpoint (4 updates) and logged 6 again, once
    assert [int(r["student_updates"]) for r in rows(out / "metrics.csv")] == [2, 4, 6]
    # without a previous checkpoint: exit 2 naming the file, no traceback
    shutil.rmtree(out / (CHECKPOINT + PREVIOUS))
    state.write_bytes(b"not a checkpoint")
    assert train_cli.main([*FLAGS, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"resume: {state} is damaged and cannot be read" in err and "Traceback" not in err


def test_infinite_lambda_div_is_refused_and_divergence_is_stopped_and_marked(tmp_path, capsys):
    assert train_cli.main([*FLAGS, "--lambda-div", "inf", "--out", str(tmp_path / "inf")]) == 2
    assert "lambda_div: inf is not allowed; give a finite number" in capsys.readouterr().err
    # a learning rate that blows the student up: stopped as diverged, rows kept, no crash
    out = tmp_path / "huge-lr"
    reports = []
    config = TrainConfig(backbone="test-random-flow", iterations=40, batch_size=2, teacher_steps=10, anchor_k=3,
                         fake_updates=1, lr=1e30, grad_clip=1e30, device="cpu",
                         eval=EvalConfig(prompts=["3"], seeds_per_prompt=4, every=1))
    with pytest.warns(UserWarning, match="the run diverged"):
        metrics = train(config, out_dir=out, report=lambda m, c: reports.append((m, c)), progress=False)
    assert metrics["diverged"] == 1
    assert any(text in metrics["diverged_reason"] for text in ("not finite", "= nan", "= inf"))
    assert math.isnan(metrics["diversity"]) and reports[-1][0] == metrics and reports[-1][1].state is None  # no checkpoint of NaN weights
    logged = rows(out / "metrics.csv")
    assert logged[-1]["diverged"] == "1" and len(logged) == len(reports)
    assert all(r["diverged"] == "0" for r in logged[:-1])
    if (out / CHECKPOINT / "state.pt").exists():  # the last checkpoint is a finite one
        weights = torch.load(out / CHECKPOINT / "state.pt", weights_only=False)["method"]
        assert all(torch.isfinite(t).all() for t in _tensors(weights))


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)
