"""pareto.png and curves.png: one panel per backbone in the front's own axes, points and curves
named by configuration, the recommended student starred, the rungs and the kept students marked."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from tests.tune.test_kept import FLOOR, MIN_UPDATES, d, q, reports, two_backbones
from tune.outputs.curves_figure import curves_figure, curves_panels
from tune.outputs.front_figure import pareto_figure, pareto_panels
from tune.outputs.front import backbone_fronts, front_summary
from tune.outputs.kept import kept_reports, unique_reports
from tune.outputs.labels import config_label, trial_labels
from tune.space.schema import SchedulerSpec

DIGITS = {"evaluator": "digits", "quality_metric": "auto", "fingerprint": "f00d"}


def _summary(kept, evaluation=None):
    summary = front_summary(kept, backbone_fronts(kept), evaluation=evaluation or {})
    return {**summary, "space": "test", "min_quality": FLOOR}


def _texts(ax) -> set[str]:
    return {t.get_text() for t in ax.texts}


def test_one_panel_per_backbone_in_the_fronts_axes():
    kept = kept_reports(two_backbones(), min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    fig = pareto_panels(kept, _summary(kept))
    assert len(fig.axes) == 2  # no raw panel: no evaluation recorded
    eps, flow = fig.axes
    assert eps.get_title().startswith("digits-eps") and flow.get_title().startswith("digits-flow")
    for ax in fig.axes:
        assert ax.get_xlabel().startswith("diversity_score") and ax.get_ylabel().startswith("quality_score")
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "teacher (1, 1)" in legend and "recommended (highest J on the front)" in legend
        assert any(t.startswith("fidelity floor") for t in legend)
    # every point named by its configuration; the front's staircase is over the plotted points
    assert "K=10 λ=0.05 fidelity 0.95" in _texts(flow) and "K=10 λ=0 fidelity 1.10" in _texts(flow)
    assert "vanilla DMD" in _texts(flow) and "vanilla DMD" not in _texts(eps)
    (stair,) = [line for line in flow.get_lines() if line.get_color() == "tab:red"]  # not the teacher / floor lines
    xs, ys = stair.get_data()
    np.testing.assert_allclose(sorted(zip(xs, ys)), [(0.3, 1.1), (0.7, 1.05), (0.9, 0.95)])
    star = next(c for c in flow.collections if c.get_label().startswith("recommended"))
    np.testing.assert_allclose(star.get_offsets(), [[0.9, 0.95]])  # trial a: the highest J


def test_a_raw_units_panel_where_one_evaluator_scored_both_backbones(tmp_path):
    kept = kept_reports(two_backbones(), min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    summary = _summary(kept, {"digits-flow": DIGITS, "digits-eps": DIGITS})
    fig = pareto_panels(kept, summary)
    raw = fig.axes[2]
    assert "raw units" in raw.get_title() and "do not compare across backbones" in raw.get_title()
    assert raw.get_xlabel().startswith("diversity (raw, digits evaluator") and "digits-eps, digits-flow" in raw.get_xlabel()
    assert {"teacher digits-flow", "teacher digits-eps"} <= _texts(raw)
    teachers = {c.get_label(): c.get_offsets()[0].tolist() for c in raw.collections if c.get_label().endswith("teacher")}
    assert teachers == {"digits-eps: teacher": [0.04, 0.6], "digits-flow: teacher": [0.05, 0.5]}
    out = pareto_figure(kept, summary, tmp_path / "sub" / "pareto.png")
    image = mpimg.imread(out)
    assert image.shape[0] > 900 and image.shape[1] > 1200 and image[..., :3].std() > 0.01


def test_curves_named_by_configuration_with_rungs_and_kept_students(tmp_path):
    trials = reports([{"trial_id": f"hash{k}{i}", "anchor_k": k, "lambda_div": lam, "student_updates": u,
                       "diversity": d(0.5 + 0.1 * step), "quality": q(0.95)}
                      for i, (k, lam) in enumerate(((5, 0.05), (20, 0.5), (20, 0.5)))
                      for step, u in enumerate((10, 20, 40, 80))])
    unique = unique_reports(trials)
    kept = kept_reports(trials, min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    fig = curves_panels(unique, kept, rungs=SchedulerSpec(grace_period=10, reduction_factor=2).milestones(80),
                        min_student_updates=MIN_UPDATES)
    (ax,) = fig.axes
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names[:3] == ["K=5 λ=0.05", "K=20 λ=0.5 (hash201)", "K=20 λ=0.5 (hash202)"]  # by K, then λ
    assert "kept student (its checkpoint)" in names
    rungs = {line.get_xdata()[0] for line in ax.get_lines()
             if line.get_linestyle() == ":" and line.get_xdata()[0] == line.get_xdata()[1]}
    assert rungs == {10, 20, 40, 80}
    stars = [c for c in ax.collections if c.get_offsets().shape[0] == 1 and c.get_sizes()[0] == 150]
    kept_points = sorted(tuple(c.get_offsets()[0]) for c in stars)
    expected = sorted((float(r.student_updates), float(r.objective)) for r in kept.itertuples())
    np.testing.assert_allclose(kept_points, expected)
    assert curves_figure(unique, kept, tmp_path / "curves.png", rungs=[10, 20]).is_file()


def test_more_trials_than_a_legend_names_are_one_collection():
    """Issue 24, section 6: 10,000 trials drew 10,000 Line2D artists, each from its own filter of
    the reports (trials x reports); beyond the legend's count the curves are one LineCollection
    (each trial's reports by student updates, the trials in knob order) and the kept students one
    scatter of stars."""
    from matplotlib.collections import LineCollection

    from tune.outputs.curves_figure import MAX_LEGEND

    n = MAX_LEGEND + 6
    rows = [{"trial_id": f"t{i:02d}", "anchor_k": n - i, "lambda_div": 0.1, "student_updates": u,
             "diversity": d(0.5 + 0.01 * i + 0.1 * step), "quality": q(0.95)}
            for i in range(n) for step, u in enumerate((10, 20, 40))]
    trials = reports(rows[::-1])  # any row order
    unique, kept = unique_reports(trials), kept_reports(trials, min_quality=FLOOR, min_student_updates=MIN_UPDATES)
    (ax,) = curves_panels(unique, kept, rungs=[10, 20], min_student_updates=MIN_UPDATES).axes
    assert ax.get_title().endswith(f": {n} trials") and not [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = lines.get_segments()
    assert len(segments) == n
    first = unique[unique["trial_id"] == f"t{n - 1:02d}"].sort_values("student_updates")  # K=1 comes first
    np.testing.assert_allclose(segments[0], first[["student_updates", "objective"]].to_numpy(dtype=float))
    (stars,) = [c for c in ax.collections if c.get_offsets().shape[0] == int(kept["kept"].sum()) > 1]
    np.testing.assert_allclose(sorted(map(tuple, stars.get_offsets())),
                               sorted(zip(kept["student_updates"].astype(float), kept["objective"].astype(float))))
    assert "kept student (its checkpoint)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_point_labels_are_thinned_repeats_once_and_at_most_the_cap():
    """Issue 24, section 6: a front of 427 at 10,000 trials (most of them one configuration at one
    point) took 35 s to label; a repeat at one point is labelled once, and beyond the cap the
    recommended student's label and the rest spread by x, the title saying so."""
    from matplotlib.figure import Figure

    from tune.outputs.front_figure import MAX_LABELLED, _thinned
    from tune.outputs.plots import Label

    teacher = Label("teacher (1, 1)", (1.0, 1.0), "black", bold=True)
    repeats = [Label("K=1 λ=0.01", (0.5, 1.1), "tab:red")] * 20 + [Label("K=5 λ=0.1", (0.7, 1.0), "tab:red")]
    ax = Figure().add_subplot()
    ax.set_title("digits-flow")
    assert _thinned(ax, [teacher, *repeats], []) == [teacher, repeats[0], repeats[-1]]
    assert "2 of 21 point labels" in ax.get_title()
    many = [Label(f"K={i}", (i / 100, 2 - i / 100), "tab:red") for i in range(100)]
    ax = Figure().add_subplot()
    shown = _thinned(ax, [teacher, *many], [(0.37, 1.63)])
    assert shown[0] == teacher and many[37] in shown and many[0] in shown and many[-1] in shown
    assert len(shown) == 1 + MAX_LABELLED + 1  # the cap, and the recommended one off the spread
    assert shown[1:] == sorted(shown[1:], key=lambda label: label.point)  # in their own order
    few = [teacher, *many[:5]]
    assert _thinned(Figure().add_subplot(), few, []) == few


def test_the_rungs_are_rays():
    from ray.tune.schedulers.async_hyperband import _Bracket

    for grace, rf, max_t, brackets in ((10, 2, 80, 1), (100, 2, 500, 2), (20, 3, 100, 3), (7, 2.5, 90, 2)):
        ray = sorted({float(m) for s in range(brackets) for m, _ in _Bracket(grace, max_t, rf, s)._rungs})
        spec = SchedulerSpec(type="asha", grace_period=grace, reduction_factor=rf, brackets=brackets)
        assert spec.milestones(max_t) == ray
    assert SchedulerSpec(type="fifo").milestones(80) == []
    with pytest.raises(ValueError, match="reduction_factor: 1 is not allowed; it must be > 1"):
        SchedulerSpec(grace_period=10, reduction_factor=1)  # the schema refuses it before any milestone
    with pytest.raises(ValueError, match="max_t >= 1"):
        SchedulerSpec(grace_period=10).milestones(0)


def test_labels_are_configurations_unique_per_trial():
    assert config_label({"anchor_k": 10, "lambda_div": 0.05, "backbone": "sd35m"}, backbone=True) == "sd35m K=10 λ=0.05"
    assert config_label({"trial_id": "abc"}) == "abc"
    frame = reports([{"trial_id": "x1", "student_updates": 10, "diversity": 0.01, "quality": 0.4},
                     {"trial_id": "y2", "student_updates": 10, "diversity": 0.01, "quality": 0.4, "anchor_k": 5}])
    assert trial_labels(frame) == {"x1": "K=10 λ=0.05", "y2": "K=5 λ=0.05"}
