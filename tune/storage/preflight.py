"""Checks of the search's command line and of the cluster, made before a search starts anything.

Every function returns a list of problems (``KEY: what is wrong; what is allowed``) so that
`tune.search` reports them all at once with exit status 2, before Ray starts (names, storage,
address, the local machine's resources) or right after it connected (a cluster's resources):

- `name_problems`: an experiment name becomes a folder under the storage: one path component,
  no ``..`` (which would write outside the storage);
- `storage_problems`: the storage folder exists or can be created, and a file can be written in it;
- `address_problems`: something listens at ``--address`` (a TCP connection within a bound; Ray's
  own connect retries for minutes);
- `resource_problems`: every backbone's trial fits on the machines there are (a trial asking for
  a GPU where there is none would stay pending forever).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .cluster_check import fits
from .uri import filesystem, write_atomic

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CONNECT_TIMEOUT_S = 5.0


def name_problems(name: str, key: str) -> list[str]:
    """An experiment name (``--name`` or the space's ``name``): one folder name under the storage."""
    if _NAME.fullmatch(name) and ".." not in name:
        return []
    return [f"{key}: {name!r} is not allowed; an experiment name is one folder name under the storage: "
            "letters, digits, '.', '_' and '-' (up to 128, starting with a letter or digit, no '..' and no '/')"]


def storage_flag_problems(storage: str) -> list[str]:
    """``--storage`` as written, before anything is made: not empty (it would be the current folder,
    not the default), no $VAR the environment does not set (it would name a folder ``${VAR}``)."""
    from dpdmd.config import unset_variables

    if not storage.strip():
        return [f"--storage: {storage!r} is not allowed; give a folder (made if missing) or a URI such as "
                "s3://bucket/prefix, or leave the flag out for the default ./runs"]
    return [f"--storage: {storage!r} uses ${{{name}}}, which is not set in the environment; export {name}=... "
            "before running, or give the folder itself" for name in unset_variables(storage)]


def storage_problems(storage: str) -> list[str]:
    """A local ``--storage``: an existing folder or one that can be created, writable. URIs
    (s3://, gs://) are left to their own client."""
    storage = os.path.expandvars(storage)
    if "://" in storage:
        return []
    path = Path(storage).expanduser()
    if path.exists() and not path.is_dir():
        return [f"--storage: {path} is a file; give a folder (it is created if missing)"]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        return [f"--storage: cannot write in {path} ({err.strerror or err}); give a writable folder"]
    return []


def resolve_address(address: str) -> str | None:
    """HOST:PORT of ``--address`` ("auto": $RAY_ADDRESS, else the cluster this machine started);
    None where "auto" finds no cluster."""
    if address != "auto":
        return address.split("://", 1)[-1]
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"].split("://", 1)[-1]
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    try:
        return current.read_text().strip() or None
    except OSError:
        return None


def address_problems(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> list[str]:
    """Whether a Ray head listens at ``--address``: one TCP connection, within ``timeout_s``."""
    target = resolve_address(address)
    if target is None:
        return ["--address: 'auto' found no running Ray cluster on this machine (no $RAY_ADDRESS, "
                "no `ray start` here); start one with `ray start --head` or `ray up cluster/gpu.yaml`, "
                "or leave --address out to run a local Ray"]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return [f"--address: {address!r} is not allowed; give 'auto' or HOST:PORT (the head's GCS port, "
                "6379 by default)"]
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return []
    except OSError as err:
        return [f"--address: nothing answers at {host}:{port} within {timeout_s:g} s ({err.strerror or err}); "
                "is the cluster up (`ray status` on the head) and the port reachable from here?"]


def _wanted(resources: Mapping[str, float]) -> tuple[int, dict[str, float]]:
    workers = int(resources.get("workers", 1))
    return workers, {"CPU": float(resources.get("cpu", 1)), "GPU": float(resources.get("gpu", 0))}


def resource_problems(backbones: Mapping[str, Mapping[str, float]],
                      nodes: Sequence[Mapping[str, float]], where: str) -> list[str]:
    """Backbones (name -> ``resources``) whose trials cannot run on ``nodes`` (each a mapping of
    Ray resources such as {"CPU": 16, "GPU": 1}): a worker must fit on one node, and all of a
    trial's workers in the whole cluster. ``where`` describes the nodes for the message."""
    total = {r: sum(float(n.get(r, 0)) for n in nodes) for r in ("CPU", "GPU")}
    have = f"{where} has {len(nodes)} node(s), {total['CPU']:g} CPU and {total['GPU']:g} GPU in all"
    problems = []
    for name, resources in backbones.items():
        workers, worker = _wanted(resources)
        enough = all(total[r] >= workers * amount for r, amount in worker.items())
        if not fits(worker, {str(i): dict(n) for i, n in enumerate(nodes)}) or not enough:
            problems.append(f"backbones.{name}.resources: a trial needs {workers} x {{cpu: {worker['CPU']:g}, "
                            f"gpu: {worker['GPU']:g}}} but {have}; it would wait forever. Lower the resources, "
                            "or run on a cluster that has them (--address)")
    return problems


def local_nodes() -> list[dict[str, float]]:
    """The one node a local search starts: every CPU core and every GPU torch sees."""
    import torch

    return [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]


def ray_nodes() -> list[dict[str, float]]:
    """The alive nodes of the connected Ray cluster, as their total resources."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def wait_for_resources(backbones: Mapping[str, Mapping[str, float]], *, wait_s: float,
                       nodes: Callable[[], list[dict]] = ray_nodes, poll_s: float = 5.0,
                       say: Callable[[str], None] = print) -> list[str]:
    """Problems left after waiting up to ``wait_s`` seconds for the cluster to offer what the
    trials need (an autoscaling cluster adds nodes when asked); says what it waits for."""
    deadline = time.monotonic() + wait_s
    problems = resource_problems(backbones, nodes(), "the cluster")
    while problems and time.monotonic() < deadline:
        say(f"waiting up to {deadline - time.monotonic():.0f} s more for the cluster to offer: "
            + "; ".join(p.split(": ", 1)[1].split(" but ")[0] for p in problems))
        time.sleep(poll_s)
        problems = resource_problems(backbones, nodes(), "the cluster")
    return problems


# --- what identifies a search: its space, stored with the experiment ------------------------------

SPACE_RECORD = "dpdmd_space.json"


def space_identity(space_path: Path, num_samples: int | None) -> dict:
    """The fingerprint of the search a space file defines: a hash of its parsed content (comments
    and formatting do not count) and of ``--num-samples``."""
    from dpdmd.data.disk_cache import config_hash
    from dpdmd.config import load_yaml

    return {"fingerprint": config_hash({"space": load_yaml(space_path), "num_samples": num_samples}),
            "space_file": str(space_path)}


def read_space_record(experiment: str) -> dict | None:
    """The identity stored with an experiment (None: none stored, e.g. a search of an older version)."""
    import json

    fs, root = filesystem(experiment)
    try:
        with fs.open_input_stream(f"{root}/{SPACE_RECORD}") as f:
            return json.loads(f.read().decode())
    except (OSError, ValueError):
        return None


def write_space_record(experiment: str, identity: dict) -> None:
    import json

    fs, root = filesystem(experiment)
    fs.create_dir(root, recursive=True)
    write_atomic(fs, f"{root}/{SPACE_RECORD}", json.dumps(identity, indent=1).encode())  # whole or not at all


def resume_problems(experiment: str, identity: dict, *, name: str) -> list[str]:
    """``--resume`` of ``experiment`` with a space of ``identity``: refused when the experiment was
    started from another space (its trials and the new ones would share one front)."""
    stored = read_space_record(experiment)
    if stored is None or stored.get("fingerprint") == identity["fingerprint"]:
        return []
    return [f"--resume: the search {name!r} was started from a different space ({stored.get('space_file')}, "
            f"fingerprint {stored.get('fingerprint')}; this one: {identity['fingerprint']}, or another "
            "--num-samples). Resume it with the same file, or start a new search with --name NEW_NAME "
            "(or another --storage)"]
