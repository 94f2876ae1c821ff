"""Run by tests/faults/test_full_disk.py (and bench/faults.py) inside a mount namespace whose ROOT
is a small tmpfs: a search whose storage fills up mid-search, then ``--resume`` once space is freed.

    python tests/faults/full_disk_search.py ROOT SPACE SNAPSHOTS

The disk is filled (a file of zeros until ENOSPC) as soon as a trial has saved something in the
storage: its student (a Ray checkpoint) or its resumable state (``TRIAL/resume/``,
`tune.trial.saves`). SNAPSHOTS/failed and SNAPSHOTS/resumed: copies of the experiment after each
step (what fits); SNAPSHOTS/result.json: each step's exit status, output tail, the driver's own warning and error
lines and seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.faults.full_disk_run import fill

ROOT = Path(__file__).resolve().parents[2]


def search(space: Path, storage: Path, *extra: str, timeout: float = 1200) -> dict:
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "tune.search", "--space", str(space), "--storage", str(storage),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled"))
    said = [line for line in proc.stderr.splitlines() if line.startswith(("warning:", "error:"))]  # ours, whole
    return {"code": proc.returncode, "output": (proc.stdout + proc.stderr)[-8000:], "said": said,
            "seconds": round(time.time() - started, 1)}


def main(root: Path, space: Path, snapshots: Path) -> None:
    storage = root / "runs"
    filled = []

    def fill_after_first_checkpoint():
        while not filled:
            # a trial's first save: its student (a Ray checkpoint) or its resumable state (TRIAL/resume/)
            if any(storage.glob("*/run_search_trial_*/checkpoint_*")) or \
                    any(storage.glob("*/run_search_trial_*/resume/latest.json")):
                fill(root / "filler")
                filled.append(time.time())
            time.sleep(0.2)

    threading.Thread(target=fill_after_first_checkpoint, daemon=True).start()
    result = {"failed": search(space, storage)}
    result["filled"] = bool(filled)
    filled.append(0)  # stop the thread if it never filled
    shutil.copytree(storage, snapshots / "failed", ignore=shutil.ignore_patterns("checkpoint_*", "resume"))
    (root / "filler").unlink(missing_ok=True)  # space freed
    result["resumed"] = search(space, storage, "--resume")
    shutil.copytree(storage, snapshots / "resumed", ignore=shutil.ignore_patterns("checkpoint_*", "resume"))
    (snapshots / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
