"""The search's reports as tables: `trials_frame` (one row per report, from Ray's ResultGrid),
`with_scores` (the teacher-normalised scores where a report lacks them) and `final_results` (each
trial's last report: what its counters add up to). Each trial's kept student, what the fronts
show, is `tune.outputs.kept.kept_reports`.
"""

from __future__ import annotations

import pandas as pd

from ..trial.objective import objective_metrics

SCORE_AXES = ("diversity_score", "quality_score")


def trials_frame(results) -> pd.DataFrame:
    """One row per report from a Ray Tune ResultGrid (or any iterable of Results)."""
    frames = []
    for result in results:
        df = result.metrics_dataframe
        if df is None or df.empty:
            continue
        df = df.copy()
        for key, value in result.config.items():  # the trial's flat overrides (tune.run.searcher)
            df[key] = value
        df["trial_id"] = result.metrics.get("trial_id", df.get("trial_id", pd.Series(["?"])).iloc[-1])
        df["error"] = str(result.error) if result.error else ""
        df["trial_path"] = _trial_uri(result)  # the trial's folder in the storage: its checkpoints are there
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["trial_id", "diversity", "quality", "objective", "student_updates"])
    frame = pd.concat(frames, ignore_index=True)
    keep = [c for c in frame.columns if not c.startswith("config/") and c not in ("date", "hostname")]
    return frame[keep]


def _trial_uri(result) -> str | None:
    """Where a Ray Result's trial folder is stored: a local path, or ``scheme://bucket/...``."""
    path = getattr(result, "path", None)
    if path is None:
        return None
    scheme = getattr(getattr(result, "filesystem", None), "type_name", "local")
    return str(path) if scheme == "local" or "://" in str(path) else f"{scheme}://{path}"


def final_results(trials: pd.DataFrame, *, min_quality: float = 0.0) -> pd.DataFrame:
    """Each trial's last report, with ``below_floor`` (quality_score < ``min_quality``, or NaN):
    what the trial's counters (compute, cache, divergence) add up to."""
    if trials.empty:
        return trials
    final = _in_report_order(trials).groupby("trial_id", as_index=False).tail(1).reset_index(drop=True)
    final["below_floor"] = ~(final["quality_score"].astype(float) >= min_quality)
    return final


def _in_report_order(trials: pd.DataFrame) -> pd.DataFrame:
    """The reports by trial, then student updates (stable: a resumed trial's repeated report stays
    after the one it repeats)."""
    return trials.sort_values(["trial_id", "student_updates"], kind="stable")


def with_scores(trials: pd.DataFrame, *, diversity_weight: float = 0.5) -> pd.DataFrame:
    """``trials`` with the score columns (`tune.trial.objective`) filled in where a report lacks them
    (results recorded before they existed), from the raw and teacher columns."""
    if trials.empty or all(c in trials and trials[c].notna().all() for c in (*SCORE_AXES, "objective")):
        return trials
    scores = pd.DataFrame([objective_metrics(r.diversity, r.quality, teacher_diversity=r.teacher_diversity,
                                             teacher_quality=r.teacher_quality, diversity_weight=diversity_weight)
                           for r in trials.itertuples()], index=trials.index)
    trials = trials.copy()
    for column in scores:
        trials[column] = trials[column].fillna(scores[column]) if column in trials else scores[column]
    return trials
