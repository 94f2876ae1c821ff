"""Kendall tau between each rung's ranking of the trials and their final ranking, for the
objective J and for the old J (0.5 D/D_T + 0.5 Q/Q_T on the raw columns).

    python bench/rank_correlation.py runs/quickstart/trials.parquet          # one search's trials
    python bench/rank_correlation.py --table bench/results/tabular/medium/table.parquet

With ``--table``: every recorded configuration, per backbone, per training seed (each rung against
the same seed's final ranking, ``own``; and against the mean over seeds, ``true``), summarised
over the seeds (mean, min, max), with the 5% null band for that many configurations, how well two
seeds' final rankings agree, and the first rung whose ranking carries signal. ``--out FILE.md``
also writes the summary as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from tune.simulate.rank_agreement import (final_seed_agreement, rung_kendall_tau, signal_from, summarise_rung_tau,
                                 table_rung_tau, with_legacy_objective)

METRICS = {"objective": "J (new)", "legacy_objective": "old J", "diversity_score": "diversity_score",
           "quality_score": "quality_score"}


def trials_report(path: str) -> None:
    trials = with_legacy_objective(pd.read_parquet(path))
    for metric in ("objective", "legacy_objective"):
        print(f"\n{metric}:")
        print(rung_kendall_tau(trials, metric).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def table_report(path: str, *, diversity_weight: float) -> str:
    """Print the table's rank agreement; return it as Markdown (one table per backbone)."""
    from tune.simulate.table import RecordedTable, TableError, with_scores

    try:
        table = RecordedTable.load(path)
    except TableError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    scored = with_legacy_objective(with_scores(table.frame, diversity_weight=diversity_weight))
    lines = [f"Kendall tau, each rung against the final ranking ({path}; seeds {table.seeds}); "
             "cells: own-seed mean [min, max] / against the seed-mean final", ""]
    for backbone in sorted(scored["backbone"].unique()):
        runs = scored[scored["backbone"] == backbone]
        summaries = {m: summarise_rung_tau(table_rung_tau(runs, m)) for m in METRICS}
        rungs = summaries["objective"]["rung"].tolist()
        first = summaries["objective"].iloc[0]
        lines += [f"**{backbone}**: {first['trials']} configurations; chance reaches |tau| {first['null_band']:.2f} "
                  f"for one seed, {first['null_band_mean']:.2f} for the mean of {first['seeds']} seeds (5%)", "",
                  "| updates | " + " | ".join(METRICS.values()) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for i, rung in enumerate(rungs):
            cells = [_cell(summaries[m].iloc[i]) for m in METRICS]
            lines.append(f"| {rung} | " + " | ".join(cells) + " |")
        lines.append("| two seeds' final rankings | " + " | ".join(
            f"{final_seed_agreement(runs, m)[backbone]:.2f}" for m in METRICS) + " |")
        lines += ["", "signal (seed-mean tau above its band at this rung and every later one) from update: "
                  + ", ".join(f"{METRICS[m]} {signal_from(summaries[m])[backbone]}" for m in METRICS), ""]
    text = "\n".join(lines)
    print(text)
    return text


def _cell(row) -> str:
    return f"{row['own_mean']:.2f} [{row['own_min']:.2f}, {row['own_max']:.2f}] / {row['true_mean']:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", nargs="?", default="runs/quickstart/trials.parquet",
                        help="a search's trials.parquet (default: the quickstart's)")
    parser.add_argument("--table", help="a recorded table (bench/tabular.py) instead of a search's trials")
    parser.add_argument("--diversity-weight", type=float, default=0.5, help="w of J (default 0.5)")
    parser.add_argument("--out", type=Path, help="with --table: also write the summary here (Markdown)")
    args = parser.parse_args(argv)
    if args.table is None:
        trials_report(args.trials)
        return 0
    text = table_report(args.table, diversity_weight=args.diversity_weight)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
