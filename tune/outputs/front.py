"""The Pareto fronts of a search and what is said about them, one front per backbone.

Dominance between students of different teachers, in teacher-normalised units, means nothing: a
diversity_score of 0.9 is 90% of *this* teacher's diversity. So each backbone gets its own front
(`backbone_fronts`: `pareto_front` of its trials' kept students, `tune.outputs.kept`, over
(``diversity_score``, ``quality_score``) among those neither below the fidelity floor
``objective.min_quality`` nor transient), its own recommended student (`recommended`: the front
member with the highest J), its own hypervolume (above (0, 0) in the front's units: the teacher
alone scores 1) and teacher; `summarize` writes them into ``summary.json`` with the raw-units
comparison of the backbones one evaluator scored alike (`tune.outputs.raw_units`). Trials below
the floor stay in every table and plot, marked ``below_floor``, never on a front; the quality
shown is not capped.

`rescored` judges the kept students under another floor or diversity weight (``python -m
tune.front``). The students a search keeps are fixed when it runs (each trial's best report by
the J and floor of the space), so a new weight re-ranks those students; it cannot find a report of
a trial that the search did not keep.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dpdmd.config import labelled_knobs, vanilla_dmd

from ..pareto import hypervolume_2d, off_front, pareto_front_mask
from ..space.schema import BASELINE, SEARCHABLE
from .raw_units import raw_comparison
from .results import SCORE_AXES

CONFIG_COLUMNS = (*SEARCHABLE, BASELINE)  # whichever of them the trials set
# The hypervolume's reference point: (0, 0) in the front's own teacher-normalised units, i.e. the
# area dominated by the front in the plane of (diversity_score, quality_score).
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


def _backbones(kept: pd.DataFrame) -> list[str]:
    if "backbone" not in kept:
        raise ValueError(f"the kept reports need a 'backbone' column to draw one front per backbone "
                         f"(columns: {list(kept.columns)}); pass kept.parquet's rows")
    return sorted(str(b) for b in kept["backbone"].dropna().unique())


def backbone_fronts(kept: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{backbone: its front}`` for every backbone of ``kept`` (one row per trial: `kept_reports`),
    in name order; a backbone with no eligible student has an empty front. Each front is sorted by
    diversity_score."""
    if kept.empty:
        return {}
    return {b: pareto_front(kept[kept["backbone"].astype(str) == b].reset_index(drop=True))
            for b in _backbones(kept)}


