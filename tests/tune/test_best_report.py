"""Each trial is shown by its best report by J (the checkpoint Ray keeps), not its last: on the
front, in summary.json, in the simulator and in the efficiency bench."""

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

TEACHER = {"teacher_diversity": 0.05, "teacher_quality": 0.5, "backbone": "digits-eps"}


def reports(rows: list[dict]) -> pd.DataFrame:
    """Reports as ``trials_frame`` gives them: scores filled, a trial folder and Ray's
    ``checkpoint_dir_name`` (None on a report without a checkpoint)."""
    frame = pd.DataFrame([{**TEACHER, "trial_path": f"/runs/s/{r['trial_id']}",
                            "checkpoint_dir_name": f"checkpoint_{i:06d}", **r} for i, r in enumerate(rows)])
    return res.with_scores(frame, diversity_weight=0.5)


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

    best = res.best_results(trials, min_quality=0.9).set_index("trial_id")
    peak = best.loc["collapse"]
    assert (peak["student_updates"], peak["training_iteration"], peak["last_student_updates"]) == (80, 2, 120)
    assert peak["checkpoint"] == "/runs/s/collapse/checkpoint_000001"
    front = fr.pareto_front(best.reset_index())
    assert set(front["trial_id"]) == {"collapse", "steady"}
    assert fr.recommended(front)["trial_id"].item() == "collapse"  # J 0.99 at 80 updates

    summary = fr.summarize(best.reset_index(), front, cache_stats={}, compute={}, space_name="t", min_quality=0.9)
    rec = summary["recommended"]
    assert (rec["trial_id"], rec["student_updates"], rec["training_iteration"]) == ("collapse", 80, 2)
    assert rec["checkpoint"] == "/runs/s/collapse/checkpoint_000001"
    assert {m["trial_id"]: m["student_updates"] for m in summary["front"]} == {"collapse": 80, "steady": 120}
    assert all(m["checkpoint"] for m in summary["front"])
    assert summary["stopped_early"] == 0  # both trained 120 updates, whatever report is shown


def test_nan_and_diverged_reports_are_never_best():
    trials = reports([
        {"trial_id": "a", "student_updates": 10, "diversity": 0.04, "quality": 0.45},  # J 0.85
        {"trial_id": "a", "student_updates": 20, "diversity": np.nan, "quality": np.nan},  # J -inf
        {"trial_id": "b", "student_updates": 10, "diversity": 0.03, "quality": 0.5},
        # diverged: no checkpoint; its scores happen to be the best of the trial
        {"trial_id": "b", "student_updates": 20, "diversity": 0.05, "quality": 0.5, "diverged": 1,
         "checkpoint_dir_name": None},
        {"trial_id": "c", "student_updates": 10, "diversity": np.nan, "quality": np.nan},
    ])
    best = res.best_results(trials, min_quality=0.5).set_index("trial_id")
    assert best.loc["a", "student_updates"] == 10 and math.isfinite(best.loc["a", "objective"])
    assert best.loc["b", "student_updates"] == 10 and best.loc["b", "checkpoint"].endswith("checkpoint_000002")
    assert best.loc["c", "below_floor"] and best.loc["c", "checkpoint"] is not None  # its only report
    front = fr.pareto_front(best.reset_index())
    assert "c" not in set(front["trial_id"])


def test_ties_go_to_the_later_report_and_a_trial_without_checkpoints_keeps_one_row():
    trials = reports([
        {"trial_id": "t", "student_updates": 10, "diversity": 0.04, "quality": 0.5},
        {"trial_id": "t", "student_updates": 20, "diversity": 0.04, "quality": 0.5},
        {"trial_id": "t", "student_updates": 30, "diversity": 0.01, "quality": 0.5},
    ]).drop(columns=["checkpoint_dir_name", "trial_path"])  # a table's or the simulator's rows
    best = res.best_results(trials.sample(frac=1, random_state=0))  # any row order
    assert len(best) == 1 and best["student_updates"].item() == 20 and best["checkpoint"].item() is None


