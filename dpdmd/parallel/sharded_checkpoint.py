"""A sharded method's resumable state written and read by every rank with ``torch.distributed.checkpoint``.

A sharded run (`dpdmd.parallel.sharding`) never gathers its state to save it: each rank writes its
own shards of the student's and the fake score's trainable weights and of both optimisers' states
(``get_model_state_dict`` / ``get_optimizer_state_dict`` without ``full_state_dict``: ``DTensor``
shards) with ``torch.distributed.checkpoint.save`` (DCP) into one folder: one ``__R_0.distcp`` file
per rank R (``FileSystemWriter``'s default, one file per rank) and the ``.metadata`` that rank 0
writes once every rank has written. No process holds more than its shards, so a rank's memory and
its file are 1/W of the state (~54 GB for SD3.5-M full fine-tuning: ~6.7 GB a rank on 8 GPUs).

The layout is `DPDMD.state_dict()`'s, with the optimiser states keyed by parameter name, as
``get_optimizer_state_dict`` keys them (`sharding._named`); the folder loads into

- **a sharded run of any world size** (`load_sharded`: each rank asks DCP for its shards of the
  current placement; DCP reads the slices of the files that overlap them, so W ranks read what
  W' ranks wrote);
- **a one-worker run** (`read_whole`: whole tensors allocated from the checkpoint's ``.metadata``,
  then ``dcp.load(..., no_dist=True)``: no process group, the state in memory as a one-worker run
  holds it anyway, no converted copy on disk), the optimiser states renumbered as
  ``Optimizer.state_dict()`` numbers them (`sharding._indexed`). Public API of torch 2.11 and 2.13
  only: ``format_utils.dcp_to_torch_save`` would write a second, whole copy to disk, and its
  ``_EmptyStateDictLoadPlanner`` fills nothing through the public ``dcp.load`` of torch 2.13 (which
  hands the planner a copy of the top-level dict).

An optimiser that has not stepped yet has no state; its groups alone are saved, and ``stepped``
(kept beside, in the checkpoint's ``meta.pt``) says so: loading then leaves the fresh optimiser as it
is (``get_optimizer_state_dict`` would create the state by a step of lr 0, which AdamW's step count
would see). AdamW's step counts are tensors in the state and load exactly.

Every rank must see the folder (shared storage): `sees_one_folder` checks it before each save
(``dpdmd.training.checkpoints.save_checkpoint`` falls back to the gathered ``state.pt`` when not).
"""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from .sharding import NETWORKS, _indexed, _named, _optimizer_param_names

STATE = "state"  # CHECKPOINT/state/: the DCP folder of a sharded run's checkpoint
PROBE = ".ranks-see-this"  # the file `sees_one_folder` asks every rank to read


@dataclass(frozen=True)
class ShardedState:
    """A DCP checkpoint's method state, not read yet: ``folder`` (the DCP folder) and which
    optimisers had stepped (``{"opt_student": bool, "opt_fake": bool}``)."""

    folder: Path
    stepped: dict


def _trainable(net) -> set[str]:
    return {name for name, p in net.named_parameters() if p.requires_grad}


def save_sharded(method, folder: Path) -> dict:
    """Write this rank's shards of ``method``'s state into the DCP folder ``folder``. A collective:
    every rank calls it, with the same folder, which every rank must see. Returns which optimisers
    had stepped (to keep beside, for `ShardedState`)."""
    state, stepped = {}, {}
    for net_key, opt_key in NETWORKS:
        net, opt = getattr(method, net_key), getattr(method, opt_key)
        trainable = _trainable(net)
        state[net_key] = {name: w for name, w in get_model_state_dict(net).items() if name in trainable}
        stepped[opt_key] = bool(opt.state)
        if opt.state:
            state[opt_key] = get_optimizer_state_dict(net, opt)
        else:  # nothing to shard: its groups alone (named)
            state[opt_key] = {"param_groups": _named(opt.state_dict(), _optimizer_param_names(net, opt))["param_groups"]}
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(folder)))
    return stepped


