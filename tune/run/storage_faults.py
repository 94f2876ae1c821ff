"""When the storage fails during a search: recognising it and saying so.

`Tuner.fit` reading the results back raises whatever the storage's failure left behind (an OSError
from pyarrow when S3 stops answering; an EOFError unpickling one of Ray's files half written on a
full disk); `storage_failure` says whether an error is the storage's and why, with the least free
space seen while the search ran (`LeastFreeSpace`). `StorageLost` is what the search then raises
(exit status 1).
"""

from __future__ import annotations

import threading


class StorageLost(RuntimeError):
    """The search's storage stopped answering or filled up during the search."""


FULL_DISK_BYTES = 16 * 2**20  # less free than this on the storage: a full disk


class LeastFreeSpace:
    """The least free space seen on a local storage while a search runs (sampled every 0.5 s in a
    thread). A full disk is often partly freed again by the time Ray's error surfaces (half-written
    checkpoints are removed), so the space free at that moment can hide it: measured once in four
    runs of tests/faults/test_full_disk.py."""

    def __init__(self, storage: str, every: float = 0.5):
        self.storage, self.every, self.least = storage, every, None
        self._stop = threading.Event()

    def __enter__(self):
        if "://" not in self.storage:
            threading.Thread(target=self._sample, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def _sample(self) -> None:
        import shutil

        while not self._stop.wait(self.every):
            try:
                free = shutil.disk_usage(self.storage).free
            except OSError:
                continue
            self.least = free if self.least is None else min(self.least, free)


def storage_failure(storage: str, err: BaseException, *, least_free: int | None = None) -> str | None:
    """Why ``err`` (raised by ``Tuner.fit`` reading the results back) is the storage's fault, or
    None. Seen: S3 unreachable (an OSError from pyarrow), and a full disk (Ray's error files half
    written: an EOFError unpickling one). ``least_free``: the least free bytes seen during the
    search (`LeastFreeSpace`)."""
    import shutil

    if "://" in storage:
        return "it stopped answering" if isinstance(err, OSError) or "OSError" in repr(err) else None
    try:
        free = shutil.disk_usage(storage).free
    except OSError:
        return "it cannot be read"
    least = free if least_free is None else min(free, least_free)
    if least < FULL_DISK_BYTES and isinstance(err, (OSError, EOFError)):
        return f"its disk is full: {least / 2**20:.1f} MiB free at the least"
    return None


def first_line(err: BaseException) -> str:
    """The first line of an error's message, at most 200 characters (one-line reports)."""
    return (str(err).splitlines() or [""])[0][:200]
