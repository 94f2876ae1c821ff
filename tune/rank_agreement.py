"""Does a trial's rank at a rung predict its final rank? (issue 9, section 5)

ASHA stops trials on their rank at a rung; that only helps if the rank at the rung agrees with
the rank at the end. `rung_kendall_tau` gives, for each rung (each ``student_updates`` value a
report was made at), Kendall's tau between the trials' values there and their final values
(each trial's last report), over the trials that reported at that rung.
"""

from __future__ import annotations

import pandas as pd
from scipy.stats import kendalltau

from .objective import legacy_objective


def with_legacy_objective(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` plus ``legacy_objective``: the old J = 0.5 D/D_T + 0.5 Q/Q_T from the raw columns,
    with Q the class probability (the old default quality)."""
    quality, teacher = ("class_prob", "teacher_class_prob") if "teacher_class_prob" in trials else ("quality", "teacher_quality")
    old = [legacy_objective(r["diversity"], r[quality], teacher_diversity=r["teacher_diversity"],
                            teacher_quality=r[teacher]) for _, r in trials.iterrows()]
    return trials.assign(legacy_objective=old)


def rung_kendall_tau(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Columns: rung (student updates), trials (how many reported there), tau (NaN below 3 trials)."""
    order = trials.sort_values(["trial_id", "student_updates"], kind="stable")
    final = order.groupby("trial_id")[metric].last()
    rows = []
    for rung, at_rung in order.groupby("student_updates"):
        values = at_rung.set_index("trial_id")[metric]
        tau = kendalltau(values, final[values.index]).statistic if len(values) >= 3 else float("nan")
        rows.append({"rung": int(rung), "trials": len(values), "tau": float(tau)})
    return pd.DataFrame(rows)
