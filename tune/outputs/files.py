"""What a search leaves behind, under the experiment directory (`write_outputs`):

- ``trials.parquet``: one row per report (trial id, its configuration, every metric), a resumed
  trial's repeated reports once (the copy written last: `tune.outputs.kept.unique_reports`);
- ``kept.parquet``: one row per trial, its kept student (`tune.outputs.kept.kept_reports`: the last
  report with a checkpoint; a trial that kept none by its last report, ``checkpoint`` null);
- ``pareto.parquet``: each backbone's front, with a ``backbone`` column (`tune.outputs.front`);
- ``pareto.png``: one panel per backbone in the front's own axes, and the raw-units panel where one
  evaluator scored several backbones alike (`tune.outputs.front_figure`); ``curves.png``: J against
  student updates per trial, by configuration, ASHA's rungs and the kept students marked
  (`tune.outputs.curves_figure`);
- ``summary.json``: per backbone its front, recommended student, hypervolume and teacher, the
  evaluation settings and the raw-units comparison, the best per metric, cache statistics,
  compute spent.

Each file is written whole or not at all (`dpdmd.data.atomic`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd

from dpdmd.data.atomic import atomic_path

from .curves_figure import curves_figure
from .front_figure import pareto_figure


def write_outputs(directory: Path, trials: pd.DataFrame, kept: pd.DataFrame, pareto: pd.DataFrame, summary: dict,
                  *, rungs: list[float] | None = None, min_student_updates: int = 0) -> dict[str, Path]:
    """Write every output file (``trials``: every report, once; ``kept``: one row per trial;
    ``pareto``: the fronts, `tune.outputs.front.pareto_rows`; ``rungs``: ASHA's milestones for
    curves.png); returns their paths by name."""
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
    try:
        with atomic_path(path, keep_suffix=True) as tmp:  # matplotlib reads the format from the suffix
            yield tmp
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
