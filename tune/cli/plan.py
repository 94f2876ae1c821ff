"""The dry run (``python -m tune.search --dry-run``): the plan of a search, printed before anything
runs: its trials, concurrency and resources, GPU memory per trial, the scheduler, the front's
rules, and what the shared anchor cache will compute; and `max_updates`, the scheduler's budget
(Ray is not imported here: the dry run starts none)."""

from __future__ import annotations

import argparse

from ..space.schema import SearchSpace
from ..space.trials import baseline_trials, grid_size, planned_trials


def describe_plan(space: SearchSpace, args: argparse.Namespace) -> str:
    from dpdmd.parallel.memory import fit_line

    lines = [f"search space: {space.path} (name {args.name or space.name})", f"method: {space.method}, seed {space.seed}"]
    baselines = baseline_trials(space)
    if space.method == "grid":
        points = planned_trials(space)
        lines.append(f"trials: {len(points)} ({grid_size(space)} grid points"
                     f"{f' + {len(baselines)} vanilla-DMD baseline(s)' if baselines else ''})")
        lines.extend(f"  {i:3d}  " + "  ".join(f"{k}={v}" for k, v in p.items()) for i, p in enumerate(points))
    else:
        lines.append(f"trials: {args.num_samples or space.num_samples} sampled + {len(baselines)} vanilla-DMD baseline(s)")
        for name, p in space.parameters.items():
            lines.append(f"  {name}: " + (f"{p.distribution}[{p.min}, {p.max}]" if p.distribution else
                                          f"one of {p.values}" if p.values else f"= {p.value}"))
    lines.append(f"concurrency: {space.max_concurrent or 'as resources allow'}")
    lines.append("resources per trial: " + "; ".join(f"{b}: {s.resources}" for b, s in space.backbones.items()))
    for b, spec in space.backbones.items():  # GPU memory per trial against its share (dpdmd.parallel.memory)
        line = fit_line(b, spec.options, {**space.train, **spec.train}, spec.resources)
        lines += [line] if line else []
    s, max_t = space.scheduler, max_updates(space)
    on = {"asha": f" on the combined objective (w = {space.objective.diversity_weight})",
          "moasha": " on (diversity_score, quality_score) by non-dominated sorting, ties by epsilon-net"}
    lines.append(f"scheduler: {s.type}" + (f"{on[s.type]}, time = student updates, max_t {max_t}, grace "
                                           f"{s.grace_period}, reduction {s.reduction_factor}, brackets {s.brackets}"
                                           if s.type in on else " (no early stopping)"))
    o = space.objective
    lines.append(f"fronts: one per backbone, over each trial's kept student (its best by J from "
                 f"{o.min_student_updates} student updates on, quality_score >= {o.min_quality:g})")
    lines.extend(_describe_anchor_cache(space))
    from ..run.estimate import estimate_lines  # what the search will cost: storage, GPU-hours, time

    lines.extend(estimate_lines(space, max_t=max_t, num_samples=args.num_samples))
    return "\n".join(lines)


def _describe_anchor_cache(space: SearchSpace) -> list[str]:
    """Per backbone: the teacher evaluations one pass over every K costs, and for the search."""
    from dpdmd.anchors import teacher_calls_for
    from dpdmd.training.build import build_backbone

    ks, lines = space.anchor_ks(), []
    for backbone in space.backbone_names():
        cfg = space.train_config({**space.base_point(), "backbone": backbone})
        b = build_backbone(cfg.replace(device="cpu")) if backbone.startswith("digits") else None
        calls = teacher_calls_for(ks, b.schedule) if b else max(ks)
        updates = space.max_student_updates(cfg)
        lines.append(f"anchor cache ({backbone}): K in {ks} from one teacher pass of {calls} guided steps "
                     f"per student iteration; at most {updates} iterations x {calls} = {updates * calls} teacher "
                     f"evaluations for the whole search")
    return lines


def max_updates(space: SearchSpace) -> int:
    """The scheduler's max_t: as set, else the student updates of the configured iterations."""
    return space.scheduler.max_t or space.max_student_updates(space.train_config(space.base_point()))
