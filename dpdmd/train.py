"""Train one DP-DMD student.

    python -m dpdmd.train --backbone digits-flow --anchor-k 10 --lambda-div 0.05 --seed 0 \\
        --iterations 600 --out runs/k10
    python -m dpdmd.train --config my_run.yaml --out runs/a       # YAML keys = the flags' names
    python -m dpdmd.train --config my_run.yaml --out runs/a --resume

Writes under --out: metrics.csv (one row per evaluation), samples/*.png (rows: prompts,
columns: seeds; teacher.png once), checkpoint/ (resumable), student/ (save_pretrained), config.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_args import add_config_flags, overrides_from_args
from .config import ConfigError, from_mapping, load_config


def parse_config(args: argparse.Namespace):
    overrides = overrides_from_args(args)
    if args.backbone_option:
        overrides["backbone_options"] = dict(_parse_option(o) for o in args.backbone_option)
    if args.config:
        return load_config(args.config, overrides)
    return from_mapping(overrides, source="command line")


def _parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError([f"--backbone-option: expected KEY=VALUE, got {text!r}"])
    import yaml

    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpdmd.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML file of training settings (flags override it)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    parser.add_argument("--backbone-option", action="append", metavar="KEY=VALUE",
                        help="a backbone setting, e.g. path=/weights/sd35m (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(parser)
    args = parser.parse_args(argv)

    from .trainer import CHECKPOINT, train

    try:  # train() refuses what the backbone refuses before it writes or trains anything
        config = parse_config(args)
        resume_from = None
        if args.resume:
            resume_from = args.out / CHECKPOINT
            if not (resume_from / "state.pt").exists():
                raise ConfigError([f"--resume: no checkpoint in {resume_from}; run without --resume to start"])
        metrics = train(config, out_dir=args.out, resume_from=resume_from, progress=not args.no_progress)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
