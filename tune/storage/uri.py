"""Where a search keeps its files: a local folder or a URI such as ``s3://bucket/prefix`` (pyarrow's
filesystems; a URI's query, e.g. ``?endpoint_override=``, is kept).

- `storage_uri`: ``--storage`` as an absolute path or the URI as given;
- `join_uri`: ``base/part/...`` for paths and URIs alike;
- `local_experiment_dir`: where the driver writes the outputs before they go to the storage;
- `upload`: the outputs copied to a URI, then the local copy dropped;
- `filesystem`: the one way from a path or URI to a pyarrow filesystem and a path in it;
- `write_atomic`: the one way to write a file whole or not at all, local or remote.
"""

from __future__ import annotations

import os
from pathlib import Path

from dpdmd.data import atomic


def storage_uri(storage: str) -> str:
    """``--storage`` as the search uses it: $VARS expanded (as in a space file's paths; one not set
    is refused first, `tune.storage.preflight.storage_flag_problems`), a local path absolute."""
    storage = os.path.expandvars(storage)
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def join_uri(base: str, *parts: str) -> str:
    """``base/part/...`` for paths and URIs, keeping a URI's query (e.g. ``?endpoint_override=``)."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in base:
        return str(Path(base, *parts))
    u = urlsplit(base)
    return urlunsplit((u.scheme, u.netloc, "/".join([u.path.rstrip("/"), *parts]), u.query, u.fragment))


def local_experiment_dir(storage: str, name: str) -> Path:
    if "://" in storage:
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"{name}-outputs-"))
    return Path(storage) / name


def upload(local: Path, uri: str) -> None:
    """Copy the outputs (and the offline W&B run) to the storage URI, then drop the local copy."""
    import shutil

    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    for path in local.iterdir():
        target = f"{root}/{path.name}"
        if path.is_dir():
            fs.create_dir(target, recursive=True)
        pafs.copy_files(str(path), target, destination_filesystem=fs)
    shutil.rmtree(local, ignore_errors=True)


def filesystem(uri: str):
    """(pyarrow filesystem, path in it) of a URI (``s3://bucket/prefix?endpoint_override=...``,
    ``file:///...``) or of a local path, made absolute (relative to the working directory)."""
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def write_atomic(fs, path: str, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` of ``fs`` (`filesystem`) so that it is either the previous file or
    all of ``data``: a local file is written beside itself and renamed (`dpdmd.data.atomic`;
    ``fsync``: flushed to the disk, the rename too); an object store's PUT is all or nothing."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        atomic.write_atomic(path, data, fsync=fsync)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)
