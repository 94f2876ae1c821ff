"""The W&B API key is written nowhere (issue 13, section 4): a search with per-trial W&B runs and
a fake key in the environment, then every file the search, Ray and W&B wrote is grepped for it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from tune.cli import search

FAKE_KEY = "dpdmdfake" + "0123456789abcdef" * 2 + "zzzzzzz"  # 48 characters, found nowhere else

SPACE = {
    "name": "secrets",
    "method": "grid",
    "baseline": False,
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"value": 2}, "lambda_div": {"value": 0.5}},
    "train": {"iterations": 8, "batch_size": 2, "teacher_steps": 10, "fake_updates": 1},
    "eval": {"prompts": ["3", "7"], "seeds_per_prompt": 4, "every": 2},
    "scheduler": {"type": "fifo"},
    "wandb": {"enabled": True, "per_trial": True, "project": "dpdmd-secrets-test", "mode": "offline"},
}


def files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                hits.append(str(path))
        except OSError:
            continue  # sockets, vanished files
    return hits


@pytest.mark.slow
def test_wandb_key_is_in_no_file_the_search_ray_or_wandb_wrote(tmp_path, monkeypatch):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))  # short: Ray's socket paths must fit
    try:
        monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
        monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
        monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
        path = tmp_path / "space.yaml"
        path.write_text(yaml.safe_dump(SPACE))
        assert search.main(["--space", str(path), "--storage", str(tmp_path / "runs")]) == 0
        written = [tmp_path, ray_tmp]
        assert any((ray_tmp).rglob("runtime_env*.log")) or any(ray_tmp.rglob("*.log")), "Ray wrote no logs here"
        assert list((tmp_path / "runs" / "secrets").rglob("*.wandb")) or list(tmp_path.rglob("*.wandb")), \
            "no per-trial W&B run was written"
        leaks = [hit for root in written for hit in files_containing(root, FAKE_KEY.encode())]
        assert leaks == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
