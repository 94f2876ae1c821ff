"""A last whole copy of Ray Tune's experiment state, put back by ``--resume`` where a full or
failing storage left the state truncated.

Ray Tune keeps what a search resumes from (``experiment_state-*.json``, the searcher's and the
callbacks' state, each trial's ``progress.csv`` and ``result.json``) in a staging folder on the
driver and copies it over the storage's copies *in place*. A disk that fills up mid-search leaves
them cut short (measured: ``experiment_state-*.json`` cut at 40 KiB, ``search_gen_state-*.json``
and a trial's logs empty), and ``Tuner.restore`` then logs "Failed to restore the run state" and
starts the search again: every trial run so far is lost.

`StateBackup`, a Ray Tune callback, copies the staged state into ``NAME/ray_state_backup/`` after
each of Ray's saves: each file as a blob named by its SHA-256, then ``manifest.json`` naming the
blobs of one save. Every file is written beside itself, fsync'd and renamed (an object store's PUT
is all or nothing; `tune.storage.uri.write_atomic`), and the manifest last, so it only ever names
whole blobs of one consistent save; a write that fails (a full disk) leaves the previous copy. `restore_if_damaged`, called
before ``Tuner.restore``, puts the copy back when a state file in the storage is not whole.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import threading
import time
from pathlib import Path

from ray.tune import Callback

from .uri import filesystem, write_atomic

BACKUP_DIR = "ray_state_backup"
# Ray's per-session state files at the experiment's root (tune_controller, search_generator,
# searcher, basic_variant, callback: their CKPT_FILE_TMPL), and each trial's logs that a resumed
# trial appends to (Ray's logger callbacks download them from the storage first).
STATE_PREFIXES = ("experiment_state-", "search_gen_state-", "searcher-state-", "basic-variant-state-",
                  "callback-states-")
TRIAL_LOGS = ("progress.csv", "result.json")
STAGING: dict[str, str] = {}  # experiment URI -> Ray's driver staging folder (this process's search)


# --- what is whole -------------------------------------------------------------------------------

def staged_state(staging: Path) -> dict[str, Path]:
    """Ray's state files in its driver staging folder: {path relative to the experiment: file}."""
    files = {}
    for entry in sorted(staging.iterdir()) if staging.is_dir() else []:
        if entry.is_file() and entry.name.startswith(STATE_PREFIXES):
            files[entry.name] = entry
        elif entry.is_dir():
            files.update({f"{entry.name}/{log}": entry / log for log in TRIAL_LOGS if (entry / log).is_file()})
    return files


def is_whole(relative: str, data: bytes) -> bool:
    """Whether ``data`` decodes as the file named ``relative`` must: the experiment state and
    ``result.json`` lines as JSON, ``progress.csv`` as rows as long as its header ending in a
    newline, the other state files as pickles (Ray names some of those ``.json``)."""
    import ray.cloudpickle as cloudpickle

    name = relative.rsplit("/", 1)[-1]
    if not data:
        return False
    try:
        if name == "progress.csv":
            rows = list(csv.reader(io.StringIO(data.decode())))
            return data.endswith(b"\n") and all(len(row) == len(rows[0]) for row in rows)
        if name == "result.json":
            return all(json.loads(line) is not None for line in data.decode().splitlines() if line)
        if name.startswith("experiment_state-"):
            return isinstance(json.loads(data), dict)
        cloudpickle.loads(data)
        return True
    except Exception:  # noqa: BLE001 - any way of failing to decode is "not whole"
        return False


# --- the storage ---------------------------------------------------------------------------------

def _read(fs, path: str) -> bytes | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.readall()
    except (FileNotFoundError, OSError):
        return None


def save_copy(experiment_uri: str, files: dict[str, bytes], blobs: set[str]) -> set[str]:
    """Copy ``files`` ({path relative to the experiment: content}) into the experiment's backup
    folder; ``blobs``: the blobs already there. Returns the blobs there now (this copy's)."""
    fs, root = filesystem(experiment_uri)
    backup = f"{root}/{BACKUP_DIR}"
    fs.create_dir(f"{backup}/blobs", recursive=True)
    manifest = {}
    for relative, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        manifest[relative] = digest
        if digest not in blobs:
            write_atomic(fs, f"{backup}/blobs/{digest}", data, fsync=True)
            blobs.add(digest)
    saved = {"saved_at": time.strftime("%Y-%m-%d %H:%M:%S"), "files": manifest}
    write_atomic(fs, f"{backup}/manifest.json", json.dumps(saved, indent=1).encode(), fsync=True)
    for stale in blobs - set(manifest.values()):  # only once the manifest no longer names them
        fs.delete_file(f"{backup}/blobs/{stale}")
    return set(manifest.values())


