"""What a search leaves behind, under the experiment directory:

- ``trials.parquet``: one row per report (trial id, its configuration, every metric);
- ``pareto.parquet``: the front (below);
- ``pareto.png`` (and ``curves.png``): every trial in teacher-normalised units, the front
  highlighted, the teacher at (1, 1), vanilla DMD marked, trials below the fidelity floor greyed;
- ``summary.json``: the front, the recommended trial, the best per metric, the hypervolume,
  cache statistics, compute spent.

The front is computed over each trial's *best* report: the one with the highest objective J among
its reports from ``objective.min_student_updates`` on (`tune.trial.objective.shown_objective`; a trial
with none is shown by its last report, marked ``transient`` and never on the front) that carry a checkpoint (a diverged report has none; NaN ranks below -inf, which ranks
below every finite J; ties go to the later report), which is exactly the report whose checkpoint
Ray keeps (`tune.search`: ``CheckpointConfig(checkpoint_score_attribute="shown_objective",
checkpoint_score_order="max", num_to_keep=1)``; Ray keeps the latest checkpoint too, to resume).
A student is kept at its best state, not its last: digits-eps DP-DMD students pass the teacher's
diversity at high fidelity and then collapse, and a front of last reports got worse with more
training. Early-stopped trials are included (their students exist and are scored like the
others); ``student_updates``, ``training_iteration`` and ``checkpoint`` say which state of the
trial is shown and where it is stored, ``last_student_updates`` how long the trial trained. The
front: the non-dominated trials over (``diversity_score``, ``quality_score``) among those with
``quality_score >= objective.min_quality`` (the fidelity floor, a fraction of the teacher's
quality; the quality shown is not capped). Trials below the floor stay in every table and plot,
marked ``below_floor``, never on the front. The recommended trial is the front member with the
highest objective J. Trials whose best scores are NaN are never on the front. ``trials.parquet``
keeps every report.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dpdmd.config import labelled_knobs, vanilla_dmd

from ..trial.objective import objective_metrics, shown_objective
from ..pareto import hypervolume_2d, off_front, pareto_front_mask
from .plots import plot_curves, plot_pareto
from ..space.schema import BASELINE, SEARCHABLE

CONFIG_COLUMNS = (*SEARCHABLE, BASELINE)  # whichever of them the trials set
# The hypervolume's reference point: (0, 0) in the front's own teacher-normalised units, i.e. the
# area dominated by the front in the plane of (diversity_score, quality_score). README.
HYPERVOLUME_REFERENCE = (0.0, 0.0)
SCORE_AXES = ("diversity_score", "quality_score")


def trials_frame(results) -> pd.DataFrame:
    """One row per report from a Ray Tune ResultGrid (or any iterable of Results)."""
    frames = []
    for result in results:
        df = result.metrics_dataframe
        if df is None or df.empty:
            continue
        df = df.copy()
        for key, value in result.config.items():  # the trial's flat overrides (tune.trials)
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


def best_results(trials: pd.DataFrame, *, min_quality: float = 0.0, min_student_updates: int = 0) -> pd.DataFrame:
    """Each trial's best report (module docstring: the one whose checkpoint Ray keeps), one row per
    trial, with ``below_floor``, ``transient`` (before ``min_student_updates``), ``last_student_updates`` (the trial's last report's) and
    ``checkpoint`` (the stored checkpoint's path, when ``trial_path`` and Ray's
    ``checkpoint_dir_name`` are known; else None).

    ``trials``: one row per report (``trial_id``, ``student_updates``, ``objective``, the scores),
    in the order they were made within a trial; a report without ``checkpoint_dir_name`` (a
    diverged one) is chosen only when none of the trial's reports has a checkpoint. Used by
    `tune.search` and, on the reports seen so far, by the simulator (`tune.simulate.shown_front`)."""
    if trials.empty:
        return trials
    order = _in_report_order(trials).reset_index(drop=True)
    trial, _ = pd.factorize(order["trial_id"])  # ascending: ``order`` is sorted by trial
    objective = shown_objective(order["objective"].to_numpy(dtype=float), order["student_updates"].to_numpy(),
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


def write_outputs(directory: Path, trials: pd.DataFrame, final: pd.DataFrame, front: pd.DataFrame,
                  summary: dict) -> dict[str, Path]:
    """Write every output file (``trials``: every report; ``final``: one row per trial, the
    report shown: `best_results`); returns their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"trials": directory / "trials.parquet", "pareto": directory / "pareto.parquet",
             "plot": directory / "pareto.png", "curves": directory / "curves.png", "summary": directory / "summary.json"}
    # each file written beside itself, then renamed: a full disk leaves the previous version
    # (a resumed search's) whole, never half of the new one
    with _atomic(paths["trials"]) as tmp:
        trials.to_parquet(tmp, index=False)
    with _atomic(paths["pareto"]) as tmp:
        front.to_parquet(tmp, index=False)
    if not final.empty:
        shown = final.assign(diversity_ratio=final["diversity"] / final["teacher_diversity"])
        with _atomic(paths["plot"]) as tmp:
            plot_pareto(shown, tmp, x="diversity_ratio", y="quality_score", front_columns=SCORE_AXES,
                        reference_points=reference_points(final), teacher_normalised=True,
                        min_quality=summary.get("min_quality"),
                        recommended=(summary.get("recommended") or {}).get("trial_id"),
                        annotate="all" if len(final) <= 8 else "front",  # many labels would overlap
                        title=f"{summary['space']}: diversity vs quality, teacher = (1, 1) ({len(final)} trials)")
        with _atomic(paths["curves"]) as tmp:
            plot_curves(trials, tmp)
    with _atomic(paths["summary"]) as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))
    return paths


@contextlib.contextmanager
def _atomic(path: Path):
    """Yield a temporary path beside ``path`` (same suffix) and rename it to ``path`` once written;
    an error (OSError naming ``path``) removes the temporary file and leaves ``path`` as it was."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err


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
