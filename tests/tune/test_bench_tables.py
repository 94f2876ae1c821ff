"""The table-driven benchmarks run from a table path (bench/search_efficiency.py,
bench/rank_correlation.py --table), on a small table built in the test."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.bench_scripts import load_bench
from tests.tune.tabular_fake import fake_table


def test_front_shown_at_a_budget_is_not_the_best_moment():
    se = load_bench("search_efficiency")
    traj = pd.DataFrame({"budget": [0.1, 0.2, 0.4, 1.0], "hv_fraction": [0.5, 0.9, 0.7, 0.8]})
    assert se.hv_at(traj, 0.5) == 0.9  # the best moment so far
    assert se.hv_now(traj, 0.5) == 0.7  # what a user stopping at 0.5 is shown
    assert se.hv_now(traj, 0.05) == 0.0 and se.hv_now(traj, 1.0) == 0.8


def test_search_efficiency_runs_from_a_table_path(tmp_path):
    se = load_bench("search_efficiency")
    table = tmp_path / "table.parquet"
    fake_table().to_parquet(table)
    out = tmp_path / "eff"
    assert se.main(["--table", str(table), "--seeds", "2", "--workers", "1", "--budgets", "0.5", "1",
                    "--strategies", "grid + FIFO (full grid)", "grid + MO-ASHA", "random + FIFO",
                    "--out", str(out)]) == 0
    rows = pd.read_csv(out.with_suffix(".csv"))
    assert set(rows["strategy"]) == {"grid + FIFO (full grid)", "grid + MO-ASHA", "random + FIFO"}
    full = rows[rows["strategy"] == "grid + FIFO (full grid)"]
    assert (full["now@1"] == full["final_hv_fraction"]).all()  # at its whole compute it shows its final front
    text = out.with_suffix(".md").read_text()
    assert "grid + MO-ASHA (the default) against each strategy" in text and "| 1 | random + FIFO | 0.5 |" in text
    assert out.with_suffix(".png").stat().st_size > 0


def test_rank_correlation_runs_from_a_table_path(tmp_path, capsys):
    rc = load_bench("rank_correlation")
    table = tmp_path / "table.parquet"
    fake_table().to_parquet(table)
    assert rc.main(["--table", str(table), "--out", str(tmp_path / "rank.md")]) == 0
    text = (tmp_path / "rank.md").read_text()
    assert "**digits-flow**: 5 configurations" in text and "| 2 |" in text and "two seeds' final rankings" in text
    with pytest.raises(SystemExit) as exit_:
        rc.main(["--table", str(tmp_path / "none.parquet")])
    assert exit_.value.code == 2 and "none.parquet: cannot read the table" in capsys.readouterr().err


def test_ground_truth_runs_from_a_table_path(tmp_path, capsys):
    gt = load_bench("ground_truth")
    frame = fake_table()
    table = tmp_path / "table.parquet"
    frame.to_parquet(table)
    assert gt.main(["--table", str(table), "--out", str(tmp_path / "truth.md")]) == 0
    text = (tmp_path / "truth.md").read_text()
    # 5 configurations (lambda 0 once) x 10 budgets, each the mean of the 2 seeds
    assert "**digits-flow**: 50 (configuration, budget) points, 2 seeds each" in text
    assert "seed 0 " in text and "seed 1000 " in text and "one point per configuration" in text
    # the printed best J is the table's best seed-mean J
    from tune.simulate.table import with_scores

    scored = with_scores(frame, diversity_weight=0.5)
    best = scored.groupby(["anchor_k", "lambda_div", "student_updates"])["objective"].mean().max()
    assert f"best J **{best:.4f}**" in text
    assert gt.main(["--table", str(tmp_path / "none.parquet")]) == 2
    assert "none.parquet: cannot read the table" in capsys.readouterr().err
