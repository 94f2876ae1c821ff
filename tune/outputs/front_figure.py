"""``pareto.png``: one panel per backbone, in the front's own axes, and the raw-units comparison.

Each backbone's panel plots its trials' kept students (`tune.outputs.kept`; a trial that kept none
by its last report, marked as below the floor or transient) in (diversity_score, quality_score):
the plane the front is computed in, so a point that looks dominating is. The teacher sits at
(1, 1), the fidelity floor is a dashed line, every point is labelled by its configuration (K, λ),
the front is joined by its staircase, the recommended student starred and vanilla DMD marked.
Where one evaluator scored several backbones alike (``summary["raw_comparison"]``), one more
panel per such group sets their kept students side by side in raw units, each teacher's raw
scores marked: comparable there, unlike the teacher-normalised panels.
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

from .plots import Label, draw_pareto, place_labels
from .labels import config_label

__all__ = ["pareto_figure", "pareto_panels"]

SCORE_AXES = ("diversity_score", "quality_score")
KNOB_LABELS = tuple((name, f"{label}=") for name, label in labelled_knobs())  # "K=10 λ=0.05"
MAX_LABELLED = 30  # more trials on a panel than this: only the front is labelled (21 read well; more pile up)
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def pareto_figure(kept: pd.DataFrame, summary: dict, path: str | os.PathLike[str]) -> Path:
    """Draw ``pareto.png`` at ``path`` from ``kept`` (one row per trial, `kept_reports`, possibly
    `rescored`) and ``summary`` (``recommended``, ``raw_comparison``, ``min_quality``, ``space``:
    `tune.outputs.front.front_summary`); returns ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pareto_panels(kept, summary).savefig(out, format="png")
    return out


def pareto_panels(kept: pd.DataFrame, summary: dict) -> Figure:
    """`pareto_figure`'s figure: a panel per backbone, then one per raw-units group."""
    backbones = sorted(str(b) for b in kept["backbone"].dropna().unique()) if "backbone" in kept else []
    groups = list((summary.get("raw_comparison") or {}).values())
    panels = len(backbones) + len(groups)
    columns = 1 if panels <= 1 else 2
    rows = max(1, math.ceil(panels / columns))
    fig = Figure(figsize=(8.5 * columns, 6.5 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, columns, i + 1) for i in range(max(panels, 1))]
    placed = []
    for ax, backbone in zip(axes, backbones):
        placed.append((ax, _backbone_panel(ax, kept[kept["backbone"].astype(str) == backbone], backbone, summary)))
    for ax, group in zip(axes[len(backbones):], groups):
        placed.append((ax, _raw_panel(ax, kept, group, summary)))
    if not panels:
        axes[0].text(0.5, 0.5, "no trial reported", transform=axes[0].transAxes, ha="center")
    redrawn = summary.get("recomputed")
    fig.suptitle(f"{summary.get('space', 'search')}: one front per backbone (each in its own teacher's units)"
                 + (" and raw units where one evaluator scored several" if groups else "")
                 + (f"\nredrawn by tune.front: floor {redrawn.get('min_quality')}, diversity weight "
                    f"{redrawn.get('diversity_weight')}, over the students the search kept" if redrawn else ""), fontsize=12)
    for ax, labels in placed:
        place_labels(fig, ax, labels)
    return fig


def _backbone_panel(ax, rows: pd.DataFrame, backbone: str, summary: dict) -> list[Label]:
    pick = (summary.get("recommended") or {}).get(backbone) or {}
    references = {"teacher (1, 1)": (1.0, 1.0)}
    dmd = _vanilla_point(rows)
    if dmd is not None:
        references["vanilla DMD"] = dmd
    shown = rows.assign(**{c: rows[c].astype(float) for c in SCORE_AXES})
    labels = draw_pareto(
        ax, shown, x="diversity_score", y="quality_score", label_columns=KNOB_LABELS, reference_points=references,
        title=f"{backbone}: {len(rows)} trials, each by its kept student", teacher_normalised=True, folded=True,
        annotate="all" if len(rows) <= MAX_LABELLED else "front", min_quality=summary.get("min_quality"),
        recommended=pick.get("trial_id"))
    return _thinned(ax, labels, [(pick.get("diversity_score"), pick.get("quality_score"))])


