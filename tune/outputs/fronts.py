"""One Pareto front per backbone, over the trials' kept students (`tune.outputs.kept`).

Dominance between students of different teachers, in teacher-normalised units, means nothing: a
diversity_score of 0.9 is 90% of *this* teacher's diversity. So each backbone gets its own front
(the non-dominated kept students over (diversity_score, quality_score) among those neither below
the fidelity floor nor transient), its own recommended student (the front member with the highest
J) and its own hypervolume (reference (0, 0) in the front's units: the teacher alone scores 1).
Where backbones share an evaluator, their raw scores can be set side by side
(`tune.outputs.raw_units`).

`rescored` re-ranks the kept students under another floor or diversity weight (``python -m
tune.front``). The students a search keeps are fixed when it runs (each trial's best report by the
J and floor of the space), so a new weight re-ranks those students; it cannot find a report of a
trial that the search did not keep.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..pareto import hypervolume_2d

SCORE_AXES = ("diversity_score", "quality_score")
# The hypervolume's reference point: (0, 0) in the front's own teacher-normalised units, i.e. the
# area the front dominates in the plane of (diversity_score, quality_score).
HYPERVOLUME_REFERENCE = (0.0, 0.0)

__all__ = ["backbone_fronts", "front_hypervolumes", "pareto_rows", "recommended_students", "rescored"]


def _backbones(kept: pd.DataFrame) -> list[str]:
    if "backbone" not in kept:
        raise ValueError(f"the kept reports need a 'backbone' column to draw one front per backbone "
                         f"(columns: {list(kept.columns)}); pass kept.parquet's rows")
    return sorted(str(b) for b in kept["backbone"].dropna().unique())


def backbone_fronts(kept: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{backbone: its front}`` for every backbone of ``kept`` (one row per trial: `kept_reports`),
    in name order; a backbone with no eligible student has an empty front. Each front is sorted by
    diversity_score."""
    from ..results import pareto_front

    if kept.empty:
        return {}
    return {b: pareto_front(kept[kept["backbone"].astype(str) == b].reset_index(drop=True))
            for b in _backbones(kept)}


def recommended_students(fronts: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``{backbone: one row}``: the front member with the highest J (ties: the first in diversity
    order); a backbone whose front is empty is left out."""
    from ..results import recommended

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
    from ..results import _records
    from .raw_units import raw_comparison

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
