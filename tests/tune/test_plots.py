"""tune.outputs.plots: PNGs are written, readable, and show what they claim."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from tune.outputs import plots


@pytest.fixture
def trials() -> pd.DataFrame:
    return pd.DataFrame({
        "diversity": [0.02, 0.05, 0.04, 0.07, np.nan, 0.05],
        "quality": [0.95, 0.90, 0.88, 0.85, 0.99, 0.90],
        "anchor_k": [5, 10, 10, 20, 40, 10],
        "lambda_div": [0.01, 0.05, 0.02, 0.1, 0.2, 0.05],
        "backbone": ["digits-flow"] * 6,
    })


def _assert_png(path, min_px=(300, 400)):
    assert path.is_file()
    assert 5_000 < path.stat().st_size < 2_000_000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] >= min_px[0] and img.shape[1] >= min_px[1]
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img


def test_plot_pareto_writes_png(tmp_path, trials):
    out = plots.plot_pareto(
        trials,
        tmp_path / "sub" / "front.png",
        reference_points={"teacher": (0.08, 0.95), "vanilla DMD": (0.03, 0.96)},
        title="digits",
    )
    assert out == tmp_path / "sub" / "front.png"
    _assert_png(out)


def test_plot_pareto_draws_front_labels_and_references(tmp_path, trials, monkeypatch):
    """Capture the figure before saving and inspect its artists."""
    seen = _capture(monkeypatch)
    plots.plot_pareto(trials, tmp_path / "f.png",
                      reference_points={"teacher": (0.08, 0.95)})
    ax = seen["fig"].axes[0]
    texts = {t.get_text() for t in ax.texts}
    assert "K=10 λ=0.05 digits-flow" in texts
    assert "K=20 λ=0.1 digits-flow" in texts
    assert not any("K=40" in t for t in texts)  # NaN trial cannot be placed
    assert "teacher" in texts
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Pareto front (4)" in legend  # 3 distinct points + 1 duplicate
    assert "teacher" in legend
    assert "dominated (1); 1 NaN/inf not shown" in legend
    # The step line passes through the front points in x order.
    (line,) = ax.get_lines()
    xs, ys = line.get_data()
    assert set(zip(np.round(xs, 6), np.round(ys, 6))) >= {(0.02, 0.95), (0.05, 0.9), (0.07, 0.85)}
    assert ax.get_xlabel().startswith("diversity") and ax.get_ylabel().startswith("quality")


def test_plot_pareto_missing_label_columns_and_bad_axis(tmp_path, trials):
    out = plots.plot_pareto(trials[["diversity", "quality"]], tmp_path / "bare.png",
                            label_columns=("anchor_k", ("gone", "G=")))
    _assert_png(out)
    with pytest.raises(ValueError, match="not in the DataFrame"):
        plots.plot_pareto(trials, tmp_path / "x.png", x="fid")


def test_plot_curves_writes_png(tmp_path):
    steps = np.arange(0, 100, 10)
    df = pd.concat(
        pd.DataFrame({"trial_id": tid, "student_updates": steps,
                      "objective": np.log1p(steps) * (i + 1)})
        for i, tid in enumerate(["a1", "b2", "c3"])
    )
    out = plots.plot_curves(df.sample(frac=1, random_state=0), tmp_path / "curves.png")
    _assert_png(out)
    with pytest.raises(ValueError, match="trial_id"):
        plots.plot_curves(df.drop(columns="trial_id"), tmp_path / "bad.png")


def _capture(monkeypatch) -> dict:
    """``{"fig": the figure}`` of the next plot, caught as it is saved."""
    seen = {}
    real_save = plots._save

    def spy(fig, path):
        seen["fig"] = fig
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return seen


@pytest.fixture
def crowded() -> pd.DataFrame:
    """14 trials within 3% of the teacher at (1, 1), in teacher units, and vanilla DMD."""
    rng = np.random.default_rng(0)
    rows = [{"trial_id": f"t{i}", "anchor_k": k, "lambda_div": lam, "backbone": "digits-flow",
             "diversity_ratio": 1 + rng.normal(0, 0.015), "quality_score": 1 + rng.normal(0, 0.015)}
            for i, (k, lam) in enumerate((k, lam) for k in (5, 10, 20, 30) for lam in (0.05, 0.2, 0.5, 1.0))][:14]
    rows.append({"trial_id": "dmd", "anchor_k": 5, "lambda_div": 0.0, "backbone": "digits-flow",
                 "diversity_ratio": 0.85, "quality_score": 1.06})
    df = pd.DataFrame(rows)
    df["diversity_score"] = np.where(df["diversity_ratio"] <= 1, df["diversity_ratio"], 2 - df["diversity_ratio"])
    return df


def test_recommended_trial_has_its_own_star_and_legend_entry(tmp_path, crowded, monkeypatch):
    seen = _capture(monkeypatch)
    plots.plot_pareto(crowded, tmp_path / "p.png", x="diversity_ratio", y="quality_score",
                      front_columns=("diversity_score", "quality_score"), teacher_normalised=True,
                      reference_points={"teacher": (1.0, 1.0)}, recommended="t3")
    ax = seen["fig"].axes[0]
    stars = [c for c in ax.collections if c.get_label() == "recommended (highest J on the front)"]
    assert len(stars) == 1
    row = crowded.set_index("trial_id").loc["t3"]
    np.testing.assert_allclose(stars[0].get_offsets(), [[row["diversity_ratio"], row["quality_score"]]])
    assert "recommended (highest J on the front)" in [t.get_text() for t in ax.get_legend().get_texts()]
    plots.plot_pareto(crowded, tmp_path / "q.png", x="diversity_ratio", y="quality_score", recommended=None)
    assert not [c for c in seen["fig"].axes[0].collections if c.get_label().startswith("recommended")]


def test_labels_of_a_crowded_front_do_not_overlap(tmp_path, crowded, monkeypatch):
    seen = _capture(monkeypatch)
    out = plots.plot_pareto(crowded, tmp_path / "crowded.png", x="diversity_ratio", y="quality_score",
                            front_columns=("diversity_score", "quality_score"), teacher_normalised=True,
                            min_quality=0.9, annotate="all", recommended="t3",
                            reference_points={"teacher": (1.0, 1.0), "vanilla DMD (digits-flow)": (0.85, 1.06)})
    _assert_png(out)
    fig = seen["fig"]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()  # the figure as saved
    labels = [t for t in ax.texts if t.get_text().startswith(("K=", "teacher", "vanilla"))]
    assert len(labels) == len(crowded) + 2
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t, renderer) for t in labels]  # the text, without its leader line
    frame = ax.get_window_extent(renderer)
    legend = ax.get_legend().get_window_extent(renderer)
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1, labels[i].get_text()
        assert not a.overlaps(legend), labels[i].get_text()
        for j in range(i):
            assert not a.overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())


def test_a_transient_trial_is_drawn_hollow_and_never_on_the_front(tmp_path, monkeypatch):
    """A trial stopped before objective.min_student_updates (``transient``) would dominate the
    others here; it is drawn apart, with its own legend entry, and the front is the other two."""
    seen = _capture(monkeypatch)
    rows = pd.DataFrame({"diversity_score": [0.99, 0.5, 0.9], "quality_score": [1.2, 1.1, 0.95],
                         "transient": [True, False, False], "below_floor": [False, False, False]})
    plots.plot_pareto(rows, tmp_path / "t.png", x="diversity_score", y="quality_score", annotate="none")
    legend = [t.get_text() for t in seen["fig"].axes[0].get_legend().get_texts()]
    assert "Pareto front (2)" in legend and "stopped before min_student_updates (1)" in legend


def test_a_labels_overlap_with_the_markers_is_the_sum_box_by_box():
    """The markers' boxes are one array (issue 24, section 6: box by box, 10,000 trials' labels
    took minutes to place); the area a label shares with them is what it was, box by box."""
    import numpy as np
    from matplotlib.transforms import Bbox

    from tune.outputs.plots import _overlap, _overlap_all

    rng = np.random.default_rng(0)
    corners = rng.random((200, 2)) * 100
    boxes = np.column_stack([corners, corners + rng.random((200, 2)) * 20])
    label = Bbox.from_extents(30, 40, 70, 55)
    expected = sum(_overlap(label, Bbox.from_extents(*row)) for row in boxes)
    assert _overlap_all(label, boxes) == pytest.approx(expected) and expected > 0
    assert _overlap_all(label, np.zeros((0, 4))) == 0.0

