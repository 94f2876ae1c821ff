"""``curves.png``: each trial's J against student updates, one panel per backbone.

A curve per trial, named by its configuration (K, λ; `tune.outputs.labels`), not by Ray's trial
hash; ASHA's rungs (the student-update milestones at which trials are compared and the lower
part stopped) drawn as vertical lines; each trial's kept student (`tune.outputs.kept`) marked on
its curve, where its checkpoint was written. Reports before ``objective.min_student_updates`` are
left of a shaded band: no student is kept from there.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dpdmd.config import labelled_knobs

from .labels import trial_labels

__all__ = ["curves_figure", "curves_panels"]

MAX_LEGEND = 24  # trials per panel named in its legend; beyond it the legend would cover the curves


def curves_figure(trials: pd.DataFrame, kept: pd.DataFrame, path: str | os.PathLike[str], *,
                  rungs: list[float] | None = None, min_student_updates: int = 0, title: str = "") -> Path:
    """Draw ``curves.png`` at ``path``: ``trials`` (every report, unique: `unique_reports`) as J
    (``objective``) against ``student_updates``, one line per trial; ``kept`` (`kept_reports`)
    marks each trial's kept student; ``rungs`` the milestones to draw (`SchedulerSpec.milestones`; None or
    [] for none, e.g. a FIFO search). Returns ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    curves_panels(trials, kept, rungs=rungs, min_student_updates=min_student_updates, title=title).savefig(out, format="png")
    return out


def curves_panels(trials: pd.DataFrame, kept: pd.DataFrame, *, rungs: list[float] | None = None,
                  min_student_updates: int = 0, title: str = "") -> Figure:
    """`curves_figure`'s figure: a panel per backbone."""
    backbones = sorted(str(b) for b in trials["backbone"].dropna().unique()) if "backbone" in trials else [""]
    columns = 1 if len(backbones) <= 1 else 2
    rows = max(1, math.ceil(len(backbones) / columns))
    fig = Figure(figsize=(9 * columns, 5.5 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for i, backbone in enumerate(backbones):
        ax = fig.add_subplot(rows, columns, i + 1)
        mine = trials if not backbone else trials[trials["backbone"].astype(str) == backbone]
        _panel(ax, mine, kept, backbone, rungs or [], min_student_updates)
    if trials.empty:
        fig.axes[0].text(0.5, 0.5, "no reports", transform=fig.axes[0].transAxes, ha="center")
    fig.suptitle(title or "J against student updates, per trial (named by configuration)", fontsize=12)
    return fig


def _panel(ax, reports: pd.DataFrame, kept: pd.DataFrame, backbone: str, rungs: list[float], min_updates: int) -> None:
    trials = int(reports["trial_id"].nunique()) if not reports.empty else 0
    if trials > MAX_LEGEND:  # unnamed curves: one collection, not an artist (and a filter) per trial
        _many_curves(ax, reports, kept)
    labels = trial_labels(reports) if 0 < trials <= MAX_LEGEND else {}
    kept_by_trial = kept.set_index(kept["trial_id"].astype(str)) if not kept.empty else kept
    cmap = _colours(len(labels))
    for colour, trial in zip(cmap, _in_knob_order(reports) if labels else []):
        label = labels[trial]
        part = reports[reports["trial_id"].astype(str) == trial].sort_values("student_updates")
        x = part["student_updates"].to_numpy(dtype=float)
        y = part["objective"].to_numpy(dtype=float, na_value=np.nan)
        y = np.where(np.isfinite(y), y, np.nan)  # -inf (a diverged report) cannot be drawn
        ax.plot(x, y, marker="." if len(part) < 40 else None, lw=1.2, color=colour, label=label)
        if trial in kept_by_trial.index and bool(kept_by_trial.loc[trial].get("kept", True)):
            row = kept_by_trial.loc[trial]
            ax.scatter([float(row["student_updates"])], [float(row["objective"])], marker="*", s=150, color=colour,
                       edgecolors="black", linewidths=0.7, zorder=4)
    ax.scatter([], [], marker="*", s=150, color="white", edgecolors="black", label="kept student (its checkpoint)")
    for milestone in rungs:
        ax.axvline(milestone, color="dimgray", lw=0.8, ls=":", zorder=1)
        ax.annotate(f"rung {milestone:g}", (milestone, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -10),
                    textcoords="offset points", fontsize=7, color="dimgray", rotation=90, va="top")
    if min_updates > 0:
        ax.axvspan(0, min_updates, color="lightgray", alpha=0.3, lw=0,
                   label=f"before min_student_updates ({min_updates}): nothing kept")
    ax.axhline(1.0, color="tab:orange", lw=0.8, ls=":")  # J = 1: as diverse and as good as the teacher
    ax.set_xlabel("student updates" + (" (dotted: ASHA's rungs)" if rungs else ""))
    ax.set_ylabel("J (1 = the teacher)")
    ax.set_title(f"{backbone + ': ' if backbone else ''}{trials} trials")
    ax.grid(True, alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if trials <= MAX_LEGEND:
        ax.legend(handles, names, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, title="K, λ")
    else:  # the curves have no names: the legend says what the marks are
        ax.legend(handles, names, loc="lower right", fontsize=7)


def _many_curves(ax, reports: pd.DataFrame, kept: pd.DataFrame) -> None:
    """More trials than a legend names: every trial's curve (its reports by student updates, the
    trials in knob order) as one `LineCollection`, each kept student one star of its curve's
    colour in one scatter, from one sort of the reports. A filter of the reports and a Line2D per
    trial grew with trials x reports: 10,000 trials took minutes for this figure alone."""
    from matplotlib.collections import LineCollection

    order = {t: i for i, t in enumerate(_in_knob_order(reports))}
    rank = reports["trial_id"].astype(str).map(order).to_numpy()
    sort = np.lexsort((reports["student_updates"].to_numpy(dtype=float), rank))
    x = reports["student_updates"].to_numpy(dtype=float)[sort]
    y = reports["objective"].to_numpy(dtype=float, na_value=np.nan)[sort]
    y = np.where(np.isfinite(y), y, np.nan)  # -inf (a diverged report) cannot be drawn
    starts = np.flatnonzero(np.diff(rank[sort])) + 1
    lines = np.split(np.column_stack([x, y]), starts)
    cmap = _colours(20)
    colours = [cmap[i % len(cmap)] for i in range(len(lines))]
    ax.add_collection(LineCollection(lines, colors=colours, linewidths=0.8, alpha=0.6))
    if not kept.empty:
        mine = kept[kept["trial_id"].astype(str).isin(order)]
        if "kept" in mine:
            mine = mine[mine["kept"].astype(bool)]
        where = mine["trial_id"].astype(str).map(order).to_numpy()
        ax.scatter(mine["student_updates"].to_numpy(dtype=float), mine["objective"].to_numpy(dtype=float),
                   marker="*", s=40, c=[cmap[i % len(cmap)] for i in where], edgecolors="black", linewidths=0.4,
                   zorder=4)
    ax.autoscale_view()


def _in_knob_order(reports: pd.DataFrame) -> list[str]:
    """The trial ids of ``reports`` by their labelled knobs' values (K, then λ), then id."""
    first = reports.drop_duplicates("trial_id")
    knobs = [name for name, _ in labelled_knobs() if name in first]
    return [str(t) for t in first.sort_values([*knobs, "trial_id"], kind="stable")["trial_id"]]


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]
