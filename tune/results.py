"""What a search leaves behind, under the experiment directory:

- ``trials.parquet``: one row per report (trial id, its configuration, every metric), a resumed
  trial's repeated reports once (the copy written last);
- ``kept.parquet``: one row per trial, its kept student (`tune.outputs.kept`: the last report with
  a checkpoint; a trial that kept none by its last report, ``checkpoint`` null);
- ``pareto.parquet``: each backbone's front (`tune.outputs.fronts`), with a ``backbone`` column;
- ``pareto.png``: one panel per backbone in the front's own axes (diversity_score, quality_score),
  the teacher at (1, 1), the floor, the recommended student starred, vanilla DMD marked, and the
  raw-units panel where one evaluator scored several backbones alike (`tune.outputs.front_figure`);
  ``curves.png``: J against student updates per trial, named by configuration, ASHA's rungs and
  the kept students marked (`tune.outputs.curves_figure`);
- ``summary.json``: per backbone its front, recommended student, hypervolume and teacher, the
  evaluation each backbone was scored with and the raw-units comparison, the best per metric,
  cache statistics, compute spent.

A trial is shown by its kept student: the report with the highest J among those from
``objective.min_student_updates`` on at or above the fidelity floor (``objective.min_quality``, a
fraction of the teacher's quality; the quality shown is not capped), ties to the later report:
the one report whose checkpoint the trainable wrote as the trial's new best, and that Ray ranks
best (`tune.search.best_checkpoint_config`). A student is kept at its best state, not its last:
digits-eps DP-DMD students pass the teacher's diversity at high fidelity and then collapse, and a
front of last reports got worse with more training. Early-stopped trials are included (their
students exist and are scored like the others); ``student_updates``, ``training_iteration`` and
``checkpoint`` say which state of the trial is shown and where it is stored,
``last_student_updates`` how long the trial trained. A trial that kept no student is shown by its
last report, marked ``below_floor`` or ``transient``, never on a front.
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

from .objective import objective_metrics
from .pareto import off_front, pareto_front_mask
from .space import BASELINE, SEARCHABLE

CONFIG_COLUMNS = (*SEARCHABLE, BASELINE)  # whichever of them the trials set
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


def _in_report_order(trials: pd.DataFrame) -> pd.DataFrame:
    """The reports by trial, then student updates (stable: a resumed trial's repeated report stays
    after the one it repeats)."""
    return trials.sort_values(["trial_id", "student_updates"], kind="stable")


def with_scores(trials: pd.DataFrame, *, diversity_weight: float = 0.5) -> pd.DataFrame:
    """``trials`` with the score columns (`tune.objective`) filled in where a report lacks them
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


def summarize(kept: pd.DataFrame, fronts: dict[str, pd.DataFrame], *, cache_stats: dict, compute: dict,
              space_name: str, min_quality: float | None = None, diversity_weight: float | None = None,
              evaluation: dict | None = None) -> dict:
    """``summary.json``'s content from each trial's kept report (``kept``: `kept_reports`) and the
    fronts (``{backbone: front}``: `tune.outputs.fronts.backbone_fronts`): per backbone its front,
    recommended student, hypervolume and teacher, the evaluation settings and the raw-units
    comparison (`front_summary`); the best kept report per metric; ``stopped_early``, the trials
    whose last report is below the longest."""
    from .outputs.fronts import front_summary

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


def write_outputs(directory: Path, trials: pd.DataFrame, kept: pd.DataFrame, pareto: pd.DataFrame, summary: dict,
                  *, rungs: list[float] | None = None, min_student_updates: int = 0) -> dict[str, Path]:
    """Write every output file (``trials``: every report, once: `unique_reports`; ``kept``: one
    row per trial, `kept_reports`; ``pareto``: the fronts, `pareto_rows`; ``rungs``: ASHA's
    milestones for curves.png); returns their paths by name."""
    from .outputs.curves_figure import curves_figure
    from .outputs.front_figure import pareto_figure

    directory.mkdir(parents=True, exist_ok=True)
    paths = {"trials": directory / "trials.parquet", "kept": directory / "kept.parquet",
             "pareto": directory / "pareto.parquet", "plot": directory / "pareto.png",
             "curves": directory / "curves.png", "summary": directory / "summary.json"}
    # each file written beside itself, then renamed: a full disk leaves the previous version
    # (a resumed search's) whole, never half of the new one
    for name, frame in (("trials", trials), ("kept", kept), ("pareto", pareto)):
        with _atomic(paths[name]) as tmp:
            frame.to_parquet(tmp, index=False)
    if not kept.empty:
        with _atomic(paths["plot"]) as tmp:
            pareto_figure(kept, summary, tmp)
        with _atomic(paths["curves"]) as tmp:
            curves_figure(trials, kept, tmp, rungs=rungs, min_student_updates=min_student_updates,
                          title=f"{summary['space']}: J against student updates, per trial (by configuration)")
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


def front_table(fronts: dict[str, pd.DataFrame], recommended: dict | None = None) -> str:
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
        pick = (recommended or {}).get(backbone) or {}
        blocks.append(f"{backbone}:\n" + front[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")
                      + (f"\n  recommended: trial {pick['trial_id']} ("
                         + " ".join(f"{label}={pick.get(name)}" for name, label in labelled_knobs())
                         + f", {pick.get('student_updates')} student updates, J {pick['objective']:.4g})" if pick else ""))
    return "\n\n".join(blocks)
