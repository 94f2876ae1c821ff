"""Score a trained student or the teacher.

    python -m dpdmd.evaluate --student exports/quickstart      # an exported student (tune.export)
    python -m dpdmd.evaluate --student runs/quickstart/TRIAL/checkpoint_000002   # a search's kept one
    python -m dpdmd.evaluate --student exports/k20 --eval-config other_evaluators.yaml
    python -m dpdmd.evaluate --run runs/k10                    # a dpdmd.train run's last checkpoint
    python -m dpdmd.evaluate --teacher --backbone digits-flow
    python -m dpdmd.evaluate --run runs/k10 --eval-seeds-per-prompt 16 --grid runs/k10/eval.png
    python -m dpdmd.evaluate --protocol reference STUDENT_OR_RUN     # the reference's final protocol

A student is scored with the evaluator of the run or search it came from (its manifest's
``config.eval``), or with another evaluator set: ``--eval-config FILE`` holds an ``eval:`` mapping
(the keys of `dpdmd.EvalConfig`: evaluator, quality_metric, evaluator_options, prompts,
seeds_per_prompt) that replaces it; the ``--eval-*`` flags override single keys. ``--weights DIR``
names the teacher's diffusers folder on this machine when the student was trained elsewhere.
Prints the metrics as JSON; ``--grid`` also writes the samples as a PNG (rows: prompts, columns: seeds).
Exit status: 0 scored; 2 refused (a path, a key or a value, named).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..config import ConfigError, from_mapping


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--protocol" or a.startswith("--protocol=") for a in argv):  # the final protocol over students
        from .evaluate_protocol import main as protocol_main

        return protocol_main(argv)
    parser = argparse.ArgumentParser(prog="python -m dpdmd.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--student", type=Path,
                       help="a saved student: an exported folder, a search's kept checkpoint, a dpdmd.train run")
    which.add_argument("--run", type=Path, help="a run directory written by `python -m dpdmd.train`")
    which.add_argument("--teacher", action="store_true", help="score the backbone's teacher")
    parser.add_argument("--backbone", default="digits-flow", help="with --teacher: the backbone")
    parser.add_argument("--teacher-steps", type=int, help="with --teacher: its sampling steps")
    parser.add_argument("--cfg-scale", type=float, help="with --teacher: its guidance weight")
    parser.add_argument("--eval-prompts", nargs="+", metavar="PROMPT")
    parser.add_argument("--eval-seeds-per-prompt", type=int)
    parser.add_argument("--eval-quality-metric")
    parser.add_argument("--grid", type=Path, help="also write the samples as this PNG")
    parser.add_argument("--eval-config", type=Path, metavar="FILE.yaml",
                        help="with --student: an `eval:` mapping that replaces the student's evaluation settings")
    parser.add_argument("--weights", type=Path, help="with --student: the teacher's diffusers folder on this machine")
    parser.add_argument("--device", help="with --student: where to run it (default: the run's setting)")
    args = parser.parse_args(argv)
    if args.student is not None:
        return score_student(args)

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



def _eval_overrides(args: argparse.Namespace) -> dict:
    """The evaluation settings the command line gives: ``--eval-config``'s ``eval:`` mapping, then
    the single ``--eval-*`` flags."""
    from ..config import load_yaml

    data: dict = {}
    if args.eval_config is not None:
        loaded = load_yaml(args.eval_config)
        unknown = sorted(set(loaded) - {"eval"})
        if unknown or not isinstance(loaded.get("eval", {}), dict):
            raise ConfigError([f"expected one top-level key `eval:` holding EvalConfig keys, got {unknown or loaded}"],
                              str(args.eval_config))
        data.update(loaded.get("eval", {}))
    for key in ("prompts", "seeds_per_prompt", "quality_metric"):
        if getattr(args, f"eval_{key}") is not None:
            data[key] = getattr(args, f"eval_{key}")
    return data


def score_student(args: argparse.Namespace) -> int:
    """``--student``: a saved student scored with its run's evaluator or the one given."""
    from ..data.prompt_cache import PromptEmbeddingCache
    from ..evaluation import eval_prompts, generate, make_evaluator, save_grid, score, student_sampler, teacher_reference
    from ..student import load_student
    from ..training.build import check

    try:
        overrides = _eval_overrides(args)
        student = load_student(args.student, device=args.device, weights=str(args.weights) if args.weights else None)
        data = student.config.to_dict()
        data["eval"] = {**data["eval"], **overrides}
        config = from_mapping(data, source=str(args.eval_config or args.student))
        check(config, student.backbone)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    backbone = student.backbone
    embed = PromptEmbeddingCache(backbone)
    prompts = eval_prompts(config, backbone)
    images = generate(backbone, student_sampler(backbone, student.network), prompts, config.eval.seeds_per_prompt,
                      embed)
    evaluator = make_evaluator(config.eval, backbone)
    # the teacher's scores on the same set (cached on disk): the student's read in teacher units, and
    # the reference the real evaluator reads samples against
    teacher = backbone.load_teacher().to(backbone.device).requires_grad_(False).eval()
    reference, _ = teacher_reference(config, backbone, teacher, embed, evaluator)
    metrics = score(evaluator, images, prompts)
    if args.grid:
        save_grid(images, args.grid)
    manifest = student.manifest
    out = {"scored": f"student of {manifest['backbone']} at {manifest.get('student_updates', '?')} student updates "
                     f"({student.folder})", **{k: round(v, 5) for k, v in metrics.items()}}
    if reference.get("diversity") and reference.get("quality"):
        out["teacher"] = {k: round(v, 5) for k, v in reference.items() if isinstance(v, float)}
        out["diversity_ratio"] = round(metrics["diversity"] / reference["diversity"], 5)
        out["quality_ratio"] = round(metrics["quality"] / reference["quality"], 5)
    print(json.dumps(out, indent=1))
    return 0
