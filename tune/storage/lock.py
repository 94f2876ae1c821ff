"""One search per name at a time: the lock a search holds on its experiment folder from before it
checks the experiment until it ends (`acquire`), so that a second search of the same name is
refused before it starts anything, saying who holds the name and what to do.

- **A local storage** (a folder, NFS included): an ``flock`` on ``NAME/search.lock``. The kernel
  releases it when the process ends, however it ends (SIGKILL, a crash, the machine's reboot), so
  a crashed driver never leaves the name locked; the file may stay behind, unlocked, and is reused.
  The file holds the holder's host, pid, start time and command, for the message. A search that
  ends normally removes it (after checking that the file is still the one it locked).
- **A URI storage** (s3://, gs://: no locks there): a lease, ``NAME/search.lease``, naming the
  holder (host, pid, a random token, the command) and a heartbeat the holder rewrites every
  `HEARTBEAT_S`. A lease whose heartbeat is older than `STALE_AFTER_S` is stale (its driver is
  gone) and a later search takes it over, saying whose it was. An object store has no
  create-if-absent through pyarrow, so taking the lease is write, wait `SETTLE_S`, read back (the
  later writer wins and the earlier one is refused); the heartbeat also checks that the lease is
  still its own and says so loudly if another search took it. A search that ends normally deletes
  its lease. The heartbeat is the holder's clock: the machines' clocks must agree to well within
  `STALE_AFTER_S` (NTP does).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .uri import filesystem, join_uri

LOCK_FILE = "search.lock"
LEASE_FILE = "search.lease"
HEARTBEAT_S = 30.0  # a lease's heartbeat is rewritten this often
STALE_AFTER_S = 150.0  # ... and taken over by another search this long after the last one (5 beats missed)
SETTLE_S = 2.0  # between writing a lease and reading it back (a concurrent writer's PUT lands first)


class SearchInUse(Exception):
    """The experiment name is held by another search; the message says by whom and what to do."""


def holder_record(command: list[str] | None = None, **extra) -> dict:
    """Who holds the lock: this process's host, pid, start time and command line."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(command or sys.argv), **extra}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another search (its details could not be read)"
    return (f"another search (pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
            f"{holder.get('started', '?')}: {holder.get('command', '?')})")


@dataclass
class SearchLock:
    """The lock held on ``experiment`` (`acquire`); `release` lets it go (also on ``with`` exit)."""

    experiment: str
    path: str
    fd: int | None = None  # the flock'd file (local storage)
    token: str | None = None  # the lease's token (URI storage)
    holder: dict = field(default_factory=dict)
    taken_over: dict | None = None  # the stale lease this search took over, if any
    lost: str | None = None  # set by the heartbeat when another search took the lease
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def release(self, *, remote: bool = True) -> None:
        """Let the name go. ``remote`` False: leave a URI lease to go stale (its storage is lost)."""
        if self.fd is not None:
            try:
                here, there = os.fstat(self.fd), os.stat(self.path)
                if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                    os.unlink(self.path)  # still ours: nobody else can hold it while we do
            except OSError:
                pass
            os.close(self.fd)  # the flock goes with it
            self.fd = None
            try:
                os.rmdir(self.experiment)  # a refused search leaves no empty folder behind
            except OSError:
                pass
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            if remote and self.lost is None:
                try:
                    if (_read_lease(self.path) or {}).get("token") == self.token:
                        fs, path = filesystem(self.path)
                        fs.delete_file(path)
                except OSError:
                    pass


def acquire(storage: str, name: str, *, command: list[str] | None = None, heartbeat_s: float = HEARTBEAT_S,
            stale_after_s: float = STALE_AFTER_S, settle_s: float = SETTLE_S) -> SearchLock:
    """Hold the name ``name`` under ``storage`` for this process, or raise `SearchInUse` (its
    message says who holds it and what to do). Release with `SearchLock.release` (or ``with``)."""
    experiment = join_uri(storage, name)
    if "://" in storage:
        return _acquire_lease(experiment, name, command, heartbeat_s=heartbeat_s, stale_after_s=stale_after_s,
                              settle_s=settle_s)
    return _acquire_flock(experiment, name, command)


