"""The small digits search the fault tests start (a few seconds a trial on one CPU), and how a
test writes a variant of it to a space file."""

from __future__ import annotations

from pathlib import Path

import yaml

SMALL_SEARCH = {
    "method": "grid",
    "seed": 0,
    "max_concurrent": 1,
    "baseline": False,
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "train": {"iterations": 12, "batch_size": 2, "teacher_steps": 6, "fake_updates": 1},
    "eval": {"prompts": ["3", "7"], "seeds_per_prompt": 4, "every": 2},
    "scheduler": {"type": "fifo"},
    "wandb": {"enabled": False},
}


def write_space(folder: Path, space: dict, **changes) -> Path:
    """``space`` with the top-level keys ``changes`` replaced, as ``folder/space.yaml``."""
    path = Path(folder) / "space.yaml"
    path.write_text(yaml.safe_dump({**space, **changes}))
    return path