def load_sharded(method, saved: ShardedState) -> None:
    """Load a DCP checkpoint into a sharded ``method`` (after ``shard_networks``): each rank reads
    its own shards, whatever the world size that wrote them. A collective: every rank calls it."""
    targets = {}
    for net_key, opt_key in NETWORKS:
        net, opt = getattr(method, net_key), getattr(method, opt_key)
        trainable = _trainable(net)
        targets[net_key] = {name: w for name, w in get_model_state_dict(net).items() if name in trainable}
        if saved.stepped.get(opt_key):  # the shards to read into (created by a step of lr 0, then overwritten)
            targets[opt_key] = get_optimizer_state_dict(net, opt)
    dcp.load(targets, storage_reader=dcp.FileSystemReader(str(saved.folder)))
    for net_key, opt_key in NETWORKS:
        net, opt = getattr(method, net_key), getattr(method, opt_key)
        set_model_state_dict(net, targets[net_key], options=StateDictOptions(strict=False))
        if opt_key in targets:
            set_optimizer_state_dict(net, opt, targets[opt_key])


def read_whole(saved: ShardedState) -> dict:
    """A DCP checkpoint's method state whole, in `DPDMD.state_dict()`'s layout (CPU tensors), read
    by this process alone (``no_dist``: no process group needed): for a one-worker (or replicated)
    run. The tensors to read into are allocated whole from the checkpoint's metadata (its sizes
    and dtypes; the non-tensor values, the optimisers' groups, are read in place)."""
    reader = dcp.FileSystemReader(str(saved.folder))
    metadata = reader.read_metadata()
    state: dict = {}
    for key, item in metadata.state_dict_metadata.items():
        value = torch.empty(item.size, dtype=item.properties.dtype) if isinstance(item, TensorStorageMetadata) else None
        _set(state, (metadata.planner_data or {}).get(key, (key,)), value)  # at the nested path DCP flattened
    with warnings.catch_warnings():  # "torch.distributed is ... uninitialized, assuming ... a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=reader, no_dist=True)
    for _, opt_key in NETWORKS:
        named = state[opt_key]
        state[opt_key] = _indexed({"state": named.get("state", {}), "param_groups": named["param_groups"]})
    return state


def _set(root: dict, path: tuple, value) -> None:
    """Put ``value`` at ``path`` (keys and list indices) in ``root``, making the dicts and lists."""
    node = root
    for here, after in zip(path, path[1:]):
        empty = [] if isinstance(after, int) else {}
        if isinstance(node, list):
            node.extend([None] * (here + 1 - len(node)))
            node[here] = empty if node[here] is None else node[here]
            node = node[here]
        else:
            node = node.setdefault(here, empty)
    if isinstance(node, list):
        node.extend([None] * (path[-1] + 1 - len(node)))
    node[path[-1]] = value


def check_folder(folder: Path) -> None:
    """Raise (OSError, ValueError, ...) if the DCP folder cannot be what DCP wrote: its ``.metadata``
    unreadable, or a file it names missing or shorter than the bytes it lists there (a copy cut
    short). Reads the metadata only, not the shards."""
    metadata = dcp.FileSystemReader(str(folder)).read_metadata()
    ends: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        path = getattr(info, "relative_path", None)
        if path is not None:
            ends[path] = max(ends.get(path, 0), int(info.offset) + int(info.length))
    for path, end in ends.items():
        size = (folder / path).stat().st_size  # FileNotFoundError if missing
        if size < end:
            raise ValueError(f"{folder / path} has {size} bytes, the metadata lists {end}")


def sees_one_folder(folder: Path, *, is_main: bool) -> bool:
    """Whether every rank sees rank 0's ``folder`` (made by rank 0 beforehand): rank 0 writes a
    random token there, every rank reads it back. A collective; the same answer on every rank."""
    token = [secrets.token_hex(16) if is_main else None]
    if is_main:
        (folder / PROBE).write_text(token[0])
    dist.broadcast_object_list(token, src=0)
    try:
        seen = (folder / PROBE).read_text() == token[0]
    except OSError:
        seen = False
    flags = [None] * dist.get_world_size()
    dist.all_gather_object(flags, seen)
    if is_main:
        (folder / PROBE).unlink()
    return all(flags)
