"""Each trial is shown by its kept student, its best report by J at or above the floor (the
checkpoint Ray keeps), not its last: on the fronts, in summary.json, in the simulator and in the
efficiency bench. (The kept rule on its own, ties, NaN and repeated reports: test_kept.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.bench_scripts import load_bench
from tests.tune.tabular_fake import fake_table
from tune.outputs import front as fr
from tune.outputs import results as res
from tune.outputs.front import backbone_fronts
from tune.outputs.kept import kept_reports, new_bests, unique_reports

TEACHER = {"teacher_diversity": 0.05, "teacher_quality": 0.5, "backbone": "digits-eps"}


def reports(rows: list[dict], *, min_quality: float = 0.9, min_student_updates: int = 0) -> pd.DataFrame:
    """Reports as ``trials_frame`` gives them: scores filled, a trial folder and Ray's
    ``checkpoint_dir_name`` where the trainable attaches a checkpoint (a new best by J among the
    eligible reports), None elsewhere."""
    frame = pd.DataFrame([{**TEACHER, "trial_path": f"/runs/s/{r['trial_id']}", **r} for r in rows])
    frame = res.with_scores(frame, diversity_weight=0.5)
    ordered = unique_reports(frame)
    carries = new_bests(ordered, min_quality=min_quality, min_student_updates=min_student_updates)
    ordered["checkpoint_dir_name"] = pd.Series([f"checkpoint_{i:06d}" if c else None for i, c in enumerate(carries)],
                                               dtype=object)
    return ordered


def test_a_trial_that_peaks_then_collapses_is_on_the_front_at_its_peak():
    # "collapse": passes the teacher's diversity at high fidelity at 80 updates, then collapses;
    # "steady": a constant student that dominates the collapsed end state, not the peak.
    trials = reports([
        {"trial_id": "collapse", "student_updates": 40, "training_iteration": 1, "diversity": 0.09, "quality": 0.4},
        {"trial_id": "collapse", "student_updates": 80, "training_iteration": 2, "diversity": 0.049, "quality": 0.56},
        {"trial_id": "collapse", "student_updates": 120, "training_iteration": 3, "diversity": 0.02, "quality": 0.6},
        {"trial_id": "steady", "student_updates": 120, "training_iteration": 3, "diversity": 0.035, "quality": 0.62},
    ])
    last = fr.pareto_front(res.final_results(trials, min_quality=0.9))
    assert last["trial_id"].tolist() == ["steady"]  # by last reports the peak is lost: (0.4, 1.2) is dominated

    kept = kept_reports(trials, min_quality=0.9, min_student_updates=0).set_index("trial_id")
    peak = kept.loc["collapse"]
    assert (peak["student_updates"], peak["training_iteration"], peak["last_student_updates"]) == (80, 2, 120)
    assert peak["checkpoint"] == "/runs/s/collapse/checkpoint_000001"
    fronts = backbone_fronts(kept.reset_index())
    assert set(fronts["digits-eps"]["trial_id"]) == {"collapse", "steady"}
    assert fr.recommended(fronts["digits-eps"])["trial_id"].item() == "collapse"  # J 0.99 at 80 updates

    summary = fr.summarize(kept.reset_index(), fronts, cache_stats={}, compute={}, space_name="t", min_quality=0.9)
    rec = summary["recommended"]["digits-eps"]
    assert (rec["trial_id"], rec["student_updates"], rec["training_iteration"]) == ("collapse", 80, 2)
    assert rec["checkpoint"] == "/runs/s/collapse/checkpoint_000001"
    assert {m["trial_id"]: m["student_updates"] for m in summary["fronts"]["digits-eps"]} == {"collapse": 80, "steady": 120}
    assert all(m["checkpoint"] for m in summary["fronts"]["digits-eps"])
    assert "front" not in summary  # one front per backbone, never one across them
    assert summary["stopped_early"] == 0  # both trained 120 updates, whatever report is shown


def test_nan_and_diverged_reports_are_never_kept():
    trials = reports([
        {"trial_id": "a", "student_updates": 10, "diversity": 0.04, "quality": 0.45},  # J 0.85
        {"trial_id": "a", "student_updates": 20, "diversity": np.nan, "quality": np.nan},  # J -inf
        {"trial_id": "b", "student_updates": 10, "diversity": 0.03, "quality": 0.5},
        {"trial_id": "c", "student_updates": 10, "diversity": np.nan, "quality": np.nan},
    ], min_quality=0.5)
    kept = kept_reports(trials, min_quality=0.5, min_student_updates=0).set_index("trial_id")
    assert kept.loc["a", "student_updates"] == 10 and math.isfinite(kept.loc["a", "objective"])
    assert kept.loc["c", "below_floor"] and kept.loc["c", "checkpoint"] is None and not kept.loc["c", "kept"]
    fronts = backbone_fronts(kept.reset_index())
    assert "c" not in set(fronts["digits-eps"]["trial_id"])


def test_reports_before_min_student_updates_are_never_kept():
    """A trial's kept student counts only from ``min_student_updates`` on (an early transient with
    the highest J is passed over); a trial stopped before it keeps none, is shown by its last
    report, marked ``transient``, and kept off the front even where it would dominate."""
    rows = [
        {"trial_id": "early", "student_updates": 10, "diversity": 0.04, "quality": 0.5},  # J 1, a transient
        {"trial_id": "early", "student_updates": 40, "diversity": 0.02, "quality": 0.5},
        {"trial_id": "early", "student_updates": 60, "diversity": 0.03, "quality": 0.5},
        {"trial_id": "stopped", "student_updates": 10, "diversity": 0.04, "quality": 0.6},
        {"trial_id": "stopped", "student_updates": 20, "diversity": 0.039, "quality": 0.6},
    ]
    kept = kept_reports(reports(rows, min_student_updates=40), min_quality=0.9, min_student_updates=40)
    kept = kept.set_index("trial_id")
    assert kept.loc["early", "student_updates"] == 60 and not kept.loc["early", "transient"]
    assert kept.loc["stopped", "student_updates"] == 20 and kept.loc["stopped", "transient"]
    assert list(backbone_fronts(kept.reset_index())["digits-eps"]["trial_id"]) == ["early"]
    # without the setting the transient at 10 updates is the one kept, and the stopped trial dominates
    anywhere = kept_reports(reports(rows), min_quality=0.9, min_student_updates=0)
    assert anywhere.set_index("trial_id").loc["early", "student_updates"] == 10
    assert list(backbone_fronts(anywhere)["digits-eps"]["trial_id"]) == ["stopped"]


def collapsing_table() -> pd.DataFrame:
    """The fake table with K 20, lambda 0.05 reaching the teacher at 10 updates, then collapsing."""
    frame = fake_table()
    late = (frame["anchor_k"] == 20) & (frame["lambda_div"] == 0.05)
    u = frame.loc[late, "student_updates"]
    frame.loc[late, "diversity"] = np.where(u <= 10, 0.042, 0.042 - 0.002 * (u - 10))
    frame.loc[late, "quality"] = 0.45  # 0.82 of the teacher's: students of higher quality stay on the front
    return frame


def test_the_simulator_shows_the_front_tune_search_writes(tmp_path):
    """The simulator's front is `tune.outputs`' on the same rows, kept reports included: the
    collapsing trial is shown at its peak, not its last report; the bench judges it there by its
    seed mean."""
    from tests.tune.test_simulate import make_space
    from tune.simulate.replay import shown_front, simulate
    from tune.simulate.table import RecordedTable, ground_truth, hypervolume, true_points

    table = RecordedTable(collapsing_table())
    space = make_space(tmp_path, scheduler="fifo")
    sim = simulate(space, table, workers=2)
    shown = shown_front(sim.reports, min_quality=0.5)
    # as tune.search computes it from trials.parquet (every report, in any order)
    trials = res.with_scores(sim.reports.sample(frac=1, random_state=1), diversity_weight=0.5)
    written = fr.pareto_front(kept_reports(trials, min_quality=0.5, min_student_updates=0))
    cols = ["trial_id", "anchor_k", "lambda_div", "student_updates", "diversity_score", "quality_score", "objective"]
    pd.testing.assert_frame_equal(shown[cols].reset_index(drop=True), written[cols].reset_index(drop=True))
    peak = shown[(shown["anchor_k"] == 20) & (shown["lambda_div"] == 0.05)]
    assert peak["student_updates"].tolist() == [10] and len(shown) >= 3  # its last report, at 20, is collapsed

    se = load_bench("search_efficiency")
    truth = ground_truth(table, diversity_weight=0.5, min_quality=0.5)
    points = true_points(table, diversity_weight=0.5)
    traj = se.trajectory(sim.reports, truth, points, 0.5)
    key = ["backbone", "anchor_k", "lambda_div", "student_updates"]
    judged = points.set_index(key).loc[list(shown[key].itertuples(index=False, name=None))]
    expected = hypervolume(judged.reset_index(), min_quality=0.5) / truth["digits-flow"]["hypervolume"]
    assert traj["hv_fraction"].iloc[-1] == pytest.approx(expected)
    assert len(traj) == len(sim.reports)
    # the true front is over every (configuration, budget): here the collapsing run's peak is on it
    assert 10 in truth["digits-flow"]["front"].query("anchor_k == 20 and lambda_div == 0.05")["student_updates"].tolist()
