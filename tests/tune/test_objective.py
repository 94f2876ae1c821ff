"""The objective cannot be raised by degrading samples; the front keeps only faithful trials.

Corruption checks score the teacher's own samples (generated once per backbone, module fixture)
and degraded copies with the digits evaluator (README, "The combined objective and the front").
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from dpdmd.evaluation import DigitsEvaluator
from dpdmd.evaluation.corruptions import standard_corruptions
from tune.outputs import files
from tune.outputs import front as fr
from tune.outputs import results as res
from tune.trial.objective import diversity_score, legacy_objective, objective_metrics


def test_diversity_score_is_two_sided_and_quality_score_uncapped():
    assert diversity_score(0.5, 1.0) == 0.5
    assert diversity_score(1.0, 1.0) == 1.0
    assert diversity_score(1.3, 1.0) == pytest.approx(0.7)  # excess spread costs like missing spread
    assert diversity_score(3.0, 1.0) == 0.0
    m = objective_metrics(0.06, 0.8, teacher_diversity=0.05, teacher_quality=0.5, diversity_weight=0.25)
    assert m["diversity_score"] == pytest.approx(0.8) and m["quality_score"] == pytest.approx(1.6)
    assert m["objective"] == pytest.approx(0.25 * 0.8 + 0.75 * 1.0)  # quality beyond the teacher's: no gain in J
    nan = objective_metrics(math.nan, 0.8, teacher_diversity=0.05, teacher_quality=0.5, diversity_weight=0.5)
    assert nan["objective"] == -math.inf
    with pytest.raises(ValueError, match="diversity_weight"):
        objective_metrics(0.1, 0.1, teacher_diversity=0.1, teacher_quality=0.1, diversity_weight=2)
    with pytest.raises(ValueError, match="positive"):
        objective_metrics(0.1, 0.1, teacher_diversity=0.0, teacher_quality=0.1, diversity_weight=0.5)


def test_the_issue_trials_no_longer_win():
    """issue 9's digits-eps numbers: a noisy half-trained student (D 0.165, class prob 0.732,
    precision 0.225) had the old J's best; with fidelity it is below the floor and below DMD."""
    teacher = {"teacher_diversity": 0.056, "teacher_quality": 0.987 * 0.575}
    noisy = objective_metrics(0.165, 0.732 * 0.225, diversity_weight=0.5, **teacher)
    dmd = objective_metrics(0.031, 0.984 * 0.725, diversity_weight=0.5, **teacher)
    assert legacy_objective(0.165, 0.732, teacher_diversity=0.056, teacher_quality=0.987) > 1.5
    assert noisy["objective"] < dmd["objective"] and noisy["quality_score"] < 0.9 <= dmd["quality_score"]


def test_a_collapsed_student_cleaner_than_its_teacher_does_not_win_j():
    """The quickstart's digits-eps vanilla DMD: 22% of the teacher's diversity, quality_score 2.68
    (clean digits against a speckled teacher), against a DP-DMD flow student at the teacher's level."""
    collapsed = objective_metrics(0.2238, 2.681, teacher_diversity=1.0, teacher_quality=1.0, diversity_weight=0.5)
    preserved = objective_metrics(0.9637, 1.04, teacher_diversity=1.0, teacher_quality=1.0, diversity_weight=0.5)
    assert collapsed["quality_score"] == pytest.approx(2.681)  # the front still sees it
    assert collapsed["objective"] == pytest.approx(0.5 * 0.2238 + 0.5)
    assert collapsed["objective"] < preserved["objective"] <= 1.0


def _final(rows):
    trials = res.with_scores(pd.DataFrame(rows), diversity_weight=0.5)
    return res.final_results(trials, min_quality=0.9)