def _thinned(ax, labels: list[Label], picks: list[tuple]) -> list[Label]:
    """The point labels worth placing: a text repeated at one point (trials of one configuration)
    once, and beyond `MAX_LABELLED` the recommended students' (at ``picks``) and the rest evenly
    spread by x; the bold ones (teacher, vanilla DMD) always; the panel's title says how many.
    A front of 427 at 10,000 trials overlapped whatever the places, and placing its labels grew
    with labels x (labels + markers): 35 s for pareto.png."""
    fixed = [label for label in labels if label.bold]
    points = [label for label in labels if not label.bold]
    unique = list(dict.fromkeys(points))  # in order, each once
    if len(unique) > MAX_LABELLED:
        by_x = sorted(range(len(unique)), key=lambda i: unique[i].point)
        chosen = {by_x[i] for i in np.linspace(0, len(unique) - 1, MAX_LABELLED).round().astype(int)}
        for pick in (p for p in picks if None not in p):  # the recommended student's label, once
            chosen |= set([i for i in by_x if np.allclose(unique[i].point, pick)][:1])
        unique = [label for i, label in enumerate(unique) if i in chosen]
    if len(unique) < len(points):
        ax.set_title(f"{ax.get_title()}\n({len(unique)} of {len(points)} point labels: a repeat at one point once, "
                     f"{MAX_LABELLED} at most)", fontsize=10)
    return fixed + unique


def _vanilla_point(rows: pd.DataFrame) -> tuple[float, float] | None:
    """The vanilla-DMD trial's kept student in the panel's axes (its last report if none was kept)."""
    from .front import vanilla_dmd_rows

    dmd = rows[vanilla_dmd_rows(rows)]
    if dmd.empty:
        return None
    best = dmd.sort_values(["kept", "student_updates"] if "kept" in dmd else ["student_updates"]).iloc[-1]
    point = (float(best["diversity_score"]), float(best["quality_score"]))
    return point if np.isfinite(point).all() else None


def _raw_panel(ax, kept: pd.DataFrame, group: dict, summary: dict) -> list[Label]:
    """Kept students of the group's backbones in raw (diversity, quality); front members larger and
    labelled, each teacher a diamond, each recommended student a star, colour per backbone."""
    labels = []
    for colour, backbone in zip(_COLOURS * 4, group["backbones"]):
        rows = kept[(kept["backbone"].astype(str) == backbone) & kept.get("kept", True)]
        front_ids = {str(r["trial_id"]) for r in group["fronts"].get(backbone, [])}
        on_front = rows["trial_id"].astype(str).isin(front_ids).to_numpy()
        x, y = rows["diversity"].to_numpy(dtype=float), rows["quality"].to_numpy(dtype=float)
        ax.scatter(x[~on_front], y[~on_front], s=24, c=colour, alpha=0.45, label=f"{backbone}: kept students")
        ax.scatter(x[on_front], y[on_front], s=60, c=colour, edgecolors="black", zorder=3,
                   label=f"{backbone}: its front ({int(on_front.sum())})")
        teacher = (group.get("teacher") or {}).get(backbone)
        if teacher:
            ax.scatter([teacher["diversity"]], [teacher["quality"]], marker="D", s=110, c=colour, edgecolors="black",
                       zorder=4, label=f"{backbone}: teacher")
            labels.append(Label(f"teacher {backbone}", (teacher["diversity"], teacher["quality"]), "black", bold=True))
        pick = (summary.get("recommended") or {}).get(backbone)
        if pick and pick.get("diversity") is not None and pick.get("quality") is not None:
            ax.scatter([pick["diversity"]], [pick["quality"]], marker="*", s=320, c="gold", edgecolors="black",
                       zorder=5)
        for row, x_i, y_i in zip(rows[on_front].to_dict("records"), x[on_front], y[on_front]):
            labels.append(Label(config_label(row), (float(x_i), float(y_i)), colour))
    ax.set_xlabel(f"diversity (raw, {group['evaluator']} evaluator: comparable across {', '.join(group['backbones'])})")
    ax.set_ylabel(f"quality (raw, {group['evaluator']}: {group['quality_metric']})")
    ax.set_title("raw units, across backbones: one evaluator with the same settings scored them\n"
                 "(the teacher-normalised panels do not compare across backbones; gold star = recommended)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    picks = [(p.get("diversity"), p.get("quality")) for p in (summary.get("recommended") or {}).values() if p]
    return _thinned(ax, labels, picks)
