"""Each trial's kept student (the last report with a checkpoint) and one front per backbone, on
fake report frames written as the trainable writes them: a checkpoint only at a trial's new best
by J among its eligible reports (student_updates >= min_student_updates, quality_score >=
min_quality, J finite), ties to the later report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tune.outputs import front as res
from tune.outputs.front import (backbone_fronts, front_hypervolumes, front_summary, pareto_rows,
                                 recommended_students, rescored)
from tune.outputs.kept import eligible, kept_reports, new_bests, unique_reports
from tune.outputs.raw_units import comparable_groups, raw_comparison
from tune.outputs.results import with_scores

FLOOR, MIN_UPDATES = 0.9, 20
TEACHERS = {"digits-flow": (0.05, 0.5), "digits-eps": (0.04, 0.6)}


def reports(rows: list[dict], *, checkpoints: bool = True) -> pd.DataFrame:
    """Rows as ``trials_frame`` gives them: scores filled in from (diversity, quality) and the
    teacher of the row's backbone; ``checkpoint_dir_name`` where the contract puts one."""
    frame = pd.DataFrame([{"backbone": "digits-flow", "anchor_k": 10, "lambda_div": 0.05, **r} for r in rows])
    frame["teacher_diversity"] = [TEACHERS[b][0] for b in frame["backbone"]]
    frame["teacher_quality"] = [TEACHERS[b][1] for b in frame["backbone"]]
    frame["trial_path"] = "/runs/s/" + frame["trial_id"]
    frame = with_scores(frame, diversity_weight=0.5)
    if checkpoints:  # as the trainable attaches them, report by report in the order written
        best: dict[str, float] = {}
        names = []
        for i, r in enumerate(frame.itertuples()):
            ok = r.student_updates >= MIN_UPDATES and r.quality_score >= FLOOR and math.isfinite(r.objective)
            new = ok and r.objective >= best.get(r.trial_id, -math.inf)
            best[r.trial_id] = r.objective if new else best.get(r.trial_id, -math.inf)
            names.append(f"checkpoint_{i:06d}" if new else None)
        frame["checkpoint_dir_name"] = pd.Series(names, index=frame.index, dtype=object)
    return frame


def q(fraction: float, backbone: str = "digits-flow") -> float:
    """The raw quality of a quality_score."""
    return fraction * TEACHERS[backbone][1]


def d(fraction: float, backbone: str = "digits-flow") -> float:
    return fraction * TEACHERS[backbone][0]