def recommended_students(fronts: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``{backbone: one row}``: the front member with the highest J (ties: the first in diversity
    order); a backbone whose front is empty is left out."""
    picks = {b: recommended(front) for b, front in fronts.items()}
    return {b: pick for b, pick in picks.items() if not pick.empty}


def front_hypervolumes(fronts: dict[str, pd.DataFrame]) -> dict[str, float]:
    """``{backbone: area its front dominates above (0, 0)}`` in (diversity_score, quality_score)."""
    return {b: hypervolume_2d(front[list(SCORE_AXES)].to_numpy(dtype=float), HYPERVOLUME_REFERENCE)
            if not front.empty else 0.0 for b, front in fronts.items()}


def pareto_rows(fronts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every front in one table (``pareto.parquet``), with its ``backbone`` column, by backbone."""
    full = [front.assign(backbone=b) for b, front in fronts.items() if not front.empty]
    if full:
        return pd.concat(full, ignore_index=True)
    # no front at all: an empty table with the kept reports' columns (trial_id, the scores, ...)
    return next((front.assign(backbone=pd.Series(dtype=object)) for front in fronts.values()),
                pd.DataFrame(columns=["trial_id", "backbone", *SCORE_AXES]))


def rescored(kept: pd.DataFrame, *, min_quality: float | None = None,
             diversity_weight: float | None = None) -> pd.DataFrame:
    """``kept`` judged under another fidelity floor and/or diversity weight: ``below_floor`` from
    ``min_quality``, ``objective`` J = w * diversity_score + (1 - w) * min(quality_score, 1) from
    ``diversity_weight`` (`tune.objective`); None keeps what the search wrote. The students are
    the same: only the kept reports are judged again (module docstring)."""
    out = kept.copy()
    if min_quality is not None:
        if not 0 <= min_quality <= 2:
            raise ValueError(f"min_quality {min_quality}: use a fraction of the teacher's quality in [0, 2] "
                             "(0 = no floor)")
        out["below_floor"] = ~(out["quality_score"].to_numpy(dtype=float, na_value=np.nan) >= min_quality)
    if diversity_weight is not None:
        if not 0 <= diversity_weight <= 1:
            raise ValueError(f"diversity_weight {diversity_weight}: use a weight in [0, 1]")
        d = out["diversity_score"].to_numpy(dtype=float, na_value=np.nan)
        q = out["quality_score"].to_numpy(dtype=float, na_value=np.nan)
        j = diversity_weight * d + (1 - diversity_weight) * np.minimum(q, 1.0)
        out["objective"] = np.where(np.isfinite(j), j, -np.inf)
    return out


def teacher_scores(kept: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{backbone: {"diversity", "quality"}}``: each teacher's raw scores (its reports' columns)."""
    if kept.empty or not {"teacher_diversity", "teacher_quality"} <= set(kept.columns):
        return {}
    return {str(b): {"diversity": float(g["teacher_diversity"].iloc[0]), "quality": float(g["teacher_quality"].iloc[0])}
            for b, g in kept.groupby("backbone")}


def front_summary(kept: pd.DataFrame, fronts: dict[str, pd.DataFrame], *,
                  evaluation: dict[str, dict] | None = None) -> dict:
    """The per-backbone part of ``summary.json``: ``fronts`` and ``recommended`` (records: trial,
    configuration, which report, its checkpoint, raw and teacher-normalised scores, J),
    ``hypervolume`` and ``teacher`` per backbone, the ``evaluation`` each backbone was scored with
    and the ``raw_comparison`` of the backbones one evaluator scored alike (`tune.outputs.raw_units`)."""
    teacher = teacher_scores(kept)
    evaluation = dict(evaluation or {})
    records = {b: _records(front) for b, front in fronts.items()}
    return {
        "fronts": records,
        "recommended": {b: _records(pick)[0] for b, pick in recommended_students(fronts).items()},
        "hypervolume": front_hypervolumes(fronts),
        "hypervolume_reference": {"point": HYPERVOLUME_REFERENCE, "units": "diversity_score, quality_score of "
                                  "each backbone (its teacher = (1, 1); the front's own axes)"},
        "teacher": teacher,
        "evaluation": evaluation,
        "raw_comparison": raw_comparison(records, teacher, evaluation),
    }


def summarize(kept: pd.DataFrame, fronts: dict[str, pd.DataFrame], *, cache_stats: dict, compute: dict,
              space_name: str, min_quality: float | None = None, diversity_weight: float | None = None,
              evaluation: dict | None = None) -> dict:
    """``summary.json``'s content from each trial's kept report (``kept``: `kept_reports`) and the
    fronts (``{backbone: front}``: `backbone_fronts`): per backbone its front,
    recommended student, hypervolume and teacher, the evaluation settings and the raw-units
    comparison (`front_summary`); the best kept report per metric; ``stopped_early``, the trials
    whose last report is below the longest."""
    summary: dict = {"space": space_name, "trials": int(kept.shape[0]), "min_quality": min_quality,
                     "diversity_weight": diversity_weight,
                     **front_summary(kept, fronts, evaluation=evaluation)}
    if not kept.empty:
        summary["below_floor"] = int(kept["below_floor"].sum()) if "below_floor" in kept else 0
        summary["kept_students"] = int(kept["kept"].sum()) if "kept" in kept else int(kept.shape[0])
        for metric in ("diversity", "quality", "objective"):
            valid = kept[np.isfinite(kept[metric].astype(float))]
            if not valid.empty:
                summary[f"best_{metric}"] = _records(valid.loc[[valid[metric].astype(float).idxmax()]])[0]
        trained = kept["last_student_updates"] if "last_student_updates" in kept else kept["student_updates"]
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


def vanilla_dmd_rows(frame: pd.DataFrame) -> pd.Series:
    """Which rows are vanilla-DMD trials (`dpdmd.config.vanilla_dmd`'s settings; a frame without
    those columns has none)."""
    mask = pd.Series(True, index=frame.index)
    for name, value in vanilla_dmd().items():
        mask &= frame[name] == value if name in frame else False
    return mask


def front_with_teacher(pareto: pd.DataFrame, teacher: dict) -> pd.DataFrame:
    """The fronts (``pareto.parquet``'s rows) plus a row per backbone for its teacher at (1, 1)
    (``trial_id`` "teacher"), for the W&B table and scatter, where each member's
    ``quality_score`` is its fidelity to its own teacher's."""
    teachers = pd.DataFrame([{"trial_id": "teacher", "backbone": b, "diversity_score": 1.0, "quality_score": 1.0,
                              "objective": 1.0} for b in teacher] or
                            [{"trial_id": "teacher", "diversity_score": 1.0, "quality_score": 1.0, "objective": 1.0}])
    return pd.concat([pareto, teachers], ignore_index=True) if not pareto.empty else teachers


def headline(summary: dict) -> dict:
    """The scalar numbers of ``summary`` for W&B's run summary: each backbone's hypervolume
    (``hypervolume/<backbone>``) and recommended student (``recommended/<backbone>/<key>``)."""
    flat = {k: v for k, v in summary.items() if not isinstance(v, (list, dict)) and v is not None}
    for backbone, value in (summary.get("hypervolume") or {}).items():
        flat[f"hypervolume/{backbone}"] = value
    for backbone, record in (summary.get("recommended") or {}).items():
        for key, value in (record or {}).items():
            flat[f"recommended/{backbone}/{key}"] = value
    return flat


def front_table(fronts: dict[str, pd.DataFrame], picks: dict | None = None) -> str:
    """Each backbone's front as a plain-text table for the terminal, with its recommended student."""
    if not fronts:
        return "(no trial reported)"
    knobs = [name for name, _ in labelled_knobs()]
    blocks = []
    for backbone, front in fronts.items():
        if front.empty:
            blocks.append(f"{backbone}: no front (no trial kept a student at or above the floor)")
            continue
        cols = [c for c in ("trial_id", *knobs, "student_updates", "diversity", "quality", *SCORE_AXES, "objective")
                if c in front.columns]
        pick = (picks or {}).get(backbone) or {}
        blocks.append(f"{backbone}:\n" + front[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")
                      + (f"\n  recommended: trial {pick['trial_id']} ("
                         + " ".join(f"{label}={pick.get(name)}" for name, label in labelled_knobs())
                         + f", {pick.get('student_updates')} student updates, J {pick['objective']:.4g})" if pick else ""))
    return "\n\n".join(blocks)
