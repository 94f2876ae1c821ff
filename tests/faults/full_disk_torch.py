"""Run by tests/faults/test_write_failures.py inside a mount namespace whose ROOT is a 64 MiB
tmpfs: torch.save failing for lack of space, as a checkpoint write fails, with torch's own errors
(no errno in them: "basic_ios::clear: iostream error", "unexpected pos ...").

    python tests/faults/full_disk_torch.py ROOT RESULT.json

- ``first``: the disk filled but for 4 MiB; an 8 MiB state written into ROOT/first (no file there
  before: the error is known for the disk's by the space left, under 16 MiB);
- ``rewrite``: ROOT/rewrite/checkpoint holds a 24 MiB state; the disk filled but for 20 MiB (more
  than that threshold); the next 24 MiB state fails (known by asking the disk for the room the
  file it replaces takes); the previous checkpoint must be intact and no temporary file left.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from dpdmd.config import from_mapping
from dpdmd.training.checkpoints import save_checkpoint
from dpdmd.training.run_files import writing
from tests.faults.full_disk_run import fill

MiB = 1 << 20


def outcome(call) -> dict:
    try:
        call()
        return {"ok": True}
    except OSError as err:
        return {"errno": err.errno, "message": err.strerror, "cause": f"{type(err.__cause__).__name__}: {err.__cause__}"[:300]}
    except Exception as err:  # noqa: BLE001 - what the test must not see
        return {"raised": type(err).__name__, "message": str(err)[:300]}


def state(mib: int) -> dict:
    return {"w": torch.zeros(mib * MiB // 4)}


def main(root: Path, result: Path) -> None:
    config = from_mapping({"backbone": "digits-flow"}, source="test")
    out = {}
    (root / "first").mkdir()
    fill(root / "filler", 4 * MiB)

    def first():
        with writing(root / "first" / "state.pt"):
            torch.save(state(8), root / "first" / "state.pt")

    out["first"] = outcome(first)
    os.unlink(root / "filler")

    checkpoint = root / "rewrite" / "checkpoint"
    save_checkpoint(checkpoint, state(24), config, 1)
    fill(root / "filler", 20 * MiB)
    out["free_before_rewrite_mib"] = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize / MiB

    def rewrite():
        with writing(checkpoint / "state.pt"):
            save_checkpoint(checkpoint, state(24), config, 2)

    out["rewrite"] = outcome(rewrite)
    kept = torch.load(checkpoint / "state.pt", weights_only=False)
    out["rewrite_kept_iteration"] = kept["iteration"]
    out["left_behind"] = sorted(p.name for p in (root / "rewrite").iterdir() if p.name != "checkpoint")
    result.write_text(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
