"""What an evaluation saves, and the run's resumable state.

Two things can be saved at an evaluation (`Saves`), each only when asked (``train(saves=...)``):

- **the student**, in the format its backbone's users load it (`dpdmd.student`: the network in the
  dtype it is served in, or the LoRA adapter alone), into ``OUT/report/student/``: what a search
  keeps of a trial's new best report (a few GB for SD3.5-M, MB for a LoRA adapter);
- **the full resumable state**, the folder ``OUT/checkpoint/``: the student's and the fake score's
  trainable weights in fp32 and both optimisers' states, the config, the iteration and the counts
  so far (~54 GB for SD3.5-M full fine-tuning), written atomically (a crash mid-write leaves the
  previous one), read back and refused when damaged or of another config (the one before it,
  ``checkpoint.prev``, is the fallback), and loaded into a run to resume it.

The state's two layouts, both read by `load_checkpoint` and loaded by `resume` into a run of any
number of workers, sharded or not:

- **one-worker** (and replicated data-parallel) runs: ``state.pt``, one ``torch.save`` of
  everything, written by the process (rank 0) that holds the whole state anyway;
- **sharded runs** (FSDP2, `dpdmd.parallel.sharding`): ``state/``, a ``torch.distributed.checkpoint``
  folder to which every rank writes its own shards (one ``.distcp`` file a rank, and the
  ``.metadata``; `dpdmd.parallel.sharded_checkpoint`), and ``meta.pt``, the config, iteration and
  counts, written by rank 0. No rank gathers the state: at SD3.5-M full fine-tuning on 8 GPUs each
  writes ~6.7 GB of the 54 GB. Loaded by a sharded run of any world size (DCP reshards: each rank
  reads its shards) or read whole by a one-worker run (`sharded_checkpoint.read_whole`). Every rank
  writes into rank 0's checkpoint folder, so every rank must see it (one node, or shared storage):
  before each save the ranks check it (`sharded_checkpoint.sees_one_folder`), and where one does
  not, the state is gathered on rank 0 and written as ``state.pt`` instead, with a warning (ranks
  on other nodes cannot write into rank 0's local disk).

``dpdmd.train --out`` saves the state at every evaluation (`every_evaluation`) and the student at
the end; a search saves the student at each new best and the state at a cadence (`tune.trial`)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError, TrainConfig
from ..method import DPDMD
from ..parallel import sharded_checkpoint
from ..parallel.distributed import DistributedContext
from .run_files import truncate_metrics

CHECKPOINT = "checkpoint"
PREVIOUS = ".prev"  # the checkpoint before the last one, kept by save_checkpoint(keep_previous=True)
REPORT = "report"  # OUT/report/student: the student saved at the last evaluation that asked for it
WHOLE = "state.pt"  # the one-worker layout: everything in one torch.save
META = "meta.pt"  # the sharded layout: config, iteration, counts (rank 0), beside the DCP folder state/


@dataclass(frozen=True)
class Saves:
    """What one evaluation saves: ``student`` (its serving format, `dpdmd.student`) and / or
    ``state`` (the full resumable state, `save_checkpoint`)."""

    student: bool = False
    state: bool = False


@dataclass(frozen=True)
class Saved:
    """Where an evaluation's saves are (None: not saved at this evaluation): ``student``, the
    folder holding ``student/`` (``OUT/report``); ``state``, the checkpoint folder (``OUT/checkpoint``)."""

    student: Path | None = None
    state: Path | None = None


def every_evaluation(metrics: dict) -> Saves:
    """``dpdmd.train``'s rule: the resumable state at every evaluation (``--resume`` continues from
    the last one), the student once at the end of the run (``OUT/student``)."""
    return Saves(state=True)


def has_checkpoint(path: Path) -> bool:
    """Whether the folder ``path`` holds a checkpoint of either layout (read or not)."""
    return (path / WHOLE).exists() or (path / META).exists()


def _read_state(path: Path) -> dict:
    """The checkpoint in the folder ``path``: ``state.pt``, or ``meta.pt`` with its DCP folder
    (``method`` then a `ShardedState`, not read yet, its metadata and file sizes checked); a
    damaged (truncated, overwritten) one is a ConfigError naming it."""
    sharded = (path / META).exists() and not (path / WHOLE).exists()
    file = path / (META if sharded else WHOLE)
    try:
        state = torch.load(file, map_location="cpu", weights_only=False, mmap=True)  # cheap to check twice
        if sharded and isinstance(state, dict):
            sharded_checkpoint.check_folder(path / sharded_checkpoint.STATE)
    except FileNotFoundError as err:
        missing = file if err.filename in (None, str(file)) else Path(err.filename)
        raise ConfigError([f"resume: {missing} does not exist"]) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on damage
        raise ConfigError([f"resume: {file} is damaged and cannot be read ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else 'no detail'})"]) from None
    needs = {"config", "iteration"} | ({"stepped"} if sharded else {"method"})
    if not isinstance(state, dict) or not needs <= set(state):
        raise ConfigError([f"resume: {file} is not a dpdmd checkpoint (no {' / '.join(sorted(needs))})"])
    if sharded:
        state["method"] = sharded_checkpoint.ShardedState(path / sharded_checkpoint.STATE, dict(state.pop("stepped")))
    return state


def load_checkpoint(path: Path, config: TrainConfig) -> dict:
    """The state saved in the checkpoint folder ``path`` for ``config`` (``method``: the method's
    state, or for the sharded layout a `ShardedState` that `resume` reads). If it is damaged and the
    previous checkpoint (``path.prev``, kept by `save_checkpoint`) is readable, that one is used,
    with a warning. A checkpoint of a different config is refused."""
    try:
        state = _read_state(path)
    except ConfigError as err:
        previous = path.with_name(path.name + PREVIOUS)
        if not has_checkpoint(previous):
            raise
        state = _read_state(previous)
        warnings.warn(f"{err.problems[0]}; resuming from the previous checkpoint {previous} "
                      f"(iteration {state['iteration']})", stacklevel=2)
    if state["config"] != config.to_dict():
        raise ConfigError(["resume: the checkpoint was written by a different config; "
                           "resume with the same config or start a new run"], str(path))
    return state


def read_checkpoint(path: Path) -> dict:
    """The checkpoint in the folder ``path`` whole, in the one-worker layout whichever layout wrote it
    (``method``: `DPDMD.state_dict()`'s format, CPU tensors), for one process: tools and tests."""
    state = _read_state(path)
    if isinstance(state["method"], sharded_checkpoint.ShardedState):
        state["method"] = sharded_checkpoint.read_whole(state["method"])
    return state


def save_checkpoint(path: Path, method: DPDMD | dict, config: TrainConfig, iteration: int, *,
                    keep_previous: bool = False, counters: dict | None = None,
                    distributed: DistributedContext | None = None) -> None:
    """Write the checkpoint folder ``path`` atomically: a crash mid-write leaves the previous checkpoint
    intact. ``method``: the `DPDMD` or its ``state_dict()``; ``keep_previous``: keep the one before as
    ``path.prev`` (a fallback if the last is damaged later; it doubles the disk the checkpoints take).
    ``distributed``: a sharded run's context: then every rank calls this, with the same ``path``
    (`_save_sharded`); otherwise the one process that holds the state does (rank 0).

    The checkpoint is a folder, written whole beside itself and swapped in, the one before moved
    aside (kept or dropped): the one rename of a folder; files go through `dpdmd.data.atomic`."""
    if distributed is not None and distributed.sharded:
        return _save_sharded(path, method, config, iteration, keep_previous=keep_previous, counters=counters,
                             distributed=distributed)
    state = method if isinstance(method, dict) else method.state_dict()
    tmp = _fresh(path)
    try:
        _write_whole(tmp, state, config, iteration, counters)
    except BaseException:  # a full disk: free what the half-written copy took; the last one stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap(path, tmp, keep_previous)


def _save_sharded(path: Path, method: DPDMD, config: TrainConfig, iteration: int, *, keep_previous: bool,
                  counters: dict | None, distributed: DistributedContext) -> None:
    """A sharded run's checkpoint (a collective): rank 0 makes ``path.tmp``; if every rank sees it,
    every rank writes its shards into ``path.tmp/state/`` (DCP) and rank 0 ``meta.pt``; if not
    (ranks on several nodes without shared storage), the state is gathered on rank 0 and written as
    ``state.pt``. Every rank done (a barrier), rank 0 swaps the folder in."""
    import torch.distributed as dist

    main = distributed.is_main
    tmp = _fresh(path) if main else path.with_name(path.name + ".tmp")
    try:
        if sharded_checkpoint.sees_one_folder(tmp, is_main=main):
            stepped = sharded_checkpoint.save_sharded(method, tmp / sharded_checkpoint.STATE)
            if main:
                torch.save({"config": config.to_dict(), "iteration": iteration, "counters": dict(counters or {}),
                            "stepped": stepped, "world_size": distributed.world_size}, tmp / META)
                (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        else:
            state = distributed.method_state(method)  # gathered on rank 0: the ranks do not share the folder
            if main:
                warnings.warn(f"checkpoint: not every rank sees {tmp} (ranks on several nodes without shared "
                              f"storage); the sharded state is gathered on rank 0 and written as {WHOLE}",
                              stacklevel=3)
                _write_whole(tmp, state, config, iteration, counters)
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    dist.barrier()  # every rank's shards written
    if main:
        _swap(path, tmp, keep_previous)


def _fresh(path: Path) -> Path:
    """``path.tmp``, emptied: where the next checkpoint is written before it is swapped in."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _write_whole(folder: Path, state: dict, config: TrainConfig, iteration: int, counters: dict | None) -> None:
    torch.save({"method": state, "config": config.to_dict(), "iteration": iteration,
                "counters": dict(counters or {})}, folder / WHOLE)
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))


def _swap(path: Path, tmp: Path, keep_previous: bool) -> None:
    """Put the written folder ``tmp`` in ``path``'s place; the one before becomes ``path.prev`` or goes."""
    old = path.with_name(path.name + (PREVIOUS if keep_previous else ".old"))
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if not keep_previous:
        shutil.rmtree(old, ignore_errors=True)


def resume(state: dict | None, method: DPDMD, out: Path | None,
           distributed: DistributedContext | None = None) -> tuple[int, dict]:
    """Load a checkpoint's networks and optimisers into ``method`` (after `DistributedContext.attach`:
    sharded networks load their part), from either layout, written by any number of workers: a
    sharded run reads a DCP checkpoint's shards (any world size), any other run reads it whole; a
    ``state.pt`` is sharded by a sharded run (`sharding.load_full_state_dict`). Returns its iteration
    (0: no checkpoint) and the counts of the run before it (added to this run's, `_carry`)."""
    if state is None:
        return 0, {}
    saved = state["method"]
    if isinstance(saved, sharded_checkpoint.ShardedState):
        if distributed is not None and distributed.sharded:
            sharded_checkpoint.load_sharded(method, saved)
            saved = None
        else:
            saved = sharded_checkpoint.read_whole(saved)
    if saved is not None and distributed is not None:
        distributed.load_method_state(method, saved)
    elif saved is not None:
        method.load_state_dict(saved)
    if out is not None:
        truncate_metrics(out / "metrics.csv", state["iteration"])
    return state["iteration"], dict(state.get("counters", {}))
