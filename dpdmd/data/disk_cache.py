"""A disk cache for artefacts built on first use (the built-in teachers, the digits classifier).

Location: ``$DPDMD_CACHE`` if set, else ``~/.cache/dpdmd``. Each artefact is keyed by a hash of
the config that built it, so a changed config builds anew. Several processes may start at once (a
search launches many trials): one builds while the others wait on a file lock, and the result is
written to a temporary name and renamed into place, so no reader ever sees a partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from filelock import FileLock

from .atomic import atomic_path


def cache_dir() -> Path:
    root = os.environ.get("DPDMD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dpdmd")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(config: dict) -> str:
    """A short, stable hash of a JSON-serialisable config."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cached_file(name: str, config: dict, build: Callable[[Path], None], *, suffix: str = ".pt") -> Path:
    """Return the cached file for (name, config), calling ``build(tmp_path)`` once if it is missing.

    ``build`` writes the artefact to the path it is given; it is renamed into place only after it
    returns (`dpdmd.data.atomic`), so a crash mid-build leaves no half-written cache entry.
    """
    path = cache_dir() / f"{name}-{config_hash(config)}{suffix}"
    if path.exists():
        return path
    with FileLock(path.with_suffix(path.suffix + ".lock")):  # the other processes wait here while one builds
        if not path.exists():
            with atomic_path(path) as tmp:
                build(tmp)
    return path
