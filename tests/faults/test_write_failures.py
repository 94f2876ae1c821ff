"""A failed write is known for the disk's by what happened, not by the error's text (issue 24,
section 3): torch.save reports a full disk as "basic_ios::clear: iostream error" or "[enforce
fail at inline_container.cc:672] unexpected pos", with no errno; `dpdmd.data.atomic.write_failure`
looks for the OS error, else asks the disk for the room (``posix_fallocate``), else reads the space
left. `dpdmd.training.run_files.writing` turns it into "cannot write FILE: No space left on device;
N MiB free there"; any other error goes on as it was."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpdmd.data import atomic
from dpdmd.training.run_files import writing

ROOT = Path(__file__).resolve().parents[2]


def test_an_error_that_is_not_the_disks_goes_on_whatever_its_text(tmp_path):
    # plenty of space here: a RuntimeError mentioning a write is not a full disk
    with pytest.raises(RuntimeError, match="file write failed"):
        with writing(tmp_path / "state.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] file write failed")
    with pytest.raises(ValueError):
        with writing(tmp_path / "state.pt"):
            raise ValueError("not a write at all")


def test_a_torch_error_without_write_in_its_text_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    asked = []

    def no_room(fd, offset, length):
        asked.append(length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "posix_fallocate", no_room)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.pt").write_bytes(b"\0" * (3 << 20))  # the checkpoint it replaces
    with pytest.raises(OSError) as raised:
        with writing(tmp_path / "checkpoint" / "state.pt"):
            raise RuntimeError("basic_ios::clear: iostream error")
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.strerror.startswith(f"cannot write {tmp_path}/checkpoint/state.pt: No space left on device; ")
    assert raised.value.strerror.endswith("MiB free there")
    assert isinstance(raised.value.__cause__, RuntimeError)  # the original stays attached
    assert asked == [3 << 20]  # room asked for: what the file it replaces takes
    assert not [p for p in (tmp_path / "checkpoint").iterdir() if p.name != "state.pt"]  # the probe removed


def test_the_os_error_behind_an_error_is_the_reason(tmp_path):
    with pytest.raises(OSError) as raised:
        with writing(tmp_path / "metrics.csv"):
            try:
                raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
            except OSError as err:
                raise RuntimeError("write failed") from err
    assert raised.value.errno == errno.EDQUOT and "Disk quota exceeded" in str(raised.value)


def test_little_space_left_is_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "free_bytes", lambda path: atomic.FULL_DISK_BYTES - 1)
    why = atomic.write_failure(tmp_path / "state.pt", RuntimeError("unexpected pos 4096 vs 0"))
    assert why is not None and why.errno == errno.ENOSPC
    monkeypatch.setattr(atomic, "free_bytes", lambda path: atomic.FULL_DISK_BYTES + 1)
    assert atomic.write_failure(tmp_path / "state.pt", RuntimeError("unexpected pos 4096 vs 0")) is None


def _namespace_works() -> bool:
    from tests.faults.test_full_disk import _namespace_works as works

    return works()


@pytest.mark.skipif(not _namespace_works(), reason="cannot mount a tmpfs in a user namespace here")
def test_torch_save_on_a_real_full_disk(tmp_path):
    disk, result = tmp_path / "disk", tmp_path / "result.json"
    disk.mkdir()
    script = f"mount -t tmpfs -o size=64m tmpfs {disk} && exec {sys.executable} tests/faults/full_disk_torch.py {disk} {result}"
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(result.read_text())
    for case, file in (("first", "first/state.pt"), ("rewrite", "rewrite/checkpoint/state.pt")):
        seen = out[case]
        assert seen.get("errno") == errno.ENOSPC, (case, seen)  # torch's own error was not an OSError
        assert seen["message"].startswith(f"cannot write {disk}/{file}: No space left on device; "), seen
        assert "OSError" not in seen["cause"], seen  # it was recognised by the disk, not handed an errno
    assert out["free_before_rewrite_mib"] > atomic.FULL_DISK_BYTES / 2**20  # the room asked for decided it
    assert out["rewrite_kept_iteration"] == 1  # the previous checkpoint is whole
    assert out["left_behind"] == []  # no half-written copy
