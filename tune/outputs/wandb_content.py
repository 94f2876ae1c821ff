"""What the W&B summary run of a search holds, as its users expect to find it.

- **config**: the space as written (``space``: the YAML, its ``${VARS}`` unexpanded) and each
  trial's resolved `dpdmd.TrainConfig` (``trials``: ``{trial_id: {"label": "K=10 λ=0.05", ...}}``)
  (`run_config`);
- **every report** as the table ``reports/table`` (one row per report: trial, its configuration
  label, ``student_updates``, the scores, J, whether its student was kept) and the line plot
  ``reports/J`` of J against ``student_updates``, one line per trial named by its configuration
  (`report_payload`);
- **the front's students** as artifacts of type ``model`` (`student_artifacts`), named
  ``<experiment>-<backbone>-<trial>``, with the record's scores and configuration as metadata and
  aliases ``front`` (and ``recommended``): by default a reference to the student in the search's
  storage (``add_reference``; nothing is copied), uploaded instead when the space sets
  ``wandb.upload_students: true``.

Checkpoints are named by their storage URI (``s3://...``, or ``file://`` + the path on a local
storage), never by a local copy's path.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .labels import trial_labels

__all__ = ["report_payload", "run_config", "student_artifacts", "storage_uri_of"]

REPORT_COLUMNS = ("trial_id", "label", "backbone", "student_updates", "training_iteration", "diversity", "quality",
                  "diversity_score", "quality_score", "objective", "kept_student")


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def run_config(space, kept: pd.DataFrame, *, experiment: str | None = None) -> dict:
    """The run's config: ``space`` (the file as written), ``experiment`` (its storage URI) and
    ``trials``: each trial of ``kept`` (one row per trial) by id, with its configuration label and
    its resolved TrainConfig (``space.train_config`` of the trial's searched values)."""
    from dpdmd.config import load_yaml

    from .front import CONFIG_COLUMNS

    labels = trial_labels(kept, backbone=True) if not kept.empty else {}
    trials = {}
    for row in kept.to_dict("records"):
        overrides = {c: _plain(row[c]) for c in CONFIG_COLUMNS if c in row and _plain(row[c]) is not None}
        trials[str(row["trial_id"])] = {"label": labels[str(row["trial_id"])],
                                        **space.train_config(overrides).to_dict()}
    return {"space": load_yaml(space.path), "space_file": Path(space.path).name, "experiment": experiment,
            "trials": trials}


def report_payload(wandb: Any, reports: pd.DataFrame, kept: pd.DataFrame) -> dict[str, Any]:
    """``reports/table`` (every report, `REPORT_COLUMNS` where present) and ``reports/J`` (J against
    student_updates, a line per trial named by its configuration), for ``run.log``."""
    labels = trial_labels(reports, backbone=True)
    was_kept = kept["kept"] if "kept" in kept else [True] * len(kept)
    kept_at = {(str(t), u) for t, u, k in zip(kept["trial_id"], kept["student_updates"], was_kept) if k}
    table = reports.assign(label=reports["trial_id"].astype(str).map(labels),
                           kept_student=[(str(t), u) in kept_at for t, u in zip(reports["trial_id"],
                                                                                  reports["student_updates"])])
    table = table[[c for c in REPORT_COLUMNS if c in table]].reset_index(drop=True)
    table["objective"] = table["objective"].astype(float).where(table["objective"].astype(float) > -math.inf)
    reports_table = wandb.Table(dataframe=table)
    return {"reports/table": reports_table,
            "reports/J": wandb.plot.line(reports_table, "student_updates", "objective", stroke="label",
                                         title="J against student updates, per trial (by configuration)")}


def storage_uri_of(path: str) -> str:
    """A checkpoint's URI: a URI as it is; a local path as ``file://`` + its absolute path."""
    return path if "://" in path else Path(path).expanduser().resolve().as_uri()


def student_artifacts(wandb: Any, students: list[Mapping], *, experiment: str,
                      recommended: Mapping[str, Mapping] | None = None, upload: bool = False) -> list[tuple[Any, list[str]]]:
    """``[(artifact, aliases)]``: one ``model`` artifact per record of ``students`` (the front's
    records of ``summary.json``: ``trial_id``, ``backbone``, ``checkpoint``, scores,
    configuration); ``recommended`` (``{backbone: record}``) adds the alias ``recommended``.
    ``upload``: copy the student's files into the artifact (from a remote storage through a
    temporary folder) instead of referring to them. A record without a checkpoint is skipped."""
    from dpdmd.student import STUDENT_DIR

    picks = {(b, str(r.get("trial_id"))) for b, r in (recommended or {}).items() if r}
    out = []
    for record in students:
        checkpoint = record.get("checkpoint")
        if not isinstance(checkpoint, str):
            continue
        backbone, trial = str(record.get("backbone")), str(record.get("trial_id"))
        metadata = {k: _plain(v) for k, v in record.items()}
        metadata["checkpoint"] = storage_uri_of(checkpoint)
        artifact = wandb.Artifact(_artifact_name(experiment, backbone, trial), type="model", metadata=metadata,
                                  description=f"DP-DMD student of {backbone}, trial {trial}, kept by search {experiment}")
        source = _student_folder(checkpoint, STUDENT_DIR)
        if upload:
            artifact.add_dir(str(_local_copy(source)), name=STUDENT_DIR)
        else:
            uri = storage_uri_of(source)
            artifact.add_reference(uri, name=STUDENT_DIR, checksum=uri.startswith("file://"))
        out.append((artifact, ["front", *(["recommended"] if (backbone, trial) in picks else [])]))
    return out


def _artifact_name(experiment: str, backbone: str, trial: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{experiment}-{backbone}-{trial}").strip("-")


def _student_folder(checkpoint: str, student_dir: str) -> str:
    """The kept checkpoint's ``student/`` folder where it has one, else the checkpoint itself."""
    import pyarrow.fs as pafs

    from ..storage.uri import filesystem, join_uri

    candidate = join_uri(checkpoint, student_dir)
    fs, root = filesystem(candidate)
    return candidate if fs.get_file_info(root).type == pafs.FileType.Directory else checkpoint


def _local_copy(folder: str) -> Path:
    """``folder`` as a local directory: itself when local, else a temporary copy."""
    if "://" not in folder:
        return Path(folder)
    import pyarrow.fs as pafs

    from ..storage.uri import filesystem

    target = Path(tempfile.mkdtemp(prefix="dpdmd-student-"))
    fs, root = filesystem(folder)
    pafs.copy_files(root, str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return target
