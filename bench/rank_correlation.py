"""Kendall tau between each rung's ranking of the trials and their final ranking, for the
objective J and for the old J (0.5 D/D_T + 0.5 Q/Q_T on the raw columns).

    python bench/rank_correlation.py runs/quickstart/trials.parquet
"""

from __future__ import annotations

import sys

import pandas as pd

from tune.rank_agreement import rung_kendall_tau, with_legacy_objective


def main(path: str) -> None:
    trials = with_legacy_objective(pd.read_parquet(path))
    for metric in ("objective", "legacy_objective"):
        print(f"\n{metric}:")
        print(rung_kendall_tau(trials, metric).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart/trials.parquet")