def test_the_kept_report_is_the_last_with_a_checkpoint_ties_to_the_later():
    trials = reports([
        {"trial_id": "t", "student_updates": 10, "diversity": d(1.0), "quality": q(1.0)},  # transient: J 1, not eligible
        {"trial_id": "t", "student_updates": 20, "diversity": d(0.8), "quality": q(0.95)},
        {"trial_id": "t", "student_updates": 30, "diversity": d(0.8), "quality": q(0.95)},  # a tie: the later wins
        {"trial_id": "t", "student_updates": 40, "diversity": d(0.5), "quality": q(0.95)},  # worse: no checkpoint
    ])
    kept = kept_reports(trials, min_quality=FLOOR, min_student_updates=MIN_UPDATES).iloc[0]
    assert (kept["student_updates"], kept["last_student_updates"], kept["kept"]) == (30, 40, True)
    assert kept["checkpoint"] == "/runs/s/t/checkpoint_000002"
    assert not kept["below_floor"] and not kept["transient"]
    # without Ray's column (a recorded table, the simulator) the same rule picks the same report
    ruled = kept_reports(trials.drop(columns="checkpoint_dir_name"), min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    assert ruled["student_updates"].tolist() == [30] and ruled["checkpoint"].tolist() == [None]
    assert new_bests(unique_reports(trials), min_quality=FLOOR, min_student_updates=MIN_UPDATES).tolist() == \
        trials["checkpoint_dir_name"].notna().tolist()


def test_nan_reports_and_trials_that_never_pass_the_floor_keep_no_student():
    trials = reports([
        {"trial_id": "nan", "student_updates": 20, "diversity": np.nan, "quality": np.nan},
        {"trial_id": "nan", "student_updates": 40, "diversity": d(0.7), "quality": q(0.92)},
        {"trial_id": "nan", "student_updates": 60, "diversity": np.nan, "quality": q(0.99)},  # J -inf: never kept
        {"trial_id": "low", "student_updates": 20, "diversity": d(1.0), "quality": q(0.8)},
        {"trial_id": "low", "student_updates": 40, "diversity": d(0.9), "quality": q(0.85)},
        {"trial_id": "early", "student_updates": 10, "diversity": d(0.9), "quality": q(0.99)},
    ])
    kept = kept_reports(trials, min_quality=FLOOR, min_student_updates=MIN_UPDATES).set_index("trial_id")
    assert kept.loc["nan", "student_updates"] == 40 and kept.loc["nan", "kept"]
    assert kept.loc["low", "student_updates"] == 40 and not kept.loc["low", "kept"]  # its last report, shown
    assert kept.loc["low", "checkpoint"] is None and kept.loc["low", "below_floor"]
    assert not kept.loc["early", "kept"] and kept.loc["early", "transient"]
    assert eligible(trials, min_quality=FLOOR, min_student_updates=MIN_UPDATES).tolist() == \
        [False, True, False, False, False, False]
    fronts = backbone_fronts(kept.reset_index())
    assert fronts["digits-flow"]["trial_id"].tolist() == ["nan"]  # the others kept nothing


def test_a_resumed_trials_repeated_reports_count_once_the_later_copy():
    trials = reports([
        {"trial_id": "r", "student_updates": 20, "diversity": d(0.6), "quality": q(0.95)},
        {"trial_id": "r", "student_updates": 40, "diversity": d(0.7), "quality": q(0.95)},
        {"trial_id": "r", "student_updates": 40, "diversity": d(0.71), "quality": q(0.96)},  # the resumed copy
        {"trial_id": "r", "student_updates": 60, "diversity": d(0.5), "quality": q(0.95)},
    ])
    unique = unique_reports(trials.sample(frac=1.0, random_state=3).sort_index())
    assert unique["student_updates"].tolist() == [20, 40, 60]
    assert unique.loc[1, "diversity"] == pytest.approx(d(0.71))
    kept = kept_reports(trials, min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    assert kept["checkpoint"].item() == "/runs/s/r/checkpoint_000002"
    with pytest.raises(ValueError, match="student_updates"):
        unique_reports(trials.drop(columns="student_updates"))


def two_backbones() -> pd.DataFrame:
    rows = []
    for backbone, points in (("digits-flow", {"a": (0.9, 0.95), "b": (0.7, 1.05), "c": (0.6, 0.93), "dmd": (0.3, 1.1)}),
                             ("digits-eps", {"e": (0.8, 1.0), "f": (0.95, 0.91)})):
        for trial, (div, qual) in points.items():
            lam = 0.0 if trial == "dmd" else 0.05
            rows.append({"trial_id": trial, "backbone": backbone, "lambda_div": lam, "student_updates": 40,
                         "diversity": d(div, backbone), "quality": q(qual, backbone)})
    return reports(rows)


def test_one_front_per_backbone_with_its_recommendation_and_hypervolume():
    kept = kept_reports(two_backbones(), min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    fronts = backbone_fronts(kept)
    assert list(fronts) == ["digits-eps", "digits-flow"]
    assert fronts["digits-flow"]["trial_id"].tolist() == ["dmd", "b", "a"]  # c is dominated by a
    assert fronts["digits-eps"]["trial_id"].tolist() == ["e", "f"]
    picks = recommended_students(fronts)
    # J = 0.5 D + 0.5 min(Q, 1): a 0.925, b 0.85, dmd 0.65; e 0.9, f 0.93
    assert picks["digits-flow"]["trial_id"].item() == "a" and picks["digits-eps"]["trial_id"].item() == "f"
    hv = front_hypervolumes(fronts)
    # staircase areas above (0, 0): flow 0.3*1.1 + (0.7-0.3)*1.05 + (0.9-0.7)*0.95; eps 0.8*1.0 + 0.15*0.91
    assert hv["digits-flow"] == pytest.approx(0.3 * 1.1 + 0.4 * 1.05 + 0.2 * 0.95)
    assert hv["digits-eps"] == pytest.approx(0.8 * 1.0 + 0.15 * 0.91)
    table = pareto_rows(fronts)
    assert table.groupby("backbone")["trial_id"].apply(list).to_dict() == {"digits-eps": ["e", "f"],
                                                                           "digits-flow": ["dmd", "b", "a"]}


def test_the_summarys_fronts_recommended_teachers_and_raw_comparison():
    kept = kept_reports(two_backbones(), min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    same = {"evaluator": "digits", "quality_metric": "auto", "fingerprint": "f00d"}
    summary = front_summary(kept, backbone_fronts(kept), evaluation={"digits-flow": same, "digits-eps": same})
    assert [r["trial_id"] for r in summary["fronts"]["digits-flow"]] == ["dmd", "b", "a"]
    assert summary["recommended"]["digits-eps"]["trial_id"] == "f"
    assert summary["recommended"]["digits-flow"]["checkpoint"].startswith("/runs/s/a/checkpoint_")
    assert summary["teacher"] == {"digits-flow": {"diversity": 0.05, "quality": 0.5},
                                  "digits-eps": {"diversity": 0.04, "quality": 0.6}}
    (group,) = summary["raw_comparison"].values()
    assert group["backbones"] == ["digits-eps", "digits-flow"] and group["evaluator"] == "digits"
    assert "teacher-normalised" in group["note"] and group["units"].startswith("raw")
    assert {r["trial_id"] for r in group["fronts"]["digits-eps"]} == {"e", "f"}
    assert "diversity_score" not in group["fronts"]["digits-eps"][0]  # raw units only
    other = {**same, "evaluator": "real", "fingerprint": "beef"}
    assert raw_comparison(summary["fronts"], summary["teacher"], {"digits-flow": same, "digits-eps": other}) == {}
    assert comparable_groups({"a": same, "b": same, "c": other}, ["c", "b", "a"]) == [["a", "b"]]


def test_a_new_floor_or_weight_rejudges_the_kept_students():
    kept = kept_reports(two_backbones(), min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    stricter = backbone_fronts(rescored(kept, min_quality=1.0))
    assert stricter["digits-flow"]["trial_id"].tolist() == ["dmd", "b"] and stricter["digits-eps"]["trial_id"].tolist() == ["e"]
    weighted = rescored(kept, diversity_weight=0.1)  # J = 0.1 D + 0.9 min(Q, 1): a 0.945, b 0.97, dmd 0.93
    assert recommended_students(backbone_fronts(weighted))["digits-flow"]["trial_id"].item() == "b"
    assert weighted.set_index("trial_id").loc["a", "objective"] == pytest.approx(0.945)
    with pytest.raises(ValueError, match="diversity_weight"):
        rescored(kept, diversity_weight=1.5)


def test_the_kept_report_is_the_checkpoint_ray_keeps(tmp_path):
    """Ray's checkpoint manager, configured as the search configures it, given checkpoints only at
    new bests (the contract): its best checkpoint is the kept report's."""
    from ray.train import Checkpoint
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    from tune.run.tuner import best_checkpoint_config

    rng = np.random.default_rng(0)
    for trial in range(25):
        rows = [{"trial_id": f"t{trial}", "student_updates": 10 * (i + 1),
                 "diversity": d(float(rng.uniform(0.3, 1.2))),
                 "quality": q(float(rng.choice([np.nan, rng.uniform(0.8, 1.1)])))} for i in range(int(rng.integers(1, 9)))]
        frame = reports(rows)
        manager = _CheckpointManager(best_checkpoint_config())
        for r in frame.itertuples():
            if r.checkpoint_dir_name is not None:
                path = tmp_path / f"t{trial}" / r.checkpoint_dir_name
                path.mkdir(parents=True)
                manager.register_checkpoint(_TrainingResult(Checkpoint.from_directory(str(path)),
                                                            {"shown_objective": r.objective}))
        kept = kept_reports(frame.assign(trial_path=str(tmp_path / f"t{trial}")), min_quality=FLOOR,
                            min_student_updates=MIN_UPDATES)
        best = manager.best_checkpoint_result
        assert kept["checkpoint"].item() == (best.checkpoint.path if best is not None else None), rows


def test_which_backbones_share_an_evaluator(monkeypatch, tmp_path):
    from pathlib import Path

    from tune.outputs.raw_units import evaluation_settings
    from tune.space import load_space

    spaces = Path(__file__).parents[2] / "search_spaces"
    digits = evaluation_settings(load_space(spaces / "quickstart.yaml"))
    assert digits["digits-flow"]["evaluator"] == digits["digits-eps"]["evaluator"] == "digits"
    assert digits["digits-flow"]["fingerprint"] == digits["digits-eps"]["fingerprint"]  # the same prompts, seeds
    monkeypatch.setenv("DPDMD_WEIGHTS", str(tmp_path))
    real = evaluation_settings(load_space(spaces / "backbone.yaml", check_weights=False))
    assert {s["evaluator"] for s in real.values()} == {"real"}
    assert real["sd35m"]["fingerprint"] == real["sdxl"]["fingerprint"] != digits["digits-flow"]["fingerprint"]
    assert "/" not in str(real)  # no paths: only a fingerprint of the settings


def test_the_printed_fronts_and_the_headline():
    kept = kept_reports(two_backbones(), min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    fronts = backbone_fronts(kept)
    summary = res.summarize(kept, fronts, cache_stats={}, compute={}, space_name="t", min_quality=FLOOR)
    text = res.front_table(fronts, summary["recommended"])
    assert text.index("digits-eps:") < text.index("digits-flow:")
    assert "recommended: trial a (K=10 λ=0.05, 40 student updates, J 0.925)" in text
    flat = res.headline(summary)
    assert flat["recommended/digits-eps/trial_id"] == "f" and flat["hypervolume/digits-flow"] == summary["hypervolume"]["digits-flow"]
    assert res.front_table({"sd35m": fronts["digits-flow"].iloc[:0]}).startswith("sd35m: no front")


def test_no_front_anywhere_still_writes_a_table_with_the_columns():
    kept = kept_reports(reports([{"trial_id": "low", "student_updates": 40, "diversity": d(0.9), "quality": q(0.5)}]),
                        min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    table = pareto_rows(backbone_fronts(kept))
    assert table.empty and {"trial_id", "backbone", "diversity_score", "quality_score"} <= set(table.columns)
    assert pareto_rows({}).columns.tolist()[:2] == ["trial_id", "backbone"]
