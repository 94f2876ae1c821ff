"""Each trial's kept student: the report whose checkpoint the search keeps (``kept.parquet``).

A report is *eligible* when its student has trained ``objective.min_student_updates`` updates or
more, its ``quality_score`` is at or above ``objective.min_quality`` (the fidelity floor) and its
objective J is finite. The trainable reports ``shown_objective`` = J on eligible reports and -inf
on the others, and attaches a Ray checkpoint (the student in its serving dtype) to a report only
when it is the trial's new best by that value, ties going to the later report. So a trial's kept
student is its *last report with a checkpoint*, which is the checkpoint Ray itself ranks best
(``Result.best_checkpoints``), and a trial with no eligible report keeps no student.

`kept_reports` reads that from the reports as they were written (``checkpoint_dir_name``: Ray's
name of the report's checkpoint folder, None without one) instead of ranking the reports again.
Reports without that column (a recorded table, the simulator) are ranked by the same rule
(`new_bests`). A resumed trial repeats the reports after its last saved state; `unique_reports`
keeps the copy written last.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["eligible", "kept_reports", "new_bests", "unique_reports"]

REPORT_KEY = ("trial_id", "student_updates")


def unique_reports(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` (one row per report, in the order written) without repeated
    (trial_id, student_updates) reports, keeping the copy written last, sorted by trial then
    student updates; a fresh index."""
    missing = [c for c in REPORT_KEY if c not in trials]
    if missing:
        raise ValueError(f"the reports need columns {list(REPORT_KEY)}; missing {missing} "
                         f"(columns: {list(trials.columns)}): pass trials.parquet's rows")
    unique = trials.drop_duplicates(list(REPORT_KEY), keep="last")
    return unique.sort_values(list(REPORT_KEY), kind="stable").reset_index(drop=True)


def eligible(reports: pd.DataFrame, *, min_quality: float, min_student_updates: int) -> np.ndarray:
    """(n,) bool: the reports a student may be kept from (module docstring)."""
    objective = reports["objective"].to_numpy(dtype=float, na_value=np.nan)
    quality = reports["quality_score"].to_numpy(dtype=float, na_value=np.nan)
    updates = reports["student_updates"].to_numpy(dtype=float, na_value=np.nan)
    return np.isfinite(objective) & (quality >= min_quality) & (updates >= min_student_updates)


def new_bests(reports: pd.DataFrame, *, min_quality: float, min_student_updates: int) -> np.ndarray:
    """(n,) bool: the eligible reports that are their trial's new best by J so far, a tie with the
    best so far counting as new (the later report wins). ``reports``: `unique_reports`' order."""
    ok = eligible(reports, min_quality=min_quality, min_student_updates=min_student_updates)
    value = np.where(ok, reports["objective"].to_numpy(dtype=float, na_value=np.nan), -np.inf)
    best_so_far = pd.Series(value).groupby(reports["trial_id"].to_numpy()).cummax().to_numpy()
    return ok & (value >= best_so_far)


def kept_reports(trials: pd.DataFrame, *, min_quality: float, min_student_updates: int = 0) -> pd.DataFrame:
    """One row per trial: its kept report, the last carrying a checkpoint; for a trial that kept
    none, its last report. Columns added:

    - ``kept``: the trial kept a student (this row is its report);
    - ``checkpoint``: the kept checkpoint's folder, ``trial_path/checkpoint_dir_name`` (None where
      nothing was kept or the trial's folder is unknown);
    - ``last_student_updates``: how long the trial trained (its last report's updates);
    - ``below_floor``: ``quality_score`` under ``min_quality`` (or NaN);
    - ``transient``: shown before ``min_student_updates``.

    ``trials``: every report (``trial_id``, ``student_updates``, ``objective``, ``quality_score``;
    ``checkpoint_dir_name`` and ``trial_path`` as Ray wrote them), in any row order within which a
    repeated report's later copy comes later."""
    if trials.empty:
        return trials.assign(kept=pd.Series(dtype=bool), checkpoint=pd.Series(dtype=object))
    reports = unique_reports(trials)
    if "checkpoint_dir_name" in reports:
        carries = reports["checkpoint_dir_name"].notna().to_numpy()
    else:
        carries = new_bests(reports, min_quality=min_quality, min_student_updates=min_student_updates)
    trial = reports["trial_id"].to_numpy()
    last = np.flatnonzero(np.r_[trial[1:] != trial[:-1], True])  # each trial's last report
    rows, kept = [], []
    start = 0
    for end in last:
        carrying = np.flatnonzero(carries[start:end + 1])
        rows.append(start + carrying[-1] if carrying.size else end)
        kept.append(bool(carrying.size))
        start = end + 1
    out = reports.iloc[rows].reset_index(drop=True)
    out["kept"] = kept
    out["last_student_updates"] = reports["student_updates"].to_numpy()[last]
    out["checkpoint"] = pd.Series([path if was_kept else None for path, was_kept in zip(_checkpoint_uris(out), kept)],
                                  dtype=object)  # None where nothing was kept (not pandas' NaN)
    out["below_floor"] = ~(out["quality_score"].to_numpy(dtype=float, na_value=np.nan) >= min_quality)
    out["transient"] = out["student_updates"].to_numpy() < min_student_updates
    return out


def _checkpoint_uris(reports: pd.DataFrame) -> list[str | None]:
    """Each report's checkpoint folder in the storage: ``trial_path/checkpoint_dir_name``, or None."""
    if "trial_path" not in reports or "checkpoint_dir_name" not in reports:
        return [None] * len(reports)
    return [f"{path.rstrip('/')}/{name}" if isinstance(path, str) and isinstance(name, str) else None
            for path, name in zip(reports["trial_path"], reports["checkpoint_dir_name"])]
