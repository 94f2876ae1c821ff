"""What a trial keeps, sized for real models: the student at each new best, the resumable state at
a cadence.

At every evaluation the trainer asks the trial what to save (`dpdmd.training.checkpoints.Saves`):

- **the student** (`dpdmd.student`: the network in the dtype it is served in, or the LoRA adapter
  alone) when the report is the trial's new best by ``shown_objective`` (J where the report is
  eligible for the front: past ``objective.min_student_updates`` and at or above the fidelity floor;
  ties to the later report). It becomes the report's Ray checkpoint, so a trial's registered
  checkpoints rise in score and Ray's own best checkpoint (``Result.get_best_checkpoint``) is the
  student the search shows and recommends. ~4.5 GB for SD3.5-M (bf16), MB for a LoRA adapter.
- **the full resumable state** (fp32 student and fake score with both optimisers: ~54 GB for SD3.5-M
  full fine-tuning) every ``checkpoint.state_every_minutes`` of training (0: at every report), into
  the trial's folder in the storage, ``TRIAL/resume/`` (`ResumeStore`), not into Ray's checkpoints:
  a restarted trial (a node lost, Ray's retry, ``--resume``) continues from it and repeats the
  reports after it, which give the same numbers (the run is deterministic).

`TrialSaves` is the trainer's ``saves`` rule for one trial; it keeps the best J so far, restored
with the state so that a resumed trial's checkpoints keep rising.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dpdmd.training.checkpoints import Saves

from ..storage.uri import filesystem, join_uri, write_atomic
from .objective import objective_metrics, shown_objective

RESUME = "resume"  # TRIAL/resume/: the latest resumable state of a trial, in the storage
POINTER = "latest.json"  # TRIAL/resume/latest.json names the last complete upload


@dataclass
class TrialSaves:
    """The ``saves`` rule of one trial: the student at each new best shown J, the state every
    ``state_every_s`` seconds of the trial's wall time (0: at every report)."""

    teacher: dict  # the teacher's raw scores: {"diversity": D_T, "quality": Q_T}
    diversity_weight: float
    min_student_updates: int
    min_quality: float
    state_every_s: float
    best: float = -math.inf  # the best shown J so far (restored with a resumed state)
    last_state: float = 0.0  # time.monotonic() of the last state saved (0: none yet)

    def scores(self, metrics: dict) -> dict:
        """The report's teacher-normalised scores, J and shown J (`tune.trial.objective`)."""
        out = objective_metrics(metrics["diversity"], metrics["quality"], teacher_diversity=self.teacher["diversity"],
                                teacher_quality=self.teacher["quality"], diversity_weight=self.diversity_weight)
        out["shown_objective"] = float(shown_objective(out["objective"], metrics["student_updates"],
                                                       out["quality_score"], min_student_updates=self.min_student_updates,
                                                       min_quality=self.min_quality))
        return out

    def __call__(self, metrics: dict) -> Saves:
        shown = self.scores(metrics)["shown_objective"]
        student = math.isfinite(shown) and shown >= self.best  # ties to the later report, as Ray ranks them
        if student:
            self.best = shown
        now = time.monotonic()
        state = self.state_every_s <= 0 or not self.last_state or now - self.last_state >= self.state_every_s
        if state:
            self.last_state = now
        return Saves(student=student, state=state)


class ResumeStore:
    """A trial's resumable state in the storage, ``TRIAL/resume/``: each upload goes to a folder of
    its own (``iteration-N``), then ``latest.json`` is replaced to name it, then older folders are
    removed. A crash mid-upload leaves the pointer at the last complete state."""

    def __init__(self, trial_uri: str):
        self.uri = join_uri(trial_uri, RESUME)

    def upload(self, state_dir: Path, *, iteration: int, best: float) -> None:
        """Copy the checkpoint folder ``state_dir`` (``state.pt``, ...) up and point at it."""
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri)
        name = f"iteration-{iteration}"
        fs.create_dir(f"{root}/{name}", recursive=True)
        pafs.copy_files(str(Path(state_dir).resolve()), f"{root}/{name}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
        write_atomic(fs, f"{root}/{POINTER}", json.dumps({"folder": name, "iteration": iteration,
                                                          "best_shown_objective": best}).encode())
        for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and info.base_name != name:
                fs.delete_dir(info.path)

    def latest(self) -> dict | None:
        """The pointer of the last complete upload ({"folder", "iteration", "best_shown_objective"}), or None."""
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri)
        if fs.get_file_info(f"{root}/{POINTER}").type != pafs.FileType.File:
            return None
        with fs.open_input_stream(f"{root}/{POINTER}") as f:
            return json.loads(f.read())

    def download(self, target: Path) -> dict | None:
        """The last complete state copied into ``target`` (replaced); its pointer, or None."""
        import pyarrow.fs as pafs

        pointer = self.latest()
        if pointer is None:
            return None
        fs, root = filesystem(self.uri)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        pafs.copy_files(f"{root}/{pointer['folder']}", str(target.resolve()), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return pointer
