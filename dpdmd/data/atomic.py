"""Files written whole or not at all: beside themselves, then renamed into place.

A reader (another process, a resumed run) sees the previous file or the new one, never part of
one: a failed write (a full disk, an interrupt) removes what it wrote and leaves the previous file
as it was. This is the one such helper for local files; `tune.storage.uri.write_atomic` builds on
it for the search's storage URIs (dpdmd never imports tune).

    with atomic_path(out / "grid.png", keep_suffix=True) as tmp:   # a writer that takes a path
        image.save(tmp)
    write_atomic(out / "config.json", text)                          # bytes or text

`write_failure` says whether an error out of a write was the disk's (a full disk, a quota, a
read-only or failing disk), by the OS error or by asking the disk, never by the error's text.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def temporary_name(path: Path, *, keep_suffix: bool = False) -> Path:
    """A hidden name beside ``path``, unique to this call (threads and processes may write the same
    file): ``.NAME.XXXXXXXX.tmp``, or ``.STEM.XXXXXXXX.tmp.SUFFIX`` with ``keep_suffix`` (for
    writers that choose the format by the suffix, as PIL and matplotlib do)."""
    token = uuid.uuid4().hex[:8]
    if keep_suffix:
        return path.with_name(f".{path.stem}.{token}.tmp{path.suffix}")
    return path.with_name(f".{path.name}.{token}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block ends, rename it to ``path``.

    An exception in the block (or in the rename) removes the temporary file and propagates: ``path``
    keeps its previous content. ``fsync``: flush the file and the rename to the disk before
    returning (the write then survives a crash of the machine, not only of the process)."""
    path = Path(path)
    tmp = temporary_name(path, keep_suffix=keep_suffix)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync(path.parent)  # the rename itself


def write_atomic(path: str | os.PathLike, data: bytes | str, *, fsync: bool = False) -> None:
    """``path`` holds ``data`` (text is written as UTF-8) whole, or its previous content."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


# --- why a write failed ---------------------------------------------------------------------------

PROBE_BYTES = 1 << 20  # the least room a failed write is checked against
FULL_DISK_BYTES = 16 << 20  # less free than this where a write failed: the disk is full


def write_failure(path: str | os.PathLike, err: BaseException, *, size: int | None = None) -> OSError | None:
    """Why writing ``path`` failed with ``err``, judged by what happened rather than by the error's
    text (torch's writer reports ENOSPC as "basic_ios::clear: iostream error", "unexpected pos",
    "file write failed"...): an OSError (its errno and message), or None when the disk is not why.

    1. ``err`` or its cause (``raise ... from``), if an OSError: that error.
    2. Else the disk is asked: room for the write (``size`` bytes; default: ``path``'s current size,
       what a rewrite of it needs, at least `PROBE_BYTES`) is reserved beside ``path`` and freed
       (``posix_fallocate``: no data written): the OS's refusal (ENOSPC, EDQUOT, EROFS, EIO) is why.
    3. Else less than `FULL_DISK_BYTES` free there: ENOSPC (a write that filled the disk may
       have freed its part again by now)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            return err
        err = err.__cause__  # what raised it (``raise ... from``), not what was being handled then
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if size is None:
        try:
            size = Path(path).stat().st_size
        except OSError:
            size = 0
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    except OSError as refused:
        return refused
    try:
        os.posix_fallocate(fd, 0, max(size, PROBE_BYTES))
    except OSError as refused:
        return refused
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    if free_bytes(folder) < FULL_DISK_BYTES:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to this user on the filesystem of ``path`` (or of its nearest existing parent)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
