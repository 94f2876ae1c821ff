"""The run's output folder besides its checkpoint: ``config.json``, ``metrics.csv`` (one row per
evaluation; the rows past the checkpoint are dropped on resume), the sample grids under
``samples/`` and the teacher's reference (``teacher_metrics.json``, ``samples/teacher.png``).

Each file is written whole or not at all (beside itself, then renamed), and a failed write is an
OSError naming the file and the space left there (`writing`): a full disk corrupts nothing
already written, and the run continues with ``--resume`` once there is space.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import shutil
from pathlib import Path

import torch

from ..config import TrainConfig
from ..data.atomic import atomic_path, free_bytes, write_atomic, write_failure
from ..evaluation.protocol import save_grid, teacher_reference


def prepare_out_dir(out_dir: str | Path | None, config: TrainConfig) -> Path | None:
    """``out_dir`` created, with the run's ``config.json`` (None: the run writes nowhere)."""
    if out_dir is None:
        return None
    out = Path(out_dir)
    with writing(out / "config.json"):
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.json", json.dumps(config.to_dict(), indent=2))
    return out


def write_teacher_reference(out: Path | None, config, backbone, method, embed, evaluator) -> None:
    """The teacher's own scores and samples on the same evaluation set: the reference to read the
    student's against (cached on disk, so a search computes them once per backbone). Also hands
    an evaluator that scores against the teacher's samples (the real one) its reference."""
    needs_reference = evaluator is not None and evaluator.uses_teacher_reference
    written = out is not None and (out / "teacher_metrics.json").exists()  # a resumed run
    if written and not needs_reference:
        return
    reference, grid = teacher_reference(config, backbone, method.teacher, embed, evaluator)
    if out is None or written:
        return
    with writing(out / "samples" / "teacher.png"):
        (out / "samples").mkdir(exist_ok=True)
        _copy(grid, out / "samples" / "teacher.png")
    with writing(out / "teacher_metrics.json"):
        write_atomic(out / "teacher_metrics.json", json.dumps(reference, indent=1))


def write_samples(out: Path, images: torch.Tensor, updates: int) -> None:
    """The student's samples (P, N, C, H, W) after ``updates`` student updates, as
    ``samples/student_NNNNN.png`` and its copy ``samples/student_latest.png``."""
    grid = out / "samples" / f"student_{updates:05d}.png"
    with writing(grid):
        _save_grid(images, grid)
    with writing(out / "samples" / "student_latest.png"):
        _copy(grid, out / "samples" / "student_latest.png")


def log_metrics(out: Path, metrics: dict) -> None:
    """``metrics`` appended as a row of ``out/metrics.csv`` (the file rewritten whole)."""
    with writing(out / "metrics.csv"):
        _append_metrics(out / "metrics.csv", metrics)


def _append_metrics(path: Path, metrics: dict) -> None:
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    columns = list(dict.fromkeys([*(rows[0].keys() if rows else []), *metrics.keys()]))
    rows.append({k: metrics.get(k, "") for k in columns})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, [r for r in reader if int(float(r["iteration"])) <= iteration]
    with writing(path), atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _save_grid(images: torch.Tensor, path: Path) -> None:
    with atomic_path(path, keep_suffix=True) as tmp:  # PIL reads the format from the suffix
        save_grid(images, tmp)


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


@contextlib.contextmanager
def writing(path: Path, *, size: int | None = None):
    """Turn a failed write (a full, read-only or failing disk, a quota) into an OSError naming
    ``path`` and the space left there. Whether the disk is why is judged by what happened
    (`dpdmd.data.atomic.write_failure`: the OS error, or the disk asked for room for ``size`` bytes,
    default ``path``'s current size), not by the error's text: torch.save reports ENOSPC as a
    RuntimeError ("basic_ios::clear: iostream error", "unexpected pos", "file write failed").
    Any other error goes on as it was."""
    try:
        yield
    except Exception as err:
        why = write_failure(path, err, size=size)
        if why is None:
            raise
        try:
            free = f"; {free_bytes(path.parent) / 2**20:.1f} MiB free there"
        except OSError:
            free = ""
        reason = why.strerror or str(why)
        raise OSError(why.errno or errno.EIO, f"cannot write {path}: {reason}{free}") from err
