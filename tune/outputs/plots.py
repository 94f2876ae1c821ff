"""PNG plots of a search's results: the diversity/quality Pareto front and learning curves.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), not
through ``pyplot``: no display is needed, the process-wide backend is left alone, and no
figure is kept alive in pyplot's registry after saving.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dpdmd.config import labelled_knobs

from ..pareto import off_front, pareto_front_mask

__all__ = ["DEFAULT_LABEL_COLUMNS", "Label", "draw_pareto", "place_labels", "plot_curves", "plot_pareto"]

#: ``(column, prefix)`` pairs that build a point's label, e.g. "K=10 λ=0.05 digits-flow".
DEFAULT_LABEL_COLUMNS: tuple[tuple[str, str], ...] = (
    *((name, f"{label}=") for name, label in labelled_knobs()),  # the knobs dpdmd labels: K, λ
    ("backbone", ""),
)

_REFERENCE_MARKERS = ("D", "P", "X", "^", "v", "s")  # the star is the recommended trial's
# Where a label may sit, in points from its point, nearest first: right, above, left, below, then
# the diagonals, at growing distances (`place_labels` takes the first that overlaps nothing).
_LABEL_DISTANCES = (4, 10, 18, 28, 40, 55)
_LABEL_DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))
_LEADER_FROM = 12  # points: a label placed farther than this is joined to its point by a thin line


def _format_value(value: object) -> str | None:
    """Short text for one label value; None for missing values (NaN, None)."""
    if value is None:
        return None
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return f"{value:g}"
    return str(value)


def _point_label(row: pd.Series, label_columns: Sequence[str | tuple[str, str]]) -> str:
    """Join ``prefix + value`` for each label column present in ``row`` and not missing."""
    parts = []
    for item in label_columns:
        column, prefix = (item, f"{item}=") if isinstance(item, str) else item
        if column not in row.index:
            continue
        text = _format_value(row[column])
        if text is not None:
            parts.append(f"{prefix}{text}")
    return " ".join(parts)


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what}: column(s) {missing} not in the DataFrame (columns: {list(df.columns)}); "
            "pass the right names with x=..., y=... (or group=...)."
        )


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, format="png")
    return out


def plot_pareto(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    x: str = "diversity",
    y: str = "quality",
    label_columns: Sequence[str | tuple[str, str]] = DEFAULT_LABEL_COLUMNS,
    reference_points: Mapping[str, tuple[float, float]] | None = None,
    title: str | None = None,
    annotate: Literal["all", "front", "none"] = "all",
    teacher_normalised: bool = False,
    folded: bool = False,
    min_quality: float | None = None,
    front_columns: tuple[str, str] | None = None,
    recommended: str | None = None,
) -> Path:
    """Scatter every trial in ``(x, y)``, highlight the Pareto front, save a PNG.

    Both axes are maximised (see ``tune.pareto``). Front points are drawn larger and joined by
    the staircase that bounds the dominated region; trials with a NaN/inf objective are left
    out (they cannot be placed).

    Args:
        df: one row per trial, with columns ``x`` and ``y`` and optionally the label columns.
        path: where the PNG goes; parent folders are created.
        x, y: objective columns (dimensionless scores, higher is better).
        label_columns: what each point's text is made of, in order. An item is a column name
            (shown as ``name=value``) or a ``(column, prefix)`` pair (shown as
            ``prefix + value``). Absent columns and missing values are skipped.
        reference_points: named fixed points drawn as distinct markers, e.g.
            ``{"teacher": (0.08, 0.95), "vanilla DMD": (0.03, 0.96)}``.
        title: figure title; default ``"Pareto front: {y} vs {x}"``.
        annotate: label every trial, only the front, or none (many trials clutter).
        teacher_normalised: x, y are teacher-normalised scores (`tune.trial.objective`): the region
            beyond the teacher's diversity (x > 1, where diversity_score = 2 - x) is shaded, and
            each front member's label shows its y (its fidelity to the teacher's).
        folded: with ``teacher_normalised``, x is the folded ``diversity_score`` itself (at most
            1, the teacher's): nothing lies beyond the teacher, so nothing is shaded.
        min_quality: the fidelity floor: a dashed line at y = min_quality; rows with a true
            ``below_floor`` column are greyed and never on the front; rows with a true
            ``transient`` column (shown before ``objective.min_student_updates``) are drawn hollow
            and never on the front either.
        front_columns: the columns the front is computed on when they are not (x, y), e.g.
            x = D / D_teacher shown, the front over diversity_score; the front members are then
            highlighted without the staircase (it bounds a region of the other plane).
        recommended: the ``trial_id`` of the recommended trial: drawn as a gold star with its own
            legend entry ("recommended: ...").

    Labels are placed so that they overlap neither each other, the reference points' labels nor
    the legend (`place_labels`: the nearest free spot around each point, greedily).

    Returns:
        ``path`` as a ``Path``.
    """
    fig = Figure(figsize=(8, 6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = draw_pareto(ax, df, x=x, y=y, label_columns=label_columns, reference_points=reference_points,
                         title=title, annotate=annotate, teacher_normalised=teacher_normalised, folded=folded,
                         min_quality=min_quality, front_columns=front_columns, recommended=recommended)
    place_labels(fig, ax, labels)
    return _save(fig, path)


def draw_pareto(ax, df: pd.DataFrame, *, x: str = "diversity", y: str = "quality",
                label_columns: Sequence[str | tuple[str, str]] = DEFAULT_LABEL_COLUMNS,
                reference_points: Mapping[str, tuple[float, float]] | None = None, title: str | None = None,
                annotate: Literal["all", "front", "none"] = "all", teacher_normalised: bool = False,
                folded: bool = False, min_quality: float | None = None,
                front_columns: tuple[str, str] | None = None, recommended: str | None = None) -> list["Label"]:
    """`plot_pareto`'s drawing on the matplotlib axes ``ax`` (its arguments), without the labels:
    returns them, for `place_labels` once the figure's layout is settled (several panels)."""
    _require_columns(df, (x, y), "plot_pareto")
    if annotate not in ("all", "front", "none"):
        raise ValueError(f"annotate must be 'all', 'front' or 'none', got {annotate!r}.")
    data = df.reset_index(drop=True)
    xy, finite, below, transient, on_front = _classify(data, x, y, front_columns)
    if teacher_normalised:
        _draw_teacher_regions(ax, min_quality, beyond=not folded)
    _draw_points(ax, xy, finite, below, transient, on_front, staircase=front_columns is None)
    _draw_recommended(ax, data, xy, finite, recommended)
    _draw_reference_points(ax, reference_points or {})
    if not finite.any() and not reference_points:
        ax.text(0.5, 0.5, "no finite trials", transform=ax.transAxes, ha="center")
    if teacher_normalised and folded:
        ax.set_xlabel("diversity_score (D / D_teacher, folded at 1: 2 - D / D_teacher beyond the teacher)")
    else:
        ax.set_xlabel("D / D_teacher (1 = the teacher's diversity)" if teacher_normalised else f"{x} (higher is better)")
    ax.set_ylabel(f"{y} (fidelity / the teacher's)" if teacher_normalised else f"{y} (higher is better)")
    ax.set_title(title if title is not None else f"Pareto front: {y} vs {x}")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    labels = [Label(name, point, "black", bold=True) for name, point in (reference_points or {}).items()]
    if annotate != "none":
        labels += _labels(data, xy, on_front if annotate == "front" else finite, on_front, label_columns,
                          show_fidelity=teacher_normalised)
    return labels


def _classify(data: pd.DataFrame, x: str, y: str, front_columns: tuple[str, str] | None):
    """Each row's place: ``xy`` (n, 2) float, and boolean masks (n,) ``finite`` (both objectives
    finite), ``below`` (a true ``below_floor`` column), ``transient`` (a true ``transient`` column;
    neither is ever on the front) and ``on_front`` (over ``front_columns`` when given, else (x, y))."""
    xy = data[[x, y]].to_numpy(dtype=np.float64, na_value=np.nan)
    transient = data["transient"].to_numpy(dtype=bool) if "transient" in data else np.zeros(len(data), bool)
    excluded = off_front(data)
    ranked = xy if front_columns is None else data[list(front_columns)].to_numpy(dtype=np.float64, na_value=np.nan)
    on_front = pareto_front_mask(np.where(excluded[:, None], np.nan, ranked))
    return xy, np.isfinite(xy).all(axis=1), excluded & ~transient, transient, on_front


def _draw_points(ax, xy: np.ndarray, finite: np.ndarray, below: np.ndarray, transient: np.ndarray,
                 on_front: np.ndarray, *,
                 staircase: bool) -> None:
    """Dominated points grey, those below the floor crossed out, those stopped before
    min_student_updates hollow, the front red (joined by its staircase when the front is over
    the plotted plane)."""
    rest = finite & ~on_front & ~below & ~transient
    n_bad = int((~finite).sum())
    ax.scatter(xy[rest, 0], xy[rest, 1], s=28, c="tab:gray", alpha=0.7,
               label=f"dominated ({int(rest.sum())})"
               + (f"; {n_bad} NaN/inf not shown" if n_bad else ""))
    if (finite & below).any():
        ax.scatter(xy[finite & below, 0], xy[finite & below, 1], s=28, c="lightgray", marker="x",
                   label=f"below the fidelity floor ({int((finite & below).sum())})")
    if (finite & transient).any():
        ax.scatter(xy[finite & transient, 0], xy[finite & transient, 1], s=28, facecolors="none",
                   edgecolors="tab:gray", label=f"stopped before min_student_updates ({int((finite & transient).sum())})")
    if on_front.any():
        front = xy[on_front]
        front = front[np.lexsort((-front[:, 1], front[:, 0]))]  # x ascending
        # "pre": between two front points the best attainable y is the right-hand point's,
        # which draws the boundary of the dominated region (maximisation).
        if staircase:
            ax.step(front[:, 0], front[:, 1], where="pre", color="tab:red", lw=1.5, zorder=2)
        ax.scatter(front[:, 0], front[:, 1], s=60, c="tab:red", edgecolors="black",
                   zorder=3, label=f"Pareto front ({int(on_front.sum())})")


@dataclass(frozen=True)
class Label:
    """A point's text: ``point`` (x, y) in data units, its colour, bold for the reference points."""

    text: str
    point: tuple[float, float]
    colour: str
    bold: bool = False


def _labels(data: pd.DataFrame, xy: np.ndarray, shown: np.ndarray, on_front: np.ndarray,
            label_columns: Sequence[str | tuple[str, str]], *, show_fidelity: bool) -> list[Label]:
    """The labels of the ``shown`` rows: front members first (red; with ``show_fidelity`` their y
    too), then the others (grey)."""
    out = []
    for i in sorted(np.flatnonzero(shown), key=lambda i: not on_front[i]):
        text = _point_label(data.iloc[i], label_columns)
        if show_fidelity and on_front[i]:
            text = f"{text} fidelity {xy[i, 1]:.2f}".strip()
        if text:
            out.append(Label(text, (float(xy[i, 0]), float(xy[i, 1])), "tab:red" if on_front[i] else "dimgray"))
    return out


def place_labels(fig: Figure, ax, labels: list[Label]) -> None:
    """Annotate each label, in order, at the nearest candidate spot around its point
    (`_candidate_offsets`) that stays inside the axes and overlaps no label placed before, no
    other text, the legend or any marker; with no such spot, the one inside the axes that overlaps
    labels least, then markers least. Labels away from their point get a thin leader line.

    The figure is drawn once first, so the layout, the axis limits and the legend's "best" place
    are settled (the legend is then pinned there); the labels take no part in the layout."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # the boxes taken, one row each (x0, y0, x1, y1): a candidate's overlap with them one vectorised sum
    taken = np.array([t.get_window_extent(renderer).extents for t in ax.texts], dtype=float).reshape(-1, 4)
    legend = ax.get_legend()
    if legend is not None:
        box = legend.get_window_extent(renderer)
        legend.set_loc(tuple(ax.transAxes.inverted().transform((box.x0, box.y0))))  # where "best" put it
        taken = np.vstack([taken, box.extents])
    frame, markers = ax.get_window_extent(renderer), _marker_boxes(ax, fig.dpi)
    for label in labels:
        style = dict(fontsize=8 if label.bold else 7, fontweight="bold" if label.bold else "normal")
        probe = ax.annotate(label.text, label.point, xytext=(0, 0), textcoords="offset points", **style)
        best = None
        for rank, (offset, ha, va) in enumerate(_candidate_offsets()):
            probe.set(position=offset, ha=ha, va=va)
            box = probe.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            cost = (not inside, _overlap_all(box, taken), _overlap_all(box, markers), rank)
            if best is None or cost < best[0]:
                best = (cost, offset, ha, va, box)
            if cost[:3] == (False, 0.0, 0.0):
                break
        probe.remove()
        _, offset, ha, va, box = best
        leader = dict(arrowstyle="-", lw=0.5, color=label.colour, shrinkA=0, shrinkB=4)
        ax.annotate(label.text, label.point, xytext=offset, textcoords="offset points", color=label.colour,
                    ha=ha, va=va, arrowprops=leader if np.hypot(*offset) > _LEADER_FROM else None,
                    **style).set_in_layout(False)
        taken = np.vstack([taken, box.extents])


def _candidate_offsets():
    """(offset in points, ha, va) of every spot a label may take around its point, nearest first."""
    for distance in _LABEL_DISTANCES:
        for dx, dy in _LABEL_DIRECTIONS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
            yield (dx * distance, dy * distance), ha, va


def _marker_boxes(ax, dpi: float) -> np.ndarray:
    """Display-space boxes (x0, y0, x1, y1) of every scatter marker of ``ax`` (a square of the
    marker's size), one row each: an array, so a label's overlap with thousands of markers is one
    vectorised sum (a search of 1,000 trials spent 18 s here box by box, 10,000 would spend 30 min)."""
    boxes = [np.zeros((0, 4))]
    for collection in ax.collections:
        offsets, sizes = collection.get_offsets(), collection.get_sizes()
        if len(offsets) == 0 or len(sizes) == 0:
            continue
        centres = np.asarray(collection.get_offset_transform().transform(offsets), dtype=float).reshape(-1, 2)
        half = np.sqrt(np.resize(np.asarray(sizes, dtype=float), len(centres))) / 2 * dpi / 72  # s: area in points^2
        keep = np.isfinite(centres).all(axis=1)
        centres, half = centres[keep], half[keep]
        boxes.append(np.column_stack([centres[:, 0] - half, centres[:, 1] - half,
                                      centres[:, 0] + half, centres[:, 1] + half]))
    return np.concatenate(boxes)


def _overlap_all(a, boxes: np.ndarray) -> float:
    """Area (pixels^2) box ``a`` shares with the boxes (rows x0, y0, x1, y1), added up."""
    width = np.minimum(a.x1, boxes[:, 2]) - np.maximum(a.x0, boxes[:, 0])
    height = np.minimum(a.y1, boxes[:, 3]) - np.maximum(a.y0, boxes[:, 1])
    return float((np.maximum(width, 0.0) * np.maximum(height, 0.0)).sum())


def _overlap(a, b) -> float:
    """Area (pixels^2) shared by two display-space boxes."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(0.0, width) * max(0.0, height)


def _draw_recommended(ax, data: pd.DataFrame, xy: np.ndarray, finite: np.ndarray, recommended: str | None) -> None:
    """The recommended trial (``trial_id`` == ``recommended``) as a gold star over its point."""
    if recommended is None or "trial_id" not in data:
        return
    rows = np.flatnonzero((data["trial_id"].astype(str) == str(recommended)).to_numpy() & finite)
    if rows.size:
        i = rows[0]
        ax.scatter([xy[i, 0]], [xy[i, 1]], marker="*", s=320, c="gold", edgecolors="black", linewidths=0.8,
                   zorder=5, label="recommended (highest J on the front)")


def _draw_reference_points(ax, reference_points: Mapping[str, tuple[float, float]]) -> None:
    """Each reference point as its own marker with a legend entry (its label is placed with the others)."""
    for k, (name, (rx, ry)) in enumerate(reference_points.items()):
        marker = _REFERENCE_MARKERS[k % len(_REFERENCE_MARKERS)]
        ax.scatter([rx], [ry], marker=marker, s=110, edgecolors="black", zorder=4, label=name)


def _draw_teacher_regions(ax, min_quality: float | None, *, beyond: bool = True) -> None:
    """Teacher-normalised axes: the teacher's diversity (x = 1), the region beyond it shaded
    (``beyond``: x is D / D_teacher, not the folded score), the floor line."""
    ax.axvline(1.0, color="tab:orange", lw=0.8, ls=":")
    if beyond:
        ax.axvspan(1.0, 2.0, color="tab:orange", alpha=0.08, lw=0)
        ax.annotate("beyond the teacher's diversity:\nscored 2 - D/D_T (noise looks diverse)", (1.0, 0.02),
                    xycoords=("data", "axes fraction"), xytext=(4, 0), textcoords="offset points",
                    fontsize=7, color="tab:orange").set_in_layout(False)
    if min_quality:
        ax.axhline(min_quality, color="dimgray", lw=0.8, ls="--",
                   label=f"fidelity floor (quality_score {min_quality:g})")


def plot_curves(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    x: str = "student_updates",
    y: str = "objective",
    group: str = "trial_id",
    title: str | None = None,
    max_legend: int = 20,
) -> Path:
    """One line of ``y`` against ``x`` per ``group`` value (a learning curve per trial).

    Args:
        df: long format, one row per report: columns ``x``, ``y``, ``group``.
        path: where the PNG goes; parent folders are created.
        x: step column (e.g. student updates), y: metric column.
        group: column that identifies a curve (e.g. Ray Tune's ``trial_id``).
        title: figure title; default ``"{y} per {group}"``.
        max_legend: the legend is drawn only for at most this many curves.

    Returns:
        ``path`` as a ``Path``.
    """
    _require_columns(df, (x, y, group), "plot_curves")
    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    groups = list(df.groupby(group, sort=True))
    for key, part in groups:
        part = part.sort_values(x)
        ax.plot(part[x].to_numpy(dtype=np.float64, na_value=np.nan),
                part[y].to_numpy(dtype=np.float64, na_value=np.nan),
                marker="." if len(part) < 30 else None, lw=1.2, label=str(key))
    if not groups:
        ax.text(0.5, 0.5, "no reports", transform=ax.transAxes, ha="center")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title if title is not None else f"{y} per {group}")
    ax.grid(True, alpha=0.3)
    if 0 < len(groups) <= max_legend:
        ax.legend(loc="best", fontsize=7, title=group)
    return _save(fig, path)
