"""The combined objective ASHA ranks trials by, and the scores the front is drawn in.

Both axes are normalised by the teacher's own scores on the same evaluation set (computed once
per backbone and cached), so they mean the same on every backbone and the teacher sits at (1, 1):

- ``diversity_score`` = r if r <= 1 else max(0, 2 - r), r = D / D_teacher. The student's target
  is the teacher's distribution: a student less spread than the teacher has lost modes, and one
  *more* spread than the teacher is off it (pixel noise, artefacts and half-trained students are
  all "spread"). Both are deviations, penalised alike; diversity beyond the teacher's earns nothing.
- ``quality_score`` = Q / Q_teacher, not capped: a student may beat its teacher's fidelity, and
  the front shows it.
- ``objective`` J = w * diversity_score + (1 - w) * min(quality_score, 1), w =
  ``objective.diversity_weight``. J = 1 is "as diverse and as good as the teacher", its maximum.
  Quality beyond the teacher's earns nothing in J, for the reason diversity beyond it earns
  nothing: the target is the teacher. Uncapped, a collapsed student of a weak teacher wins: on the
  quickstart a digits-eps vanilla-DMD student with 22% of its speckled teacher's diversity but
  clean digits (quality_score 2.68) had J 1.45, above every diversity-preserving student.
  A NaN score (a diverged trial) gives J = -inf, so ASHA stops it first.

`shown_objective` is J where a report is eligible for the front (from ``objective.min_student_updates``
student updates on, and at or above the fidelity floor ``objective.min_quality``) and -inf
elsewhere: what each trial's kept student and its point on the front are chosen by, so that the
front compares students past their early transient (docs/results/quickstart.md) and a trial's kept
student is its best one the front may show.

`legacy_objective` is the objective this replaced (0.5 D / D_T + 0.5 Q / Q_T uncapped), kept only
to compare rankings (`tune.simulate.rank_agreement`): it rewards noise, which looks like diversity.
"""

from __future__ import annotations

import math

import numpy as np


def _check_teacher(teacher_diversity: float, teacher_quality: float) -> None:
    if not (teacher_diversity > 0 and teacher_quality > 0):
        raise ValueError(f"the teacher's scores must be positive to normalise by, got diversity "
                         f"{teacher_diversity} and quality {teacher_quality}")


def diversity_score(diversity: float, teacher_diversity: float) -> float:
    """Two-sided, teacher-normalised diversity in [0, 1]: 1 exactly at the teacher's diversity.

    NaN stays NaN."""
    _check_teacher(teacher_diversity, 1.0)
    ratio = diversity / teacher_diversity
    return ratio if ratio <= 1.0 or math.isnan(ratio) else max(0.0, 2.0 - ratio)


def quality_score(quality: float, teacher_quality: float) -> float:
    """Teacher-normalised quality Q / Q_teacher (> 1: better than the teacher). NaN stays NaN."""
    _check_teacher(1.0, teacher_quality)
    return quality / teacher_quality


def combined_objective(diversity: float, quality: float, *, teacher_diversity: float, teacher_quality: float,
                       diversity_weight: float) -> float:
    """J for one evaluation (higher is better; the teacher scores 1)."""
    return objective_metrics(diversity, quality, teacher_diversity=teacher_diversity,
                             teacher_quality=teacher_quality, diversity_weight=diversity_weight)["objective"]


def objective_metrics(diversity: float, quality: float, *, teacher_diversity: float, teacher_quality: float,
                      diversity_weight: float) -> dict[str, float]:
    """``{"diversity_score", "quality_score", "objective"}`` of one evaluation (see the module)."""
    if not 0.0 <= diversity_weight <= 1.0:
        raise ValueError(f"diversity_weight must be in [0, 1], got {diversity_weight}")
    _check_teacher(teacher_diversity, teacher_quality)
    d_score, q_score = diversity_score(diversity, teacher_diversity), quality_score(quality, teacher_quality)
    value = diversity_weight * d_score + (1 - diversity_weight) * min(q_score, 1.0)
    return {"diversity_score": d_score, "quality_score": q_score,
            "objective": value if math.isfinite(value) else -math.inf}


def shown_objective(objective, student_updates, quality_score=None, *, min_student_updates: int,
                    min_quality: float | None = None):
    """J where the report is *eligible*, else -inf (scalars or arrays alike): from
    ``min_student_updates`` student updates on, and with ``quality_score >= min_quality`` (the
    fidelity floor; None: no floor). A trial keeps the student of its best eligible report, and
    that is what Ray ranks checkpoints by, so Ray's own best checkpoint is the one the search
    recommends (module docstring)."""
    eligible = np.asarray(student_updates) >= min_student_updates
    if min_quality is not None and quality_score is not None:
        eligible &= np.asarray(quality_score, dtype=float) >= min_quality
    return np.where(eligible, objective, -np.inf)


def legacy_objective(diversity: float, quality: float, *, teacher_diversity: float, teacher_quality: float,
                     diversity_weight: float = 0.5) -> float:
    """The replaced J = w D / D_T + (1 - w) Q / Q_T (uncapped), for comparisons only."""
    value = diversity_weight * diversity / teacher_diversity + (1 - diversity_weight) * quality / teacher_quality
    return value if math.isfinite(value) else -math.inf
