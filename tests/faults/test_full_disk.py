"""A full disk during `dpdmd.train` (issue 13): a real one, a small tmpfs mounted in a private
mount namespace (``unshare -Urm``, no root needed where user namespaces are allowed; skipped
where they are not). The error names the file that could not be written, exit status 1, nothing
already written is damaged, and ``--resume`` after space is freed finishes the run with no
duplicated row and the numbers of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _namespace_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _namespace_works(), reason="cannot mount a tmpfs in a user namespace here")


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_full_disk_names_the_file_keeps_what_was_written_and_resumes(tmp_path):
    from .full_disk_run import FLAGS, run

    disk, snapshots = tmp_path / "disk", tmp_path / "snapshots"
    disk.mkdir()
    snapshots.mkdir()
    script = f"mount -t tmpfs -o size=64m tmpfs {disk} && exec {sys.executable} tests/faults/full_disk_run.py " \
             f"{disk} {snapshots}"
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((snapshots / "result.json").read_text())

    code, err = result["failed"]
    assert code == 1, err
    # the first write after the disk filled up: the 3rd evaluation's sample grid
    assert f"error: cannot write {disk}/run/samples/student_00006.png: No space left on device; 0.0 MiB free" in err
    assert "continue with --resume" in err and "Traceback" not in err
    failed = snapshots / "failed"
    logged = rows(failed / "metrics.csv")  # whole rows only
    assert [r["student_updates"] for r in logged][:2] == ["2", "4"] and len(logged) <= 3
    state = torch.load(failed / "checkpoint" / "state.pt", weights_only=False)  # the last good one, whole
    assert state["iteration"] == 8  # 2nd evaluation: 4 student updates
    assert json.loads((failed / "config.json").read_text())["anchor_k"] == 3
    assert not list(failed.rglob("*.tmp*")), list(failed.rglob("*.tmp*"))  # half-written copies removed

    code, err = result["resumed"]
    assert code == 0, err
    resumed = rows(snapshots / "resumed" / "metrics.csv")
    assert [int(r["student_updates"]) for r in resumed] == [2, 4, 6]
    # the same numbers as a run the disk never interrupted
    from tests.dpdmd.helpers import register_random_backbones

    register_random_backbones()
    assert run([*FLAGS, "--out", str(tmp_path / "uninterrupted")])[0] == 0
    whole = rows(tmp_path / "uninterrupted" / "metrics.csv")
    for key in ("diversity", "quality", "loss_dmd"):
        assert [r[key] for r in resumed] == [r[key] for r in whole], key
