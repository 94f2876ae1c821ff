"""Two searches lined up, backbone by backbone (``python -m tune.front --compare RUN_A RUN_B``).

For each backbone either search has: both fronts in one panel of (diversity_score,
quality_score), each search's recommended student starred, and a table of the fronts'
hypervolumes, the recommended students (configuration, scores, J) and the compute each search
spent (student updates, wall time, teacher evaluations). Teacher-normalised units compare
between the two searches only where the same evaluator settings scored them (the same teacher
scores): where the fingerprints of ``summary["evaluation"]`` differ, the table says so.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .plots import Label, place_labels
from .labels import config_label

__all__ = ["compare_figure", "compare_table"]

_STYLE = ({"colour": "tab:red", "marker": "o"}, {"colour": "tab:blue", "marker": "s"})


def _backbones(summaries: list[dict]) -> list[str]:
    return sorted({b for s in summaries for b in (s.get("fronts") or {})})


def compare_table(names: list[str], summaries: list[dict]) -> pd.DataFrame:
    """One row per (backbone, search): ``front`` size, ``hypervolume``, the ``recommended``
    student's label, ``J``, ``diversity_score``, ``quality_score``, the search's ``student_updates``,
    ``wall_seconds`` and ``teacher_calls`` spent, and ``same_evaluator`` (its evaluation settings
    against the first search's; None where either did not record them)."""
    rows = []
    for backbone in _backbones(summaries):
        first = ((summaries[0].get("evaluation") or {}).get(backbone) or {}).get("fingerprint")
        for name, summary in zip(names, summaries):
            front = (summary.get("fronts") or {}).get(backbone)
            pick = (summary.get("recommended") or {}).get(backbone) or {}
            compute = summary.get("compute") or {}
            mine = ((summary.get("evaluation") or {}).get(backbone) or {}).get("fingerprint")
            rows.append({"backbone": backbone, "search": name,
                         "front": None if front is None else len(front),
                         "hypervolume": (summary.get("hypervolume") or {}).get(backbone),
                         "recommended": config_label(pick) if pick else None,
                         "trial": pick.get("trial_id"), "J": pick.get("objective"),
                         "diversity_score": pick.get("diversity_score"), "quality_score": pick.get("quality_score"),
                         "student_updates": compute.get("student_updates"), "wall_seconds": compute.get("wall_seconds"),
                         "teacher_calls": compute.get("teacher_calls_spent"),
                         "same_evaluator": None if first is None or mine is None else first == mine})
    return pd.DataFrame(rows)


def compare_figure(names: list[str], summaries: list[dict], path: str | os.PathLike[str]) -> Path:
    """One panel per backbone: each search's front (its staircase and points), its recommended
    student starred, the teacher at (1, 1), the fidelity floor of each search; returns ``path``."""
    backbones = _backbones(summaries) or [""]
    columns = 1 if len(backbones) == 1 else 2
    rows = math.ceil(len(backbones) / columns)
    fig = Figure(figsize=(8 * columns, 6 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    placed = []
    for i, backbone in enumerate(backbones):
        ax = fig.add_subplot(rows, columns, i + 1)
        labels = [Label("teacher (1, 1)", (1.0, 1.0), "black", bold=True)]
        ax.scatter([1.0], [1.0], marker="D", s=110, c="tab:orange", edgecolors="black", zorder=4, label="teacher")
        for name, summary, style in zip(names, summaries, _STYLE):
            labels += _draw_front(ax, name, summary, backbone, style)
        ax.set_xlabel("diversity_score (D / D_teacher, folded at 1)")
        ax.set_ylabel("quality_score (fidelity / the teacher's)")
        ax.set_title(f"{backbone}: {' vs '.join(names)}")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        placed.append((ax, labels))
    fig.suptitle("two searches, one front each per backbone (gold-edged star: each search's recommended student)")
    for ax, labels in placed:
        place_labels(fig, ax, labels)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _draw_front(ax, name: str, summary: dict, backbone: str, style: dict) -> list[Label]:
    front = (summary.get("fronts") or {}).get(backbone) or []
    points = sorted((r["diversity_score"], r["quality_score"], r) for r in front
                    if r.get("diversity_score") is not None and r.get("quality_score") is not None)
    hv = (summary.get("hypervolume") or {}).get(backbone)
    label = f"{name}: front ({len(points)})" + (f", hypervolume {hv:.3g}" if hv is not None else "")
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.step(xs, ys, where="pre", color=style["colour"], lw=1.3, zorder=2)
        ax.scatter(xs, ys, s=55, c=style["colour"], marker=style["marker"], edgecolors="black", zorder=3, label=label)
    else:
        ax.scatter([], [], c=style["colour"], marker=style["marker"], label=f"{name}: no front")
    floor = summary.get("min_quality")
    if floor:
        ax.axhline(floor, color=style["colour"], lw=0.8, ls="--", alpha=0.6)
    pick = (summary.get("recommended") or {}).get(backbone)
    if pick and pick.get("diversity_score") is not None:
        ax.scatter([pick["diversity_score"]], [pick["quality_score"]], marker="*", s=300, c="gold",
                   edgecolors=style["colour"], linewidths=1.5, zorder=5)
    return [Label(f"{name}: {config_label(r)}", (x, y), style["colour"]) for x, y, r in points]