def _blobs_there(experiment_uri: str) -> set[str]:
    import pyarrow.fs as pafs

    fs, root = filesystem(experiment_uri)
    selector = pafs.FileSelector(f"{root}/{BACKUP_DIR}/blobs", allow_not_found=True)
    return {info.base_name for info in fs.get_file_info(selector) if info.type == pafs.FileType.File}


class StateBackup(Callback):
    """Keeps the last whole copy of Ray's experiment state in ``EXPERIMENT/ray_state_backup/``.

    Tune saves its state in the driver's staging folder and starts copying it to the storage in
    its step, before the callbacks' ``on_step_end``: the staged files are whole and consistent with
    each other then, so they are read there, once per save of ``experiment_state``. They are
    written by a thread, as Ray's own sync is: a slow or unreachable storage never holds up the
    search (a copy not written yet is replaced by the next save's)."""

    def __init__(self, experiment_uri: str):
        self.experiment_uri = experiment_uri
        self._runtime()

    def _runtime(self) -> None:
        self._saved_state = None  # (name, mtime_ns, size) of the staged experiment_state files read last
        self._blobs: set[str] | None = None
        self._failing = False
        self._pending: dict[str, bytes] | None = None
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._writing = False  # a writer thread will take ``_pending`` (set and cleared under the lock)

    def __getstate__(self):  # pickled with the Tuner (tuner.pkl): the target only
        return {"experiment_uri": self.experiment_uri}

    def __setstate__(self, state):
        self.experiment_uri = state["experiment_uri"]
        self._runtime()

    def on_step_end(self, iteration, trials, **info):
        self._read(trials)

    def on_experiment_end(self, trials, **info):
        self._read(trials)
        self.wait(timeout=60)

    def wait(self, timeout: float | None = None) -> None:
        """Until the copies read so far are written (or ``timeout`` seconds)."""
        if self._writer is not None:
            self._writer.join(timeout)

    def _read(self, trials) -> None:
        if not trials:
            return
        try:
            staging = Path(trials[0].storage.experiment_driver_staging_path)
            STAGING[self.experiment_uri] = str(staging)
            saved = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in staging.glob("experiment_state-*"))
            if not saved or saved == self._saved_state:
                return  # Ray has not saved since the last copy (called every step: only a glob)
            snapshot = {rel: p.read_bytes() for rel, p in staged_state(staging).items()}
        except OSError as err:  # the staging folder changing under us: the next save is copied
            self._warn(err)
            return
        self._saved_state = saved
        with self._lock:
            self._pending = snapshot
            if not self._writing:
                self._writing = True
                self._writer = threading.Thread(target=self._write, name="ray-state-backup", daemon=True)
                self._writer.start()

    def _write(self) -> None:
        while True:
            with self._lock:
                snapshot, self._pending = self._pending, None
                if snapshot is None:
                    self._writing = False
                    return
            try:
                if self._blobs is None:
                    self._blobs = _blobs_there(self.experiment_uri)
                self._blobs = save_copy(self.experiment_uri, snapshot, self._blobs)
                if self._failing:
                    print(f"the copy of Ray's experiment state in {self.experiment_uri}/{BACKUP_DIR} is written again",
                          file=sys.stderr)
                self._failing = False
            except Exception as err:  # noqa: BLE001 - a failing copy must never stop the search itself
                self._blobs = None  # list them again: a failed write may have left one
                self._warn(err)

    def _warn(self, err: BaseException) -> None:
        if not self._failing:
            print(f"warning: cannot copy Ray's experiment state to {self.experiment_uri}/{BACKUP_DIR} "
                  f"({type(err).__name__}: {err}); the last whole copy stays there", file=sys.stderr)
        self._failing = True


# --- --resume ------------------------------------------------------------------------------------

