"""Can the search's objective be raised by degrading samples? Prints, for each built-in backbone,
the teacher's own samples and degraded copies of them (pixel noise, blur, a lost class, a
collapse) scored by the digits evaluator: raw metrics, the teacher-normalised scores, J, the old
J (0.5 D/D_T + 0.5 Q/Q_T on class probability) and whether the clean set dominates each copy.
The teacher's reference is its samples on the evaluation seeds, as in a search; "teacher, other
seeds" is an independent set of its samples (the next N seeds), the control.

    python bench/objective_check.py [--seeds 8] [--backbones digits-flow digits-eps] [--threads 1]
                                    [--json scores.json]

The table in docs/results/objective-checks.md ("Can J be raised by degrading samples?") is this
script's output. ``--json`` also writes each set's quality_score and J, which
`bench/objective_margins.py` compares across package versions and thread counts (the spread the
tests' thresholds must clear).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/X.py` from the root
from bench.markdown_table import markdown  # noqa: E402
from dpdmd.config import TrainConfig
from dpdmd.evaluation import generate, teacher_sampler
from dpdmd.evaluation import DigitsEvaluator
from dpdmd.evaluation.corruptions import collapse, standard_corruptions
from dpdmd.data.prompt_cache import PromptEmbeddingCache
from dpdmd.training.build import build_backbone
from tune.trial.objective import legacy_objective, objective_metrics


def teacher_grid(backbone_name: str, seeds: int) -> tuple[torch.Tensor, list[str]]:
    """The teacher's samples (10, seeds, 1, 32, 32) on the evaluation protocol's seeds 0..N-1."""
    backbone = build_backbone(TrainConfig(backbone=backbone_name, teacher_steps=30))
    prompts = list(backbone.default_prompts)
    sampler = teacher_sampler(backbone, backbone.load_teacher())
    return generate(backbone, sampler, prompts, seeds, PromptEmbeddingCache(backbone)), prompts


def objective_table(images: torch.Tensor, prompts: list[str], evaluator, *, diversity_weight: float = 0.5,
                    extra: dict | None = None) -> pd.DataFrame:
    """One row per set (clean first): raw metrics, scores against the clean set, J, old J, dominated."""
    sets = {"clean (teacher)": images, **standard_corruptions(images), **(extra or {})}
    raw = {name: evaluator.score(x, prompts) for name, x in sets.items()}
    ref = raw["clean (teacher)"]
    rows = []
    for name, m in raw.items():
        scores = objective_metrics(m["diversity"], m["quality"], teacher_diversity=ref["diversity"],
                                   teacher_quality=ref["quality"], diversity_weight=diversity_weight)
        old = legacy_objective(m["diversity"], m["class_prob"], teacher_diversity=ref["diversity"],
                               teacher_quality=ref["class_prob"])
        rows.append({"set": name, **{k: m[k] for k in ("diversity", "class_prob", "precision", "spectral", "fid", "quality")},
                     **scores, "old J": old})
    table = pd.DataFrame(rows)
    clean = table.iloc[0]
    table["dominated by clean"] = [(clean.diversity_score >= r.diversity_score and clean.quality_score >= r.quality_score
                                    and (clean.diversity_score > r.diversity_score or clean.quality_score > r.quality_score))
                                   for r in table.itertuples()]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds per prompt (the quickstart's evaluation)")
    parser.add_argument("--backbones", nargs="+", default=["digits-flow", "digits-eps"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the tests use 1)")
    parser.add_argument("--json", type=Path, help="also write {backbone: {set: {quality_score, objective, ...}}}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    evaluator = DigitsEvaluator()
    scores = {}
    for name in args.backbones:
        both, prompts = teacher_grid(name, 2 * args.seeds)
        images, other = both[:, :args.seeds], both[:, args.seeds:]
        evaluator.set_teacher_reference(evaluator.teacher_reference_state(images, prompts))
        table = objective_table(images, prompts, evaluator, extra={
            "collapse": collapse(images), "teacher, other seeds": other})
        print(f"\n{name}, {len(prompts)} prompts x {args.seeds} seeds (quality = fidelity = class_prob x precision x spectral)")
        print(markdown(table))
        scores[name] = {row["set"]: {k: float(row[k]) for k in ("diversity_score", "quality_score", "objective")}
                        | {"dominated by clean": bool(row["dominated by clean"])} for _, row in table.iterrows()}
    if args.json:
        args.json.write_text(json.dumps({"versions": package_versions(), "threads": args.threads, "scores": scores},
                                        indent=1))


def package_versions() -> dict[str, str]:
    """The versions of the packages the scores go through (what a margin must survive)."""
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "numpy", "scipy", "scikit-learn", "pandas")}


if __name__ == "__main__":
    main()
