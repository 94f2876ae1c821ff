"""Pretrain a built-in digits teacher and put it in the cache (or, with --ship, in the package).

    python -m dpdmd.pretrain --backbone digits-flow            # ~4 min on 2 cores
    python -m dpdmd.pretrain --backbone digits-eps --ship      # writes dpdmd/backbones/weights/
    python -m dpdmd.pretrain --backbone digits-flow --steps 20 --out /tmp/t.safetensors  # smoke
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path

from safetensors.torch import save_file

from ..data.disk_cache import config_hash
from ..backbones.digits import SHIPPED_WEIGHTS, teacher_weights
from ..backbones.digits_net import DigitsPretrainConfig
from ..backbones.digits_pretrain import pretrain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpdmd.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=["digits-flow", "digits-eps"], required=True)
    parser.add_argument("--steps", type=int, help="optimiser steps (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ship", action="store_true", help="write into dpdmd/backbones/weights/")
    parser.add_argument("--out", type=Path, help="write the weights to this file instead")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")

    config = DigitsPretrainConfig(kind=args.backbone.split("-")[1], seed=args.seed)
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    start = time.time()
    if args.out or args.ship:
        name = f"digits-{config.kind}-teacher-{config_hash(asdict(config))}.safetensors"
        path = args.out or SHIPPED_WEIGHTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(pretrain(config), str(path))
    else:
        path = teacher_weights(config)
    print(f"{args.backbone} teacher ({config.steps} steps) at {path} in {time.time() - start:.0f} s")
    return 0