def test_front_keeps_only_trials_above_the_floor_and_recommends_the_best_j():
    base = {"teacher_diversity": 0.05, "teacher_quality": 0.5, "backbone": "digits-eps"}
    final = _final([
        {"trial_id": "noisy", "student_updates": 60, "diversity": 0.09, "quality": 0.20, **base},  # r 1.8, q 0.4
        {"trial_id": "dmd", "student_updates": 60, "diversity": 0.03, "quality": 0.55, **base},  # 0.6, 1.1
        {"trial_id": "dpdmd", "student_updates": 60, "diversity": 0.045, "quality": 0.48, **base},  # 0.9, 0.96
        {"trial_id": "wide", "student_updates": 60, "diversity": 0.049, "quality": 0.40, **base},  # 0.98, 0.8
        {"trial_id": "early", "student_updates": 20, "diversity": 0.2, "quality": 0.6, **base},
        {"trial_id": "early", "student_updates": 60, "diversity": 0.04, "quality": 0.5, **base},  # 0.8, 1.0
    ])
    assert final.set_index("trial_id")["below_floor"].to_dict() == {
        "noisy": True, "dmd": False, "dpdmd": False, "wide": True, "early": False}
    front = fr.pareto_front(final)
    assert front["trial_id"].tolist() == ["dmd", "early", "dpdmd"]  # sorted by diversity_score
    assert fr.recommended(front)["trial_id"].item() == "dpdmd"  # J 0.93 vs 0.9 (early), 0.85 (dmd)
    summary = fr.summarize(final, {"digits-eps": front}, cache_stats={}, compute={}, space_name="t", min_quality=0.9)
    assert summary["recommended"]["digits-eps"]["trial_id"] == "dpdmd" and summary["below_floor"] == 2
    # the hypervolume is in the front's own units: the staircase of (0.6, 1.1), (0.8, 1.0), (0.9, 0.96)
    assert summary["hypervolume"]["digits-eps"] == pytest.approx(0.6 * 1.1 + 0.2 * 1.0 + 0.1 * 0.96)


def test_outputs_plot_teacher_units_and_grey_below_floor(tmp_path):
    base = {"teacher_diversity": 0.05, "teacher_quality": 0.5, "backbone": "digits-eps", "lambda_div": 0.5,
            "anchor_k": 20}
    final = _final([{"trial_id": "a", "student_updates": 60, "diversity": 0.045, "quality": 0.48, **base},
                    {"trial_id": "b", "student_updates": 60, "diversity": 0.08, "quality": 0.2, **base},
                    {"trial_id": "c", "student_updates": 60, "diversity": 0.03, "quality": 0.5,
                     **dict(base, lambda_div=0.0)}])
    front = fr.pareto_front(final)
    summary = fr.summarize(final, {"digits-eps": front}, cache_stats={}, compute={}, space_name="t", min_quality=0.9)
    paths = files.write_outputs(tmp_path, final, final, front.assign(backbone="digits-eps"), summary)
    assert paths["plot"].stat().st_size > 10_000 and paths["kept"].is_file()
    with_teacher = fr.front_with_teacher(front, summary["teacher"])
    assert with_teacher.iloc[-1][["backbone", "diversity_score", "quality_score"]].tolist() == ["digits-eps", 1.0, 1.0]
    assert fr.headline(summary)["recommended/digits-eps/trial_id"] == "a"
    assert fr.headline(summary)["hypervolume/digits-eps"] == summary["hypervolume"]["digits-eps"]


@pytest.fixture(scope="module")
def evaluator():
    return DigitsEvaluator()


@pytest.fixture(scope="module", params=["digits-flow", "digits-eps"])
def corrupted_scores(request, evaluator):
    """{set name: objective_metrics} of a backbone's teacher samples (10 prompts x 8 seeds) and
    their `standard_corruptions`, normalised by the clean set."""
    from bench.objective_check import teacher_grid

    torch.set_num_threads(1)
    images, prompts = teacher_grid(request.param, 8)
    evaluator.set_teacher_reference(evaluator.teacher_reference_state(images, prompts))  # as a search does
    raw = {"clean": evaluator.score(images, prompts)}
    raw.update({name: evaluator.score(x, prompts) for name, x in standard_corruptions(images).items()})
    ref = raw["clean"]
    return request.param, {name: objective_metrics(m["diversity"], m["quality"], teacher_diversity=ref["diversity"],
                                                   teacher_quality=ref["quality"], diversity_weight=0.5)
                           for name, m in raw.items()}


