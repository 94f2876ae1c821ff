"""What a search leaves behind, under the experiment directory:

- ``trials.parquet``: one row per report (trial id, its configuration, every metric);
- ``pareto.parquet``: the non-dominated trials over (diversity, quality) of the final results;
- ``pareto.png`` (and ``curves.png``): every trial, the front highlighted, teacher and vanilla DMD marked;
- ``summary.json``: the front, the best per objective, the hypervolume, cache statistics, compute spent.

The front is computed over each trial's *last* report, early-stopped trials included (their
students exist and are scored like the others; the ``student_updates`` column tells how long
each trained). Trials whose last diversity or quality is NaN are never on the front.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from dpdmd.config import labelled_knobs, vanilla_dmd

from .pareto import hypervolume_2d, pareto_front_mask
from .plots import plot_curves, plot_pareto
from .space import BASELINE, SEARCHABLE

CONFIG_COLUMNS = (*SEARCHABLE, BASELINE)  # whichever of them the trials set
# The hypervolume's reference point: (0, 0) in teacher-normalised units, i.e. the area dominated
# by the front in the plane of (D / D_teacher, Q / Q_teacher). Documented in the README.
HYPERVOLUME_REFERENCE = (0.0, 0.0)


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
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["trial_id", "diversity", "quality", "objective", "student_updates"])
    frame = pd.concat(frames, ignore_index=True)
    keep = [c for c in frame.columns if not c.startswith("config/") and c not in ("date", "hostname")]
    return frame[keep]


def final_results(trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial's last report."""
    if trials.empty:
        return trials
    order = trials.sort_values(["trial_id", "student_updates"], kind="stable")
    return order.groupby("trial_id", as_index=False).tail(1).reset_index(drop=True)


def pareto_front(final: pd.DataFrame) -> pd.DataFrame:
    """The non-dominated rows over (diversity, quality), sorted by diversity."""
    if final.empty:
        return final
    points = final[["diversity", "quality"]].to_numpy(dtype=float)
    return final[pareto_front_mask(points)].sort_values("diversity").reset_index(drop=True)


def summarize(final: pd.DataFrame, front: pd.DataFrame, *, cache_stats: dict, compute: dict,
              space_name: str) -> dict:
    """``summary.json``'s content from each trial's last report and the front."""
    summary: dict = {"space": space_name, "trials": int(final.shape[0]), "front": _records(front)}
    if not final.empty:
        for metric in ("diversity", "quality", "objective"):
            valid = final[np.isfinite(final[metric].astype(float))]
            if not valid.empty:
                summary[f"best_{metric}"] = _records(valid.loc[[valid[metric].astype(float).idxmax()]])[0]
        normalised = np.stack([front["diversity"] / front["teacher_diversity"],
                               front["quality"] / front["teacher_quality"]], axis=1) if not front.empty else np.zeros((0, 2))
        summary["hypervolume"] = hypervolume_2d(normalised, HYPERVOLUME_REFERENCE) if len(normalised) else 0.0
        summary["hypervolume_reference"] = {"point": HYPERVOLUME_REFERENCE,
                                            "units": "diversity / teacher diversity, quality / teacher quality"}
        summary["teacher"] = {b: {"diversity": float(g["teacher_diversity"].iloc[0]),
                                  "quality": float(g["teacher_quality"].iloc[0])}
                              for b, g in final.groupby("backbone")} if "backbone" in final else {}
        summary["stopped_early"] = int((final["student_updates"] < final["student_updates"].max()).sum())
    summary["cache"] = cache_stats
    summary["compute"] = compute
    return summary


def _records(frame: pd.DataFrame) -> list[dict]:
    cols = [c for c in ("trial_id", *CONFIG_COLUMNS, "student_updates", "diversity", "quality", "objective")
            if c in frame.columns]
    out = []
    for row in frame[cols].to_dict("records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else (v.item() if hasattr(v, "item") else v))
                    for k, v in row.items()})
    return out


def reference_points(final: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Markers for the plot: each backbone's teacher, and its vanilla-DMD trial."""
    points = {}
    if final.empty or "backbone" not in final:
        return points
    for backbone, group in final.groupby("backbone"):
        points[f"teacher ({backbone})"] = (float(group["teacher_diversity"].iloc[0]), float(group["teacher_quality"].iloc[0]))
        dmd = group[vanilla_dmd_rows(group)]
        if not dmd.empty:
            best = dmd.loc[dmd["student_updates"].idxmax()]
            points[f"vanilla DMD ({backbone})"] = (float(best["diversity"]), float(best["quality"]))
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
    """Write every output file; returns their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"trials": directory / "trials.parquet", "pareto": directory / "pareto.parquet",
             "plot": directory / "pareto.png", "curves": directory / "curves.png", "summary": directory / "summary.json"}
    trials.to_parquet(paths["trials"], index=False)
    front.to_parquet(paths["pareto"], index=False)
    if not final.empty:
        plot_pareto(final, paths["plot"], reference_points=reference_points(final),
                    annotate="all" if len(final) <= 8 else "front",  # many labels would overlap
                    title=f"{summary['space']}: diversity vs quality ({len(final)} trials)")
        plot_curves(trials, paths["curves"])
    paths["summary"].write_text(json.dumps(summary, indent=1, default=str))
    return paths


def front_table(front: pd.DataFrame) -> str:
    """The front as a plain-text table for the terminal."""
    if front.empty:
        return "(no trial finished with finite diversity and quality)"
    knobs = [name for name, _ in labelled_knobs()]
    cols = [c for c in ("backbone", *knobs, "student_updates", "diversity", "quality", "objective")
            if c in front.columns]
    return front[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")
