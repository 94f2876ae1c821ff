"""A search hands over students: each trial keeps its new bests' students (`tune.trial.saves`), Ray's
own API names the one the search recommends, `python -m tune.export` writes it with a model card
whose snippet samples it as written, and the exported student gives the images of its report.
On the built-in digits backbone and, through diffusers' own pipeline, on a tiny SD3 pipeline
trained with LoRA."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from dpdmd.evaluation import save_grid
from dpdmd.student import MANIFEST, load_student
from tune.cli import search
from tune.cli.export import main as export

ROOT = Path(__file__).resolve().parents[2]
DIGITS = {
    "name": "handover", "method": "grid", "seed": 0, "max_concurrent": 2,
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"values": [5]}, "lambda_div": {"values": [0.05, 0.5]}},
    "train": {"iterations": 36, "batch_size": 4, "teacher_steps": 10},
    "eval": {"prompts": ["3", "7"], "seeds_per_prompt": 4, "every": 2},
    "scheduler": {"type": "fifo"},
    "objective": {"min_quality": 0.0},  # 6 student updates on 4 seeds: no floor here (test_objective.py has it)
    "checkpoint": {"state_every_minutes": 0},  # the resumable state at every report
    "wandb": {"enabled": False},
}


def run_search(tmp_path, space: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    assert search.main(["--space", str(path), "--storage", str(tmp_path / "runs")]) == 0
    return tmp_path / "runs" / space["name"]


@pytest.fixture(scope="module")
def digits_search(tmp_path_factory):
    return run_search(tmp_path_factory.mktemp("digits"), DIGITS)


def snippet(card: Path) -> str:
    return re.search(r"```python\n(.*?)```", card.read_text(), re.S).group(1)


def test_each_trial_keeps_its_rising_bests_and_its_resumable_state(digits_search):
    trials = pd.read_parquet(digits_search / "trials.parquet")
    for trial_id, reports in trials.groupby("trial_id"):
        reports = reports.sort_values("student_updates")
        saved = reports[reports["checkpoint_dir_name"].notna()]
        assert not saved.empty, trial_id
        # a checkpoint only at a new best: the saved reports' shown J never falls
        assert (np.diff(saved["shown_objective"].to_numpy()) >= 0).all(), trial_id
        best = reports["shown_objective"].max()
        assert saved["shown_objective"].iloc[-1] == best
        folder = Path(saved["trial_path"].iloc[-1])
        kept = sorted(p.name for p in folder.glob("checkpoint_*"))
        assert kept == [saved["checkpoint_dir_name"].iloc[-1]]  # Ray keeps the best, which is the latest
        assert (folder / kept[0] / "student" / MANIFEST).is_file()
        assert not (folder / kept[0] / "state.pt").exists()  # the student alone, not the training state
        pointer = json.loads((folder / "resume" / "latest.json").read_text())
        assert pointer["iteration"] == DIGITS["train"]["iterations"]
        assert (folder / "resume" / pointer["folder"] / "state.pt").is_file()


def test_rays_own_best_result_is_the_recommended_student(digits_search):
    from ray.tune import ExperimentAnalysis, ResultGrid

    summary = json.loads((digits_search / "summary.json").read_text())
    recommended = summary["recommended"]["digits-flow"]
    grid = ResultGrid(ExperimentAnalysis(str(digits_search)))
    for metric in ("shown_objective", "shown_objective/digits-flow"):
        best = grid.get_best_result(metric, "max", scope="all")
        assert best.metrics["trial_id"] == recommended["trial_id"]
        assert Path(best.get_best_checkpoint(metric, "max").path) == Path(recommended["checkpoint"])
        assert Path(best.checkpoint.path) == Path(recommended["checkpoint"])  # its latest is its best


def test_exported_student_samples_its_reports_images_and_its_card_runs(digits_search, tmp_path):
    out = tmp_path / "export"
    assert export([str(digits_search), "--recommended", "--out", str(out)]) == 0
    summary = json.loads((digits_search / "summary.json").read_text())
    recommended = summary["recommended"]["digits-flow"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["student_updates"] == recommended["student_updates"]
    assert manifest["scores"]["objective"] == pytest.approx(recommended["objective"])
    card = (out / "README.md").read_text()
    assert recommended["trial_id"] in card and "arXiv:2602.03139" in card and "![student](samples.png)" in card
    # the exported student draws the images of the report it is: the kept grid, pixel for pixel
    student = load_student(out)
    images = student.sample(DIGITS["eval"]["prompts"], DIGITS["eval"]["seeds_per_prompt"])
    save_grid(images, tmp_path / "again.png")
    again = np.asarray(Image.open(tmp_path / "again.png")).astype(int)
    kept = np.asarray(Image.open(out / "samples.png")).astype(int)
    # the trial sampled on a Ray worker (one thread), this test on the test's threads: float sums
    # in another order may move a pixel by a grey level when it rounds to 8 bits. Another
    # checkpoint's student differs by tens of levels.
    assert again.shape == kept.shape and np.abs(again - kept).max() <= 2 and (again != kept).mean() < 0.01
    # the model card's snippet, run from the folder as written
    done = subprocess.run([sys.executable, "-c", snippet(out / "README.md")], cwd=out, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "sample.png").stat().st_size > 0


def test_export_refuses_before_writing(digits_search, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export([str(digits_search), "--recommended", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert export([str(digits_search), "--trial", "nosuchtrial", "--out", str(tmp_path / "x")]) == 2
    assert "no trial 'nosuchtrial'" in capsys.readouterr().err
    assert export([str(digits_search), "--front", "--backbone", "sdxl", "--out", str(tmp_path / "y")]) == 2
    assert "no front for 'sdxl'" in capsys.readouterr().err
    assert export([str(tmp_path / "nowhere"), "--recommended", "--out", str(tmp_path / "z")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_front_export_writes_every_member_and_an_index(digits_search, tmp_path):
    out = tmp_path / "front"
    assert export([str(digits_search), "--front", "--out", str(out)]) == 0
    summary = json.loads((digits_search / "summary.json").read_text())
    members = summary["fronts"]["digits-flow"]
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(folders) == len(members) and (out / "front.md").is_file()
    assert all((f / "README.md").is_file() and (f / MANIFEST).is_file() for f in folders)


# --- a tiny SD3 pipeline, LoRA: exported, then loaded by diffusers' own pipeline ---------------------

@pytest.fixture(scope="module")
def sd3_search(tmp_path_factory):
    from tests.dpdmd import tiny_encoders
    from tests.dpdmd.tiny_pipelines import make_tiny_sd3

    tmp = tmp_path_factory.mktemp("sd3")
    pipeline = make_tiny_sd3(tmp / "sd3")
    clip = str(tiny_encoders.save_tiny_clip(tmp / "clip", agreeing=True))  # a positive teacher quality
    space = {
        "name": "sd3-lora", "method": "grid", "seed": 0, "baseline": False,
        "backbones": {"sd35m": {"resources": {"cpu": 1},
                                "options": {"path": str(pipeline), "resolution": 32, "weights_dtype": "fp32",
                                            "max_sequence_length": 16, "train_mode": "lora", "lora_rank": 4}}},
        "parameters": {"anchor_k": {"value": 2}, "lambda_div": {"value": 0.05}},
        "train": {"iterations": 12, "batch_size": 2, "teacher_steps": 6, "prompts": ["a cat", "a red car"]},
        "eval": {"prompts": ["a cat"], "seeds_per_prompt": 3, "every": 1, "evaluator": "real",
                 "evaluator_options": {"diversity_encoders": {"dinov2": str(tiny_encoders.save_tiny_dinov2(tmp / "dino"))},
                                       "quality_models": {"clip_score": clip}, "precision_k": 1}},
        "scheduler": {"type": "fifo"}, "objective": {"min_quality": 0.0}, "wandb": {"enabled": False},
    }
    return run_search(tmp, space), pipeline


def test_exported_lora_student_samples_the_same_in_the_diffusers_pipeline(sd3_search, tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    run, pipeline = sd3_search
    out = tmp_path / "export"
    assert export([str(run), "--recommended", "--out", str(out)]) == 0
    assert (out / "pytorch_lora_weights.safetensors").is_file() and not (out / "transformer").exists()
    ours = load_student(out).sample(["a cat"], 3)[0]
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline, scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(
        out, subfolder="scheduler"))
    pipe.load_lora_weights(out)
    pipe.set_progress_bar_config(disable=True)
    theirs = torch.stack([pipe("a cat", height=32, width=32, num_inference_steps=4, guidance_scale=1.0,
                               max_sequence_length=16, output_type="pt",
                               generator=torch.Generator().manual_seed(seed)).images[0] for seed in range(3)])
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    done = subprocess.run([sys.executable, "-c", snippet(out / "README.md")], cwd=out, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(out / "sample.png").size == (32, 32)