def test_every_corruption_lowers_j_and_noise_lowers_it_monotonically(corrupted_scores):
    _, scores = corrupted_scores
    j = {name: s["objective"] for name, s in scores.items()}
    assert all(j[name] < j["clean"] for name in j if name != "clean"), j
    assert j["clean"] > j["noise 0.1"] > j["noise 0.2"] > j["noise 0.4"], j


def _dominated(a, b):
    """b dominates a on (diversity_score, quality_score)."""
    pa = np.array([a["diversity_score"], a["quality_score"]])
    pb = np.array([b["diversity_score"], b["quality_score"]])
    return bool((pb >= pa).all() and (pb > pa).any())


# Corruptions whose quality_score is asserted below the fidelity floor (0.9), and the margin the
# assertion relies on. Measured with `python bench/objective_margins.py --python <env A> <env B>
# --threads 1 2` (numpy 2.4.6 / scipy 1.17.1 / scikit-learn 1.9.1 and numpy 2.2.6 / scipy 1.15.3 /
# scikit-learn 1.6.1, 1 and 2 threads; docs/results/objective.md): the four runs gave identical
# scores (spread 0.0000), so these margins are far above what package versions and threads move.
# "noise 0.1" is left out: it scored 0.917 (flow) and 0.915 (eps), above the floor by 0.02, while
# an earlier install scored 0.865 (flow) and 0.848 (eps) with the same code: too close to call.
BELOW_FLOOR = {  # set: the smallest margin below 0.9 over both backbones, measured 2026-12-05
    "noise 0.2": 0.29, "noise 0.4": 0.80, "blur 0.5": 0.32, "blur 1": 0.82, "drop 3 -> 8": 0.11}
MIN_FLOOR_MARGIN = 0.05  # what a new package version may take off a margin before this test fails


def test_clean_set_dominates_every_corruption(corrupted_scores):
    """On both backbones every corruption is dominated by the clean set and scores a lower J
    (the smallest J margin measured: noise 0.1, +0.045 on digits-eps, +0.068 on digits-flow).
    On digits-flow pixel noise of std 0.1 and a 1-pixel blur at 32x32 are below the classifier's
    8x8 read-out: the spectral match against the teacher's samples is what lowers their quality
    (docs/evaluation.md). A half-pixel blur of the speckled digits-eps teacher raised its quality
    against the real digits' spectrum; against the teacher's it is dominated."""
    _, scores = corrupted_scores
    names = [n for n in scores if n != "clean"]
    assert names == ["noise 0.1", "noise 0.2", "noise 0.4", "blur 0.5", "blur 1", "drop 3 -> 8"]
    assert all(_dominated(scores[n], scores["clean"]) for n in names), {n: scores[n] for n in names}
    assert all(scores[n]["objective"] < scores["clean"]["objective"] for n in names), scores


@pytest.mark.parametrize("name", sorted(BELOW_FLOOR))
def test_corruptions_fall_below_the_fidelity_floor(corrupted_scores, name):
    """What the floor protects: a degraded student (noise, blur, a lost class) never reaches the
    front. Each set below sits under 0.9 by at least MIN_FLOOR_MARGIN (its measured margin is in
    BELOW_FLOOR, many times the zero spread measured across package versions and threads)."""
    backbone, scores = corrupted_scores
    assert BELOW_FLOOR[name] > MIN_FLOOR_MARGIN
    assert scores[name]["quality_score"] < 0.9 - MIN_FLOOR_MARGIN, (backbone, name, scores[name])


def test_rung_kendall_tau_against_the_final_ranking():
    from tune.simulate.rank_agreement import rung_kendall_tau

    rows = [(t, u, v) for t, values in {"a": [1, 3], "b": [2, 2], "c": [3, 1], "d": [4, None]}.items()
            for u, v in zip((10, 20), values) if v is not None]
    trials = pd.DataFrame(rows, columns=["trial_id", "student_updates", "objective"])
    table = rung_kendall_tau(trials, "objective").set_index("rung")
    # rung 10: a1 b2 c3 d4 vs final a3 b2 c1 d4 -> pairs: 3 discordant (ab, ac, bc), 3 concordant
    assert table.loc[10, "trials"] == 4 and table.loc[10, "tau"] == pytest.approx(0.0)
    assert table.loc[20, "tau"] == pytest.approx(1.0)  # the last rung is the final ranking