def test_reports_before_min_student_updates_are_never_shown():
    """A trial's best report counts only from ``min_student_updates`` on (an early transient with
    the highest J is passed over); a trial stopped before it is shown by its last report, marked
    ``transient``, and kept off the front even where it would dominate."""
    trials = reports([
        {"trial_id": "early", "student_updates": 10, "diversity": 0.04, "quality": 0.5},  # J 1, a transient
        {"trial_id": "early", "student_updates": 40, "diversity": 0.02, "quality": 0.5},
        {"trial_id": "early", "student_updates": 60, "diversity": 0.03, "quality": 0.5},
        {"trial_id": "stopped", "student_updates": 10, "diversity": 0.04, "quality": 0.6},
        {"trial_id": "stopped", "student_updates": 20, "diversity": 0.039, "quality": 0.6},
    ])
    best = res.best_results(trials, min_student_updates=40).set_index("trial_id")
    assert best.loc["early", "student_updates"] == 60 and not best.loc["early", "transient"]
    assert best.loc["stopped", "student_updates"] == 20 and best.loc["stopped", "transient"]
    assert list(fr.pareto_front(best.reset_index())["trial_id"]) == ["early"]
    # without the setting the transient at 10 updates is the one shown, and the stopped trial dominates
    assert res.best_results(trials).set_index("trial_id").loc["early", "student_updates"] == 10
    assert list(fr.pareto_front(res.best_results(trials))["trial_id"]) == ["stopped"]


def test_the_best_report_is_the_checkpoint_ray_keeps(tmp_path):
    """Ray's own checkpoint manager, configured as the search configures it, fed random reports
    (NaN and -inf J among them, ties) with the ``shown_objective`` the trainable reports (some
    trials with an ``objective.min_student_updates``): the checkpoint it keeps as best is the
    report `best_results` picks, and the latest is never deleted."""
    from ray.train import Checkpoint
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    from tune.trial.objective import shown_objective
    from tune.run.tuner import best_checkpoint_config

    rng = np.random.default_rng(0)
    for trial in range(30):
        manager = _CheckpointManager(best_checkpoint_config())
        rows, min_updates = [], int(rng.choice([0, 30]))
        for i in range(int(rng.integers(1, 9))):
            objective = float(rng.choice([np.nan, -np.inf, 0.5, 0.7, 0.9, rng.uniform(0, 1)]))
            path = tmp_path / f"t{trial}" / f"checkpoint_{i:06d}"
            path.mkdir(parents=True)
            shown = float(shown_objective(objective, 10 * (i + 1), min_student_updates=min_updates))
            manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(path)),
                                                        {"objective": objective, "shown_objective": shown}))
            rows.append({"trial_id": f"t{trial}", "student_updates": 10 * (i + 1), "objective": objective,
                         "diversity_score": 0.5, "quality_score": 1.0, "trial_path": str(tmp_path / f"t{trial}"),
                         "checkpoint_dir_name": path.name})
        best = res.best_results(pd.DataFrame(rows), min_student_updates=min_updates)
        assert best["checkpoint"].item() == manager.best_checkpoint_result.checkpoint.path, rows
        assert best["transient"].item() == (best["student_updates"].item() < min_updates)
        assert Path(best["checkpoint"].item()).is_dir()
        assert Path(rows[-1]["trial_path"], rows[-1]["checkpoint_dir_name"]).is_dir()  # the latest, to resume
        assert len(list((tmp_path / f"t{trial}").iterdir())) <= 2


def collapsing_table() -> pd.DataFrame:
    """The fake table with K 20, lambda 0.05 reaching the teacher at 10 updates, then collapsing."""
    frame = fake_table()
    late = (frame["anchor_k"] == 20) & (frame["lambda_div"] == 0.05)
    u = frame.loc[late, "student_updates"]
    frame.loc[late, "diversity"] = np.where(u <= 10, 0.042, 0.042 - 0.002 * (u - 10))
    frame.loc[late, "quality"] = 0.45  # 0.82 of the teacher's: students of higher quality stay on the front
    return frame


def test_the_simulator_shows_the_front_tune_search_writes(tmp_path):
    """The simulator's front is `tune.outputs.results`' on the same rows, best reports included: the
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
    written = fr.pareto_front(res.best_results(trials, min_quality=0.5))
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
