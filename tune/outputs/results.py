"""The search's reports as tables: `trials_frame` (one row per report, from Ray's ResultGrid),
`with_scores` (the teacher-normalised scores where a report lacks them), `final_results` (each
trial's last report: what its counters add up to) and `best_results` (each trial's best report:
what the front shows).

A trial is shown by its *best* report: the one with the highest objective J among its reports
from ``objective.min_student_updates`` on (`tune.trial.objective.shown_objective`; a trial with none is
shown by its last report, marked ``transient`` and never on the front) that carry a checkpoint (a
diverged report has none; NaN ranks below -inf, which ranks below every finite J; ties go to the
later report), which is exactly the report whose checkpoint Ray keeps (`tune.run.tuner`:
``CheckpointConfig(checkpoint_score_attribute="shown_objective", checkpoint_score_order="max",
num_to_keep=1)``; Ray keeps the latest checkpoint too, to resume). A student is kept at its best
state, not its last: digits-eps DP-DMD students pass the teacher's diversity at high fidelity and
then collapse, and a front of last reports got worse with more training. Early-stopped trials are
included (their students exist and are scored like the others); ``student_updates``,
``training_iteration`` and ``checkpoint`` say which state of the trial is shown and where it is
stored, ``last_student_updates`` how long the trial trained.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..trial.objective import objective_metrics, shown_objective

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


def unique_reports(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` with one row per (trial_id, student_updates): the copy written last of a report Ray's
    files hold twice (a trial resumed from a checkpoint before its last report re-reports what
    followed it: seen after a SIGTERM, ``student_updates`` 20 twice in a trial's progress.csv).
    The rows keep their order."""
    if trials.empty or not {"trial_id", "student_updates"} <= set(trials.columns):
        return trials
    return trials[~trials.duplicated(["trial_id", "student_updates"], keep="last")].reset_index(drop=True)


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


def best_results(trials: pd.DataFrame, *, min_quality: float = 0.0, min_student_updates: int = 0) -> pd.DataFrame:
    """Each trial's best report (module docstring: the one whose checkpoint Ray keeps), one row per
    trial, with ``below_floor``, ``transient`` (before ``min_student_updates``), ``last_student_updates`` (the trial's last report's) and
    ``checkpoint`` (the stored checkpoint's path, when ``trial_path`` and Ray's
    ``checkpoint_dir_name`` are known; else None).

    ``trials``: one row per report (``trial_id``, ``student_updates``, ``objective``, the scores),
    in the order they were made within a trial; a report without ``checkpoint_dir_name`` (a
    diverged one) is chosen only when none of the trial's reports has a checkpoint. Used by
    `tune.search` and, on the reports seen so far, by the simulator (`tune.simulate.replay.shown_front`)."""
    if trials.empty:
        return trials
    order = _in_report_order(trials).reset_index(drop=True)
    trial, _ = pd.factorize(order["trial_id"])  # ascending: ``order`` is sorted by trial
    objective = shown_objective(order["objective"].to_numpy(dtype=float), order["student_updates"].to_numpy(),
                                order["quality_score"].to_numpy(dtype=float), min_quality=min_quality,
                                min_student_updates=min_student_updates)
    has_checkpoint = (order["checkpoint_dir_name"].notna().to_numpy() if "checkpoint_dir_name" in order
                      else np.ones(len(order), dtype=bool))
    # Ray's order (`_CheckpointManager._get_checkpoint_score`): NaN < -inf < finite; ties to the later report
    not_nan = ~np.isnan(objective)
    ranked = np.lexsort((np.arange(len(order)), np.where(not_nan, objective, -np.inf), not_nan, has_checkpoint, trial))
    best_of_trial = ranked[np.r_[trial[ranked][1:] != trial[ranked][:-1], True]]  # the last of each trial's run
    last_of_trial = np.flatnonzero(np.r_[trial[1:] != trial[:-1], True])
    best = order.iloc[best_of_trial].reset_index(drop=True)
    best["last_student_updates"] = order["student_updates"].to_numpy()[last_of_trial]
    best["checkpoint"] = _checkpoint_paths(best)
    best["below_floor"] = ~(best["quality_score"].astype(float) >= min_quality)
    best["transient"] = best["student_updates"].to_numpy() < min_student_updates
    return best


def _in_report_order(trials: pd.DataFrame) -> pd.DataFrame:
    """The reports by trial, then student updates (stable: a resumed trial's repeated report stays
    after the one it repeats)."""
    return trials.sort_values(["trial_id", "student_updates"], kind="stable")


def _checkpoint_paths(reports: pd.DataFrame) -> list[str | None]:
    """Each report's checkpoint in the storage: ``trial_path/checkpoint_dir_name``, or None."""
    if "trial_path" not in reports or "checkpoint_dir_name" not in reports:
        return [None] * len(reports)
    return [f"{path.rstrip('/')}/{name}" if isinstance(path, str) and isinstance(name, str) else None
            for path, name in zip(reports["trial_path"], reports["checkpoint_dir_name"])]


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
