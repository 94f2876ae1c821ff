"""Files written whole or not at all: beside themselves, then renamed into place.

A reader (another process, a resumed run) sees the previous file or the new one, never part of
one: a failed write (a full disk, an interrupt) removes what it wrote and leaves the previous file
as it was. This is the one such helper for local files; `tune.storage.uri.write_atomic` builds on
it for the search's storage URIs (dpdmd never imports tune).

    with atomic_path(out / "grid.png", keep_suffix=True) as tmp:   # a writer that takes a path
        image.save(tmp)
    write_atomic(out / "config.json", text)                          # bytes or text
"""

from __future__ import annotations

import contextlib
import os
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
