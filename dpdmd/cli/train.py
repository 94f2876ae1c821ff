"""Train one DP-DMD student: the command line of `dpdmd.train` (``python -m dpdmd.train`` runs `main`).

    python -m dpdmd.train --backbone digits-flow --anchor-k 10 --lambda-div 0.05 --seed 0 \\
        --iterations 600 --out runs/k10
    python -m dpdmd.train --config my_run.yaml --out runs/a       # YAML keys = the flags' names
    python -m dpdmd.train --config my_run.yaml --out runs/a --resume

Writes under --out: metrics.csv (one row per evaluation), samples/*.png (rows: prompts,
columns: seeds; teacher.png once), checkpoint/ (resumable; checkpoint.prev/ the one before, the
fallback if the last is damaged), student/ (save_pretrained), config.json. A non-empty --out is
refused unless --resume (continue it) or --overwrite (clear it first).

Exit status: 0 done; 1 the run stopped: it diverged (a NaN or infinite loss, weight or score: its
last row in metrics.csv says why) or an output could not be written (a full disk: the file is
named; every file is written whole or not at all, so --resume continues once there is space);
2 the input was refused before anything was written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .flags import add_config_flags, flag_of, overrides_from_args
from ..config import ConfigError, from_mapping, load_config


def parse_config(args: argparse.Namespace):
    overrides = overrides_from_args(args)
    if args.backbone_option:
        overrides["backbone_options"] = dict(_parse_option(o) for o in args.backbone_option)
    try:
        if args.config:
            return load_config(args.config, overrides)
        return from_mapping(overrides, source="command line")
    except ConfigError as err:
        raise with_flags(err, args) from None


def with_flags(err: ConfigError, args: argparse.Namespace) -> ConfigError:
    """``err`` with each problem of a key the user gave as a flag naming that flag too."""
    given = overrides_from_args(args)

    def named(problem: str) -> str:
        key = problem.partition(": ")[0].split("[")[0]
        section, _, name = key.partition(".")
        flagged = name in given.get("eval", {}) if section == "eval" and name else key in given
        return f"{problem} (flag {flag_of(key)})" if flagged else problem

    return ConfigError([named(p) for p in err.problems], err.source)


def _parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError([f"--backbone-option: expected KEY=VALUE, got {text!r}"])
    import yaml

    return key, yaml.safe_load(value)


RUN_FILES = ("config.json", "metrics.csv", "checkpoint", "checkpoint.prev", "samples", "student",
             "teacher_metrics.json")


def check_out_dir(out: Path, *, resume: bool, overwrite: bool) -> list[str]:
    """--out must be empty or missing, unless --resume (it must hold a checkpoint) or --overwrite
    (it must look like a run directory: --overwrite never clears a folder of something else)."""
    from ..training.checkpoints import CHECKPOINT, PREVIOUS, has_checkpoint

    if resume and overwrite:
        return ["--resume and --overwrite: give one of them"]
    if out.exists() and not out.is_dir():
        return [f"--out: {out} is a file; give a folder"]
    content = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if resume:
        if not any(has_checkpoint(out / name) for name in (CHECKPOINT, CHECKPOINT + PREVIOUS)):
            return [f"--resume: no checkpoint in {out / CHECKPOINT}; run without --resume to start"]
        return []
    if not content:
        return []
    if not overwrite:
        return [f"--out: {out} is not empty ({', '.join(content[:5])}{', ...' if len(content) > 5 else ''}); "
                "continue that run with --resume, clear it with --overwrite, or give another --out"]
    foreign = [name for name in content if name not in RUN_FILES and not name.endswith((".tmp", ".old"))]
    if foreign:
        return [f"--overwrite: {out} holds files a run does not write ({', '.join(foreign[:5])}); "
                "not clearing it: give another --out"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpdmd.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML file of training settings (flags override it)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (empty or new)")
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="clear --out (a run directory) before starting")
    parser.add_argument("--backbone-option", action="append", metavar="KEY=VALUE",
                        help="a backbone setting, e.g. path=/weights/sd35m (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(parser)
    args = parser.parse_args(argv)

    from ..training.build import build_backbone, check
    from ..training.checkpoints import CHECKPOINT, load_checkpoint
    from ..training.loop import train

    try:  # train() refuses what the backbone refuses before it writes or trains anything
        config = parse_config(args)
        try:  # refuse bad input before anything starts
            check(config, build_backbone(config))
        except ConfigError as err:  # named as the config's own problems are: the file or the flags
            raise with_flags(ConfigError(err.problems, str(args.config) if args.config else "command line"),
                             args) from None
        problems = check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
        if problems:
            raise ConfigError(problems)
        resume_from = args.out / CHECKPOINT if args.resume else None
        if resume_from is not None:
            load_checkpoint(resume_from, config)  # damaged or of another config: refused here
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.overwrite and args.out.is_dir():
        shutil.rmtree(args.out)

    try:
        metrics = train(config, out_dir=args.out, resume_from=resume_from, progress=not args.no_progress,
                        keep_previous_checkpoint=True)
    except OSError as err:  # a full or read-only disk: every file already written is whole (atomic writes)
        print(f"error: {err.strerror or err}. What was written before is intact; once there is space, "
              f"continue with --resume (from the last checkpoint in {args.out / CHECKPOINT})", file=sys.stderr)
        return 1
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))
    print(f"outputs in {args.out}")
    if metrics.get("diverged"):
        print(f"error: the run diverged: {metrics.get('diverged_reason')}", file=sys.stderr)
        return 1
    return 0

