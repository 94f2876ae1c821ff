"""A resumed trial whose Ray checkpoint is gone resumes anyway (`RestoreWithoutCheckpoint`).

A trial resumes from its resumable state in ``TRIAL/resume/`` (`tune.trial.saves.ResumeStore`),
never from its Ray checkpoint (the student of its best report so far). Ray still restores the
trial's actor from the checkpoint its experiment state names, and a checkpoint that is gone
fails the trial ("Could not recover from checkpoint as it does not exist on storage anymore").
That happens after a full disk: ``--resume`` puts back the last whole copy of Ray's state
(`tune.storage.state_backup`), which names the checkpoint of its time, and Ray has deleted that
checkpoint since. Ray keeps one per trial, the best, and the best is always the latest
(`tune.run.tuner.best_checkpoint_config`). Seen once in two runs of
tests/faults/test_full_disk.py's search. In that case Ray is handed an empty folder instead,
with the checkpoint's metrics, which hold Ray's iteration counters.
"""

from __future__ import annotations

import sys
import tempfile


class RestoreWithoutCheckpoint:
    """Mixin of the search's Tune trainable (``__mixins__`` of its function, before
    ``FunctionTrainable``): ``restore`` with a checkpoint that no longer exists restores from an
    empty folder (module docstring)."""

    def restore(self, checkpoint_path):
        from ray.train._internal.checkpoint_manager import _TrainingResult
        from ray.train._internal.storage import _exists_at_fs_path
        from ray.tune import Checkpoint

        checkpoint = getattr(checkpoint_path, "checkpoint", None)
        if isinstance(checkpoint_path, _TrainingResult) and checkpoint is not None \
                and not _exists_at_fs_path(checkpoint.filesystem, checkpoint.path):
            print(f"warning: the trial's Ray checkpoint {checkpoint.path} is gone; the trial resumes from its "
                  "resumable state (resume/), as it always does", file=sys.stderr, flush=True)
            empty = Checkpoint.from_directory(tempfile.mkdtemp(prefix="dpdmd-no-checkpoint-"))
            checkpoint_path = _TrainingResult(checkpoint=empty, metrics=checkpoint_path.metrics)
        return super().restore(checkpoint_path)
