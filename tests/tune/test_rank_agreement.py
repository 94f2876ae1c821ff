"""Rank agreement on a recorded table (issue 9, section 5): each rung's ranking against the same
seed's final ranking and against the seed-mean one, checked by hand on 4 configurations."""

from __future__ import annotations

import pandas as pd
import pytest

from tune.simulate.rank_agreement import final_seed_agreement, null_band, signal_from, summarise_rung_tau, table_rung_tau

# 4 configurations a-d, 2 seeds, rungs 10, 20 and the final 30. Final: seed 0 ranks a<b<c<d, seed 1
# a<b<d<c (seed-mean a<b<c<d). Rung 10 reverses both; rung 20 is each seed's final ranking.
FINAL = {0: [1, 2, 3, 4], 1: [1, 2, 3.8, 3.2]}
LAMBDAS = [0.05, 0.2, 0.5, 1.0]


def table() -> pd.DataFrame:
    rows = []
    for seed, final in FINAL.items():
        for lam, value in zip(LAMBDAS, final):
            reversed_ = 5 - LAMBDAS.index(lam)
            for updates, v in ((10, reversed_), (20, value), (30, value)):
                rows.append({"backbone": "digits-flow", "anchor_k": 5, "lambda_div": lam, "seed": seed,
                             "student_updates": updates, "objective": float(v)})
    return pd.DataFrame(rows)


def test_each_rung_against_the_seeds_final_and_the_true_ranking():
    per_seed = table_rung_tau(table(), "objective").set_index(["seed", "rung"])
    assert per_seed.loc[(0, 10), "tau_own"] == pytest.approx(-1.0)
    # seed 1, rung 10 (d c b a) against a b d c: only the pair (c, d) agrees -> (1 - 5) / 6
    assert per_seed.loc[(1, 10), "tau_own"] == pytest.approx(-4 / 6)
    assert per_seed.loc[(1, 20), "tau_own"] == pytest.approx(1.0)
    # the true ranking is a b c d (seed means 1, 2, 3.4, 3.6): seed 1's final swaps one pair
    assert per_seed.loc[(1, 30), "tau_true"] == pytest.approx(4 / 6)
    assert per_seed.loc[(0, 30), "tau_true"] == pytest.approx(1.0)
    assert (per_seed["trials"] == 4).all()


def test_summary_final_agreement_and_where_the_signal_starts():
    per_seed = table_rung_tau(table(), "objective")
    summary = summarise_rung_tau(per_seed).set_index("rung")
    assert summary.loc[10, "own_mean"] == pytest.approx((-1 - 4 / 6) / 2)
    assert (summary.loc[10, "own_min"], summary.loc[10, "own_max"]) == pytest.approx((-1.0, -4 / 6))
    assert summary.loc[10, "null_band_mean"] == pytest.approx(null_band(4) / 2 ** 0.5)
    assert final_seed_agreement(table(), "objective")["digits-flow"] == pytest.approx(4 / 6)
    assert signal_from(summary.reset_index()) == {"digits-flow": 20}


def test_null_band_shrinks_with_more_trials():
    assert null_band(17) == pytest.approx(0.35, abs=0.01)  # the medium table's 17 configurations
    assert null_band(100) < null_band(17)
