"""PNG plots of a search's results: the diversity/quality Pareto front and learning curves.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), not
through ``pyplot``: no display is needed, the process-wide backend is left alone, and no
figure is kept alive in pyplot's registry after saving.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dpdmd.config import labelled_knobs

from .pareto import pareto_front_mask

__all__ = ["DEFAULT_LABEL_COLUMNS", "plot_curves", "plot_pareto"]

#: ``(column, prefix)`` pairs that build a point's label, e.g. "K=10 λ=0.05 digits-flow".
DEFAULT_LABEL_COLUMNS: tuple[tuple[str, str], ...] = (
    *((name, f"{label}=") for name, label in labelled_knobs()),  # the knobs dpdmd labels: K, λ
    ("backbone", ""),
)

_REFERENCE_MARKERS = ("*", "D", "P", "X", "^", "v", "s")


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
    min_quality: float | None = None,
    front_columns: tuple[str, str] | None = None,
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
        teacher_normalised: x, y are teacher-normalised scores (`tune.objective`): the region
            beyond the teacher's diversity (x > 1, where diversity_score = 2 - x) is shaded, and
            each front member's label shows its y (its fidelity to the teacher's).
        min_quality: the fidelity floor: a dashed line at y = min_quality; rows with a true
            ``below_floor`` column are greyed and never on the front.
        front_columns: the columns the front is computed on when they are not (x, y), e.g.
            x = D / D_teacher shown, the front over diversity_score; the front members are then
            highlighted without the staircase (it bounds a region of the other plane).

    Returns:
        ``path`` as a ``Path``.
    """
    _require_columns(df, (x, y), "plot_pareto")
    if annotate not in ("all", "front", "none"):
        raise ValueError(f"annotate must be 'all', 'front' or 'none', got {annotate!r}.")
    data = df.reset_index(drop=True)
    xy, finite, below, on_front = _classify(data, x, y, front_columns)
    fig = Figure(figsize=(8, 6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    if teacher_normalised:
        _draw_teacher_regions(ax, min_quality)
    _draw_points(ax, xy, finite, below, on_front, staircase=front_columns is None)
    if annotate != "none":
        _annotate_points(ax, data, xy, on_front if annotate == "front" else finite, on_front, label_columns,
                         show_fidelity=teacher_normalised)
    _draw_reference_points(ax, reference_points or {})
    if not finite.any() and not reference_points:
        ax.text(0.5, 0.5, "no finite trials", transform=ax.transAxes, ha="center")
    ax.set_xlabel("D / D_teacher (1 = the teacher's diversity)" if teacher_normalised else f"{x} (higher is better)")
    ax.set_ylabel(f"{y} (fidelity / the teacher's)" if teacher_normalised else f"{y} (higher is better)")
    ax.set_title(title if title is not None else f"Pareto front: {y} vs {x}")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def _classify(data: pd.DataFrame, x: str, y: str, front_columns: tuple[str, str] | None):
    """Each row's place: ``xy`` (n, 2) float, and boolean masks (n,) ``finite`` (both objectives
    finite), ``below`` (a true ``below_floor`` column: never on the front) and ``on_front`` (over
    ``front_columns`` when given, else over (x, y))."""
    xy = data[[x, y]].to_numpy(dtype=np.float64, na_value=np.nan)
    below = data["below_floor"].to_numpy(dtype=bool) if "below_floor" in data else np.zeros(len(data), bool)
    ranked = xy if front_columns is None else data[list(front_columns)].to_numpy(dtype=np.float64, na_value=np.nan)
    on_front = pareto_front_mask(np.where(below[:, None], np.nan, ranked))
    return xy, np.isfinite(xy).all(axis=1), below, on_front


def _draw_points(ax, xy: np.ndarray, finite: np.ndarray, below: np.ndarray, on_front: np.ndarray, *,
                 staircase: bool) -> None:
    """Dominated points grey, those below the floor crossed out, the front red (joined by its
    staircase when the front is over the plotted plane)."""
    rest = finite & ~on_front & ~below
    n_bad = int((~finite).sum())
    ax.scatter(xy[rest, 0], xy[rest, 1], s=28, c="tab:gray", alpha=0.7,
               label=f"dominated ({int(rest.sum())})"
               + (f"; {n_bad} NaN/inf not shown" if n_bad else ""))
    if (finite & below).any():
        ax.scatter(xy[finite & below, 0], xy[finite & below, 1], s=28, c="lightgray", marker="x",
                   label=f"below the fidelity floor ({int((finite & below).sum())})")
    if on_front.any():
        front = xy[on_front]
        front = front[np.lexsort((-front[:, 1], front[:, 0]))]  # x ascending
        # "pre": between two front points the best attainable y is the right-hand point's,
        # which draws the boundary of the dominated region (maximisation).
        if staircase:
            ax.step(front[:, 0], front[:, 1], where="pre", color="tab:red", lw=1.5, zorder=2)
        ax.scatter(front[:, 0], front[:, 1], s=60, c="tab:red", edgecolors="black",
                   zorder=3, label=f"Pareto front ({int(on_front.sum())})")


def _annotate_points(ax, data: pd.DataFrame, xy: np.ndarray, shown: np.ndarray, on_front: np.ndarray,
                     label_columns: Sequence[str | tuple[str, str]], *, show_fidelity: bool) -> None:
    """Label the ``shown`` rows (front members in red; with ``show_fidelity`` their y too)."""
    for i in np.flatnonzero(shown):
        text = _point_label(data.iloc[i], label_columns)
        if show_fidelity and on_front[i]:
            text = f"{text} fidelity {xy[i, 1]:.2f}".strip()
        if text:
            ax.annotate(text, (xy[i, 0], xy[i, 1]), xytext=(4, 4),
                        textcoords="offset points", fontsize=7,
                        color="tab:red" if on_front[i] else "dimgray")


def _draw_reference_points(ax, reference_points: Mapping[str, tuple[float, float]]) -> None:
    for k, (name, (rx, ry)) in enumerate(reference_points.items()):
        marker = _REFERENCE_MARKERS[k % len(_REFERENCE_MARKERS)]
        ax.scatter([rx], [ry], marker=marker, s=140, edgecolors="black", zorder=4,
                   label=name)
        ax.annotate(name, (rx, ry), xytext=(6, -10), textcoords="offset points",
                    fontsize=8, fontweight="bold")


def _draw_teacher_regions(ax, min_quality: float | None) -> None:
    """Teacher-normalised axes: shade diversity beyond the teacher's, draw the floor line."""
    ax.axvspan(1.0, 2.0, color="tab:orange", alpha=0.08, lw=0)
    ax.axvline(1.0, color="tab:orange", lw=0.8, ls=":")
    ax.annotate("beyond the teacher's diversity:\nscored 2 - D/D_T (noise looks diverse)", (1.0, 0.02),
                xycoords=("data", "axes fraction"), xytext=(4, 0), textcoords="offset points",
                fontsize=7, color="tab:orange")
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