# --- a local folder: flock ------------------------------------------------------------------------

def _acquire_flock(experiment: str, name: str, command) -> SearchLock:
    import fcntl

    path = os.path.join(experiment, LOCK_FILE)
    for _ in range(20):  # the file may be removed (its holder ended) between our open and our flock
        os.makedirs(experiment, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed by a search that just ended: again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise SearchInUse(
                f"--name: the search {name!r} in {os.path.dirname(experiment)} is in use by {_describe(holder)}. "
                f"Wait for it to end, or run this one with another --name. Its lock ({path}, an flock) is "
                "released when that process ends, however it ends (a crash or SIGKILL too): there is no "
                "file to remove") from None
        here, there = os.fstat(fd), _stat(path)
        if there is None or (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
            os.close(fd)  # we locked a file its holder had just removed: take the new one
            continue
        holder = holder_record(command)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return SearchLock(experiment, path, fd=fd, holder=holder)
    raise OSError(errno.EAGAIN, f"cannot take the lock {path}: it keeps being replaced")


def _stat(path: str):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _read_holder(fd: int) -> dict | None:
    try:
        data = os.pread(fd, 65536, 0)
        return json.loads(data) if data else None
    except (OSError, ValueError):
        return None


# --- a URI: a lease with a heartbeat --------------------------------------------------------------

def _read_lease(uri: str) -> dict | None:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.readall())
    except ValueError:  # half written (it should not be: a PUT is whole): nobody's
        return None


def _write_lease(uri: str, lease: dict) -> None:
    from .uri import write_atomic

    fs, path = filesystem(uri)
    write_atomic(fs, path, json.dumps(lease).encode())


def _acquire_lease(experiment: str, name: str, command, *, heartbeat_s: float, stale_after_s: float,
                   settle_s: float) -> SearchLock:
    uri = join_uri(experiment, LEASE_FILE)
    fs, root = filesystem(experiment)
    fs.create_dir(root, recursive=True)
    current = _read_lease(uri)
    age = time.time() - float(current.get("heartbeat", 0)) if current else None
    if current is not None and age < stale_after_s:
        raise SearchInUse(_lease_in_use(name, experiment, uri, current, age, stale_after_s))
    token = uuid.uuid4().hex
    holder = holder_record(command, token=token)
    _write_lease(uri, dict(holder, heartbeat=time.time()))
    time.sleep(settle_s)
    now = _read_lease(uri)
    if (now or {}).get("token") != token:  # another search wrote its lease after ours: it has the name
        raise SearchInUse(_lease_in_use(name, experiment, uri, now, 0.0, stale_after_s))
    lock = SearchLock(experiment, uri, token=token, holder=holder, taken_over=current)
    if current is not None:
        print(f"warning: took over the stale lease of the search {name!r} ({_describe(current)}; its last "
              f"heartbeat {age:.0f} s ago, more than {stale_after_s:.0f} s)", file=sys.stderr)
    lock._thread = threading.Thread(target=_heartbeat, args=(lock, name, heartbeat_s), daemon=True,
                                    name="dpdmd-search-lease")
    lock._thread.start()
    return lock


def _lease_in_use(name: str, experiment: str, uri: str, lease: dict | None, age: float, stale_after_s: float) -> str:
    return (f"--name: the search {name!r} in {experiment.rsplit('/', 1)[0]} is in use by {_describe(lease)}; its "
            f"last heartbeat {age:.0f} s ago. Wait for it to end, or run this one with another --name. If that "
            f"search is gone, its lease ({uri}) is taken over by the next search {stale_after_s:.0f} s after its "
            "last heartbeat; to take it at once, delete that file")


def _heartbeat(lock: SearchLock, name: str, every: float) -> None:
    while not lock._stop.wait(every):
        try:
            lease = _read_lease(lock.path)
            if (lease or {}).get("token") != lock.token:
                lock.lost = f"another search took the lease of {name!r}: {_describe(lease)}"
                print(f"error: {lock.lost}; two searches now write {lock.experiment}", file=sys.stderr)
                return
            _write_lease(lock.path, dict(lock.holder, heartbeat=time.time()))
        except OSError:  # the storage is away for a moment; the next beat tries again
            continue