def _manifest(fs, root: str) -> dict | None:
    """The backup's manifest when it and every blob it names are whole, else None."""
    raw = _read(fs, f"{root}/{BACKUP_DIR}/manifest.json")
    try:
        manifest = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not manifest:
        return None
    for digest in manifest["files"].values():
        data = _read(fs, f"{root}/{BACKUP_DIR}/blobs/{digest}")
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            return None
    return manifest


def _root_state_files(fs, root: str) -> list[str]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.startswith(STATE_PREFIXES))


def damaged_state(experiment_uri: str) -> tuple[list[str], dict | None]:
    """(Ray's state files in the storage that are not whole or missing, the whole backup's
    manifest or None). A file identical to its copy in the backup is whole by definition."""
    fs, root = filesystem(experiment_uri)
    manifest = _manifest(fs, root)
    copied = manifest["files"] if manifest else {}
    damaged = []
    for relative in sorted(set(_root_state_files(fs, root)) | set(copied)):
        data = _read(fs, f"{root}/{relative}")
        if data is None:
            damaged.append(relative)
        elif hashlib.sha256(data).hexdigest() != copied.get(relative) and not is_whole(relative, data):
            damaged.append(relative)
    return damaged, manifest


def restore_if_damaged(experiment_uri: str) -> str | None:
    """Put the last whole copy of Ray's state back when a state file in the storage is not whole
    (all of it: the files of one save belong together). Ray's per-session state files that the copy
    does not hold (a later save, damaged) are moved into the backup folder, since Ray resumes from
    the newest by name. Returns what was done, for the console, or None."""
    damaged, manifest = damaged_state(experiment_uri)
    if not damaged or manifest is None:
        return None
    fs, root = filesystem(experiment_uri)
    set_aside = [n for n in _root_state_files(fs, root) if n not in manifest["files"]]
    if set_aside:
        fs.create_dir(f"{root}/{BACKUP_DIR}/set_aside", recursive=True)
    for name in set_aside:
        fs.move(f"{root}/{name}", f"{root}/{BACKUP_DIR}/set_aside/{name}")
    for relative, digest in manifest["files"].items():
        fs.create_dir(f"{root}/{relative}".rsplit("/", 1)[0], recursive=True)
        write_atomic(fs, f"{root}/{relative}", _read(fs, f"{root}/{BACKUP_DIR}/blobs/{digest}"), fsync=True)
    shown = ", ".join(damaged[:4]) + (f" and {len(damaged) - 4} more" if len(damaged) > 4 else "")
    return (f"Ray's experiment state in {experiment_uri} was not whole ({shown}); restored its last whole copy, "
            f"saved {manifest['saved_at']} ({BACKUP_DIR}/manifest.json)"
            + (f"; set aside the later {', '.join(set_aside)} in {BACKUP_DIR}/set_aside" if set_aside else "")
            + ". The trials continue from that copy's checkpoints.")


def clear_copy(experiment_uri: str) -> None:
    """Remove an older search's copy (a fresh search of a name whose folder is left over)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(experiment_uri)
    if fs.get_file_info(f"{root}/{BACKUP_DIR}").type == pafs.FileType.Directory:
        fs.delete_dir(f"{root}/{BACKUP_DIR}")


def resume_problems(experiment_uri: str) -> list[str]:
    """What makes ``--resume`` impossible without losing trials: damaged state and no whole copy."""
    damaged, manifest = damaged_state(experiment_uri)
    if not damaged or manifest is not None:
        return []
    return [f"--resume: Ray's experiment state in {experiment_uri} is not whole ({', '.join(damaged[:4])}) and no "
            f"whole copy of it was kept ({BACKUP_DIR}/: searches started before copies were kept have none); "
            "Ray would start the search again and lose its trials: start a new search with another --name"]


def local_results(experiment_uri: str):
    """The search's results read from Ray's driver staging folder (a ResultGrid), for when the
    storage is lost: each trial's reports are there too. None when it is not known or not read."""
    import pyarrow.fs as pafs
    from ray.tune import ExperimentAnalysis, ResultGrid

    staging = STAGING.get(experiment_uri)
    if staging is None:
        return None
    try:
        return ResultGrid(ExperimentAnalysis(staging, storage_filesystem=pafs.LocalFileSystem()))
    except Exception:  # noqa: BLE001 - the caller reports the storage failure instead
        return None
