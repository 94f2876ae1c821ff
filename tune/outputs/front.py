"""The Pareto front of a search and what is said about it: `pareto_front` (the non-dominated trials
over (``diversity_score``, ``quality_score``) among those with ``quality_score >=
objective.min_quality``, the fidelity floor, a fraction of the teacher's quality; the quality shown
is not capped), `recommended` (the front member with the highest objective J), `summarize`
(``summary.json``), the plot's reference points (the teacher at (1, 1), vanilla DMD) and the front
as text for the terminal and W&B.

The front is computed over each trial's best report (`tune.outputs.results.best_results`). Trials
below the floor stay in every table and plot, marked ``below_floor``, never on the front; trials
whose best scores are NaN are never on it either. ``trials.parquet`` keeps every report.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dpdmd.config import labelled_knobs, vanilla_dmd

from ..pareto import hypervolume_2d, off_front, pareto_front_mask
from ..space.schema import BASELINE, SEARCHABLE
from .results import SCORE_AXES

CONFIG_COLUMNS = (*SEARCHABLE, BASELINE)  # whichever of them the trials set
# The hypervolume's reference point: (0, 0) in the front's own teacher-normalised units, i.e. the
# area dominated by the front in the plane of (diversity_score, quality_score). README.
HYPERVOLUME_REFERENCE = (0.0, 0.0)


def pareto_front(final: pd.DataFrame) -> pd.DataFrame:
    """The non-dominated rows over (diversity_score, quality_score) among those neither
    ``below_floor`` nor ``transient``, sorted by diversity_score."""
    if final.empty:
        return final
    eligible = final[~off_front(final)]
    points = eligible[list(SCORE_AXES)].to_numpy(dtype=float)
    return eligible[pareto_front_mask(points)].sort_values("diversity_score").reset_index(drop=True)


def recommended(front: pd.DataFrame) -> pd.DataFrame:
    """The front member with the highest objective J (one row; empty if the front is)."""
    valid = front[np.isfinite(front["objective"].astype(float))] if not front.empty else front
    return valid.loc[[valid["objective"].astype(float).idxmax()]] if not valid.empty else valid


def summarize(final: pd.DataFrame, front: pd.DataFrame, *, cache_stats: dict, compute: dict,
              space_name: str, min_quality: float | None = None) -> dict:
    """``summary.json``'s content from each trial's best report (`best_results`: ``final``) and
    the front. Each front member, the recommended trial and the best per metric say which report
    they are (``student_updates``, ``training_iteration``) and where its checkpoint is
    (``checkpoint``); ``stopped_early`` counts the trials whose last report is below the longest."""
    summary: dict = {"space": space_name, "trials": int(final.shape[0]), "min_quality": min_quality,
                     "front": _records(front)}
    pick = recommended(front)
    summary["recommended"] = _records(pick)[0] if not pick.empty else None
    if not final.empty:
        summary["below_floor"] = int(final["below_floor"].sum()) if "below_floor" in final else 0
        for metric in ("diversity", "quality", "objective"):
            valid = final[np.isfinite(final[metric].astype(float))]
            if not valid.empty:
                summary[f"best_{metric}"] = _records(valid.loc[[valid[metric].astype(float).idxmax()]])[0]
        points = front[list(SCORE_AXES)].to_numpy(dtype=float) if not front.empty else np.zeros((0, 2))
        summary["hypervolume"] = hypervolume_2d(points, HYPERVOLUME_REFERENCE) if len(points) else 0.0
        summary["hypervolume_reference"] = {"point": HYPERVOLUME_REFERENCE, "units": "diversity_score, quality_score "
                                            "(teacher = (1, 1); the front's own axes)"}
        summary["teacher"] = {b: {"diversity": float(g["teacher_diversity"].iloc[0]),
                                  "quality": float(g["teacher_quality"].iloc[0])}
                              for b, g in final.groupby("backbone")} if "backbone" in final else {}
        trained = final["last_student_updates"] if "last_student_updates" in final else final["student_updates"]
        summary["stopped_early"] = int((trained < trained.max()).sum())
    summary["cache"] = cache_stats
    summary["compute"] = compute
    return summary


def _records(frame: pd.DataFrame) -> list[dict]:
    cols = [c for c in ("trial_id", *CONFIG_COLUMNS, "student_updates", "training_iteration", "last_student_updates",
                        "checkpoint", "diversity", "quality", *SCORE_AXES, "objective", "below_floor")
            if c in frame.columns]
    out = []
    for row in frame[cols].to_dict("records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else (v.item() if hasattr(v, "item") else v))
                    for k, v in row.items()})
    return out


def reference_points(final: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Markers for the plot (D / D_teacher, quality_score): the teacher (1, 1) and each
    backbone's vanilla-DMD (lambda_div = 0) trial (its row of ``final``: its best report)."""
    points = {}
    if final.empty or "backbone" not in final:
        return points
    points["teacher"] = (1.0, 1.0)
    for backbone, group in final.groupby("backbone"):
        dmd = group[vanilla_dmd_rows(group)]
        if not dmd.empty:
            best = dmd.loc[dmd["student_updates"].idxmax()]
            points[f"vanilla DMD ({backbone})"] = (float(best["diversity"] / best["teacher_diversity"]),
                                                   float(best["quality_score"]))
    return points


def vanilla_dmd_rows(frame: pd.DataFrame) -> pd.Series:
    """Which rows are vanilla-DMD trials (`dpdmd.config.vanilla_dmd`'s settings; a frame without
    those columns has none)."""
    mask = pd.Series(True, index=frame.index)
    for name, value in vanilla_dmd().items():
        mask &= frame[name] == value if name in frame else False
    return mask


def front_with_teacher(front: pd.DataFrame) -> pd.DataFrame:
    """The front plus a row for the teacher at (1, 1) (``trial_id`` "teacher"), for the W&B table
    and scatter, where each member's ``quality_score`` is its fidelity to the teacher's."""
    teacher = pd.DataFrame([{"trial_id": "teacher", "diversity_score": 1.0, "quality_score": 1.0, "objective": 1.0}])
    return pd.concat([front, teacher], ignore_index=True) if not front.empty else teacher


def headline(summary: dict) -> dict:
    """The scalar numbers of ``summary`` for W&B's run summary, the recommended trial's included."""
    flat = {k: v for k, v in summary.items() if not isinstance(v, (list, dict)) and v is not None}
    for key, value in (summary.get("recommended") or {}).items():
        flat[f"recommended/{key}"] = value
    return flat


def front_table(front: pd.DataFrame) -> str:
    """The front as a plain-text table for the terminal."""
    if front.empty:
        return "(no trial finished with finite diversity and quality)"
    knobs = [name for name, _ in labelled_knobs()]
    cols = [c for c in ("backbone", *knobs, "student_updates", "diversity", "quality",
                        *SCORE_AXES, "objective")
            if c in front.columns]
    return front[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")
