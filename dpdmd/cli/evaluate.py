"""Score a trained student (from a run directory) or the teacher.

    python -m dpdmd.evaluate --run runs/k10                 # the run's last checkpoint
    python -m dpdmd.evaluate --teacher --backbone digits-flow
    python -m dpdmd.evaluate --run runs/k10 --eval-seeds-per-prompt 16 --grid runs/k10/eval.png

Prints the metrics as JSON; ``--grid`` also writes the samples as a PNG (rows: prompts, columns: seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..config import ConfigError, from_mapping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpdmd.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="a run directory written by `python -m dpdmd.train`")
    which.add_argument("--teacher", action="store_true", help="score the backbone's teacher")
    parser.add_argument("--backbone", default="digits-flow", help="with --teacher: the backbone")
    parser.add_argument("--teacher-steps", type=int, help="with --teacher: its sampling steps")
    parser.add_argument("--cfg-scale", type=float, help="with --teacher: its guidance weight")
    parser.add_argument("--eval-prompts", nargs="+", metavar="PROMPT")
    parser.add_argument("--eval-seeds-per-prompt", type=int)
    parser.add_argument("--eval-quality-metric")
    parser.add_argument("--grid", type=Path, help="also write the samples as this PNG")
    args = parser.parse_args(argv)

    from ..evaluation import eval_prompts, generate, make_evaluator, save_grid, score, teacher_reference, teacher_sampler
    from ..data.prompt_cache import PromptEmbeddingCache
    from ..training.build import build_backbone, build_method, check
    from ..training.checkpoints import CHECKPOINT

    try:
        if args.run:
            state_path = args.run / CHECKPOINT / "state.pt"
            if not state_path.exists():
                raise ConfigError([f"no checkpoint at {state_path}: is this a `dpdmd.train --out` directory?"])
            state = torch.load(state_path, map_location="cpu", weights_only=False)
            data = state["config"]
        else:
            data = {"backbone": args.backbone}
            for key in ("teacher_steps", "cfg_scale"):
                if getattr(args, key) is not None:
                    data[key] = getattr(args, key)
        data = dict(data, eval=dict(data.get("eval", {})))
        for key in ("prompts", "seeds_per_prompt", "quality_metric"):
            if getattr(args, f"eval_{key}") is not None:
                data["eval"][key] = getattr(args, f"eval_{key}")
        config = from_mapping(data, source=str(args.run) if args.run else "command line")
        backbone = build_backbone(config)
        check(config, backbone)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    method = build_method(config, backbone)
    embed = PromptEmbeddingCache(backbone)  # the student, the teacher and its reference share it
    if args.run:
        method.load_state_dict(state["method"])
        sampler, who = method.sample, f"student at iteration {state['iteration']}"
    else:
        sampler, who = teacher_sampler(backbone, method.teacher, embed), f"teacher ({config.teacher_steps} steps, CFG {backbone.cfg_scale})"
    prompts = eval_prompts(config, backbone)
    images = generate(backbone, sampler, prompts, config.eval.seeds_per_prompt, embed)
    evaluator = make_evaluator(config.eval, backbone)
    if evaluator.uses_teacher_reference:  # the real evaluator reads samples against the teacher's (cached)
        teacher_reference(config, backbone, method.teacher, embed, evaluator)
    metrics = score(evaluator, images, prompts)
    if args.grid:
        save_grid(images, args.grid)
    print(json.dumps({"scored": who, **{k: round(v, 5) for k, v in metrics.items()}}, indent=1))
    return 0

