"""Run by tests/faults/test_full_disk.py inside a mount namespace (``unshare -Urm``) whose ROOT is
a small tmpfs: a real full disk, no root and no fault-injecting I/O wrapper needed.

    python tests/faults/full_disk_run.py ROOT SNAPSHOTS [LEAVE_BYTES]

1. ``dpdmd.train`` writes into ROOT/run; right after its 2nd checkpoint the disk is filled up
   (a file of zeros until ENOSPC, then LEAVE_BYTES of it freed again: room for the samples and
   the metrics, not for the checkpoint), so the 3rd evaluation's writes fail for real.
2. A copy of ROOT/run goes to SNAPSHOTS/failed (outside the tmpfs), the filler is deleted, and
   ``--resume`` continues the run; its result goes to SNAPSHOTS/resumed.
SNAPSHOTS/result.json: each step's exit status and stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

from tests.dpdmd.helpers import register_random_backbones

FLAGS = ["--backbone", "test-random-flow", "--iterations", "12", "--batch-size", "2", "--teacher-steps", "10",
         "--anchor-k", "3", "--fake-updates", "1", "--eval-prompts", "3", "--eval-seeds-per-prompt", "4",
         "--eval-every", "2", "--device", "cpu", "--no-progress"]


def fill(path: Path, leave: int = 0) -> None:
    """Fill the disk of ``path`` with a file of zeros until ENOSPC, then free ``leave`` bytes of it."""
    block = b"\0" * (1 << 16)
    with contextlib.suppress(OSError), open(path, "wb", buffering=0) as f:
        while True:
            f.write(block)
    if leave:
        os.truncate(path, max(0, path.stat().st_size - leave))


def run(argv: list[str]) -> tuple[int, str]:
    train_cli = importlib.import_module("dpdmd.cli.train")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = train_cli.main(argv)
    return code, err.getvalue()


def main(root: Path, snapshots: Path, leave: int = 0) -> None:
    import dpdmd.training.loop as loop

    register_random_backbones()
    save, saved = loop.save_checkpoint, []

    def save_then_fill_the_disk(*args, **kwargs):
        save(*args, **kwargs)
        saved.append(1)
        if len(saved) == 2:
            fill(root / "filler", leave)

    loop.save_checkpoint = save_then_fill_the_disk
    out = root / "run"
    result = {"failed": run([*FLAGS, "--out", str(out)])}
    shutil.copytree(out, snapshots / "failed")
    (root / "filler").unlink()  # space freed
    loop.save_checkpoint = save
    result["resumed"] = run([*FLAGS, "--out", str(out), "--resume"])
    shutil.copytree(out, snapshots / "resumed")
    (snapshots / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
