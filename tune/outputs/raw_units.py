"""Backbones side by side in raw units, where one evaluator with the same settings scored them.

Teacher-normalised scores compare a student with its own teacher; they say nothing across
backbones. Raw scores (``diversity``, ``quality``: the evaluator's own numbers) do compare across
backbones when the same evaluator, quality metric, options, prompts and seeds scored them: both
digits backbones under the digits evaluator, or two diffusers backbones under the real evaluator
with the same ``eval`` settings. `evaluation_settings` records, per backbone, which evaluator
scored it and a fingerprint of its settings (no paths: ``summary.json``'s ``evaluation``);
`raw_comparison` sets the fronts of each group of backbones with one fingerprint side by side, in
raw units, with each teacher's raw scores (``summary.json``'s ``raw_comparison``).
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["comparable_groups", "evaluation_settings", "raw_comparison"]

TEACHER_UNITS = ("diversity_score", "quality_score", "objective", "below_floor", "training_iteration")

NOTE = ("raw diversity and quality are comparable across these backbones: one evaluator with the same "
        "settings (metric, options, prompts, seeds) scored all of them. Their teacher-normalised scores "
        "(diversity_score, quality_score) are not: each is relative to its own teacher.")


def evaluation_settings(space) -> dict[str, dict]:
    """``{backbone: {"evaluator", "quality_metric", "seeds_per_prompt", "prompts", "fingerprint"}}``
    for each backbone of ``space`` (a `tune.space.SearchSpace`): the evaluator ``eval.evaluator``
    names ("auto": the backbone's own), its prompts (``eval.prompts``, else the backbone's default
    prompts; their number here), and a SHA-256 fingerprint of all of it with the evaluator's
    options, equal exactly where raw scores compare."""
    from dpdmd.backbones import backbone_class

    out = {}
    for backbone in space.backbone_names():
        config = space.train_config({**space.base_point(), "backbone": backbone}).eval
        cls, _ = backbone_class(backbone)
        evaluator = config.evaluator if config.evaluator != "auto" else getattr(cls, "default_evaluator", "digits")
        prompts = list(config.prompts) or list(getattr(cls, "default_prompts", ()))
        settings = {"evaluator": evaluator, "quality_metric": config.quality_metric,
                    "seeds_per_prompt": config.seeds_per_prompt, "prompts": prompts,
                    "evaluator_options": config.evaluator_options}
        blob = json.dumps(settings, sort_keys=True, default=str).encode()
        out[backbone] = {"evaluator": evaluator, "quality_metric": config.quality_metric,
                         "seeds_per_prompt": config.seeds_per_prompt, "prompts": len(prompts),
                         "fingerprint": hashlib.sha256(blob).hexdigest()[:16]}
    return out


def comparable_groups(evaluation: dict[str, dict], backbones) -> list[list[str]]:
    """The groups of two or more of ``backbones`` whose ``evaluation`` fingerprints are equal, each
    sorted, in order of their first backbone; a backbone without a recorded evaluation is in none."""
    by_print: dict[str, list[str]] = {}
    for b in sorted(backbones):
        if b in evaluation and evaluation[b].get("fingerprint"):
            by_print.setdefault(evaluation[b]["fingerprint"], []).append(b)
    return sorted((g for g in by_print.values() if len(g) > 1), key=lambda g: g[0])


def raw_comparison(fronts: dict[str, list[dict]], teacher: dict[str, dict], evaluation: dict[str, dict]) -> dict:
    """``{"A+B": {...}}`` for each group of `comparable_groups`: its ``backbones``, ``evaluator``,
    ``quality_metric``, ``units`` "raw", the ``note`` saying what compares and what does not, each
    backbone's ``teacher`` raw scores and its front in raw units (``fronts``: ``summary.json``'s
    records; kept here: trial, configuration, ``diversity``, ``quality``, ``student_updates``,
    ``checkpoint``); {} when no two backbones share an evaluator."""
    out = {}
    for group in comparable_groups(evaluation, fronts):
        settings = evaluation[group[0]]
        out["+".join(group)] = {
            "backbones": group, "evaluator": settings["evaluator"], "quality_metric": settings["quality_metric"],
            "units": "raw (the evaluator's own diversity and quality)", "note": NOTE,
            "teacher": {b: teacher.get(b) for b in group},
            "fronts": {b: [{k: v for k, v in r.items() if k not in TEACHER_UNITS} for r in fronts[b]] for b in group},
        }
    return out
