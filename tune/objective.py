"""The combined objective ASHA ranks trials by.

    J = w * D / D_teacher + (1 - w) * Q / Q_teacher

D and Q are a trial's diversity and quality at an evaluation; D_teacher and Q_teacher are the
teacher's own scores on the same evaluation set (computed once per backbone and cached), so J
means the same on every backbone: J = 1 is "as diverse and as good as the teacher", and w (the
space's ``objective.diversity_weight``) says how much diversity is worth against quality. A
NaN score (a diverged trial) gives J = -inf, so ASHA stops it first.
"""

from __future__ import annotations

import math


def combined_objective(diversity: float, quality: float, *, teacher_diversity: float, teacher_quality: float,
                       diversity_weight: float) -> float:
    """J for one evaluation (higher is better)."""
    if not 0.0 <= diversity_weight <= 1.0:
        raise ValueError(f"diversity_weight must be in [0, 1], got {diversity_weight}")
    if teacher_diversity <= 0 or teacher_quality <= 0:
        raise ValueError(f"the teacher's scores must be positive to normalise by, got diversity "
                         f"{teacher_diversity} and quality {teacher_quality}")
    value = diversity_weight * diversity / teacher_diversity + (1 - diversity_weight) * quality / teacher_quality
    return value if math.isfinite(value) else -math.inf
