"""What a search leaves behind, under the experiment directory (`write_outputs`):

- ``trials.parquet``: one row per report (trial id, its configuration, every metric);
- ``pareto.parquet``: the front (`tune.outputs.front`);
- ``pareto.png`` (and ``curves.png``): every trial in teacher-normalised units, the front
  highlighted, the teacher at (1, 1), vanilla DMD marked, trials below the fidelity floor greyed;
- ``summary.json``: the front, the recommended trial, the best per metric, the hypervolume,
  cache statistics, compute spent.

Each file is written whole or not at all (`dpdmd.data.atomic`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd

from dpdmd.data.atomic import atomic_path

from .front import reference_points
from .plots import plot_curves, plot_pareto
from .results import SCORE_AXES


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
    try:
        with atomic_path(path, keep_suffix=True) as tmp:  # matplotlib reads the format from the suffix
            yield tmp
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
