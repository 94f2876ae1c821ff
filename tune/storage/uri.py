"""Where a search keeps its files: a local folder or a URI such as ``s3://bucket/prefix`` (pyarrow's
filesystems; a URI's query, e.g. ``?endpoint_override=``, is kept).

- `storage_uri`: ``--storage`` as an absolute path or the URI as given;
- `join_uri`: ``base/part/...`` for paths and URIs alike;
- `local_experiment_dir`: where the driver writes the outputs before they go to the storage;
- `upload`: the outputs copied to a URI, then the local copy dropped.
"""

from __future__ import annotations

from pathlib import Path


def storage_uri(storage: str) -> str:
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

    fs, root = pafs.FileSystem.from_uri(uri)
    for path in local.iterdir():
        target = f"{root}/{path.name}"
        if path.is_dir():
            fs.create_dir(target, recursive=True)
        pafs.copy_files(str(path), target, destination_filesystem=fs)
    shutil.rmtree(local, ignore_errors=True)
