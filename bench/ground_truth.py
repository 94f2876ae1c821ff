"""The ground truth of a recorded table: each backbone's true front, its hypervolume, the
seed-to-seed noise, and the ceiling a search that shows one point per trial can reach.

    python bench/ground_truth.py --table bench/results/tabular/full/table.parquet \
        --out bench/results/ground_truth_full.md

Per backbone (scores as `tune.search` scores them: `tune.simulate.table.with_scores`, J with weight
``--diversity-weight``, the front above ``--min-quality``):

- **true front**: `tune.simulate.table.ground_truth`: every (configuration, budget) as its mean over the
  table's training seeds, non-dominated; each point with its seed standard deviation;
- **seed noise**: the seed standard deviation of diversity_score, quality_score and J over every
  (configuration, budget) point (median [IQR]), and the spread of the final J across
  configurations (the signal a ranking has to find) beside it;
- **one seed's own front**: the hypervolume of the front of one training seed's curves alone, as a
  fraction of the seed-mean front's (above 1: the best of noisy points is lucky, the optimizer's
  curse; what a search judged by its own seed's values would believe);
- **one point per configuration**: the seed-mean hypervolume when each configuration is shown by
  one budget only, as a fraction of the true front's: at its true best-J budget (what a search
  that trained every trial to the end and kept each one's best checkpoint by a noise-free J would
  show) and at its final budget. A search shows one point per trial, so the true front, which can
  hold several budgets of one configuration, is out of its reach; these two are what it can aim at.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.markdown_table import markdown  # noqa: E402
from tune.space import ObjectiveSpec  # noqa: E402
from tune.simulate.table import RecordedTable, TableError, ground_truth, hypervolume, with_scores  # noqa: E402

FRONT_COLUMNS = ["anchor_k", "lambda_div", "student_updates", "diversity_score", "diversity_score_std",
                 "quality_score", "quality_score_std", "objective", "objective_std"]


def _median_iqr(values: pd.Series) -> str:
    return f"{values.median():.3f} [{values.quantile(0.25):.3f}, {values.quantile(0.75):.3f}]"


def backbone_report(table: RecordedTable, backbone: str, truth: dict, *, weight: float, min_quality: float) -> list[str]:
    """Markdown lines for one backbone's truth (see the module docstring)."""
    points, hv = truth["points"], truth["hypervolume"]
    lines = [f"**{backbone}**: {len(points)} (configuration, budget) points, {int(points['seeds'].min())} seeds each; "
             f"true front hypervolume **{hv:.4f}**, best J **{truth['best_objective']:.4f}**", "",
             markdown(truth["front"][FRONT_COLUMNS].round(4), float_format="{}"), ""]
    noise = " · ".join(f"{c} {_median_iqr(points[c + '_std'])}" for c in ("diversity_score", "quality_score", "objective"))
    final = truth["final"]
    lines += [f"seed std over every point, median [IQR]: {noise}; final J across configurations: "
              f"{final['objective'].min():.3f} to {final['objective'].max():.3f} (std {final['objective'].std():.3f}) "
              f"against a median seed std of {final['objective_std'].median():.3f} at the final budget", ""]
    scored = with_scores(table.frame[table.frame["backbone"] == backbone], diversity_weight=weight)
    own = {seed: hypervolume(rows, min_quality=min_quality) / hv for seed, rows in scored.groupby("seed")}
    lines += ["one seed's own front, hypervolume / the seed-mean front's: "
              + ", ".join(f"seed {s} {v:.3f}" for s, v in own.items()), ""]
    best_budget = points.loc[points.groupby(["anchor_k", "lambda_div"])["objective"].idxmax()]
    lines += [f"one point per configuration: at its true best-J budget {hypervolume(best_budget, min_quality=min_quality) / hv:.3f}, "
              f"at its final budget {hypervolume(final, min_quality=min_quality) / hv:.3f}", ""]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, required=True, help="table.parquet written by bench/tabular.py")
    p.add_argument("--diversity-weight", type=float, default=0.5)
    p.add_argument("--min-quality", type=float, default=None, help="default: the space schema's objective.min_quality")
    p.add_argument("--out", type=Path, help="also write the report here (Markdown)")
    args = p.parse_args(argv)
    min_quality = ObjectiveSpec().min_quality if args.min_quality is None else args.min_quality
    try:
        table = RecordedTable.load(args.table)
    except TableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    truth = ground_truth(table, diversity_weight=args.diversity_weight, min_quality=min_quality)
    lines = [f"Ground truth of {args.table} (seeds {table.seeds}; J weight {args.diversity_weight}, "
             f"min_quality {min_quality})", ""]
    for backbone, one in truth.items():
        lines += backbone_report(table, backbone, one, weight=args.diversity_weight, min_quality=min_quality)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
