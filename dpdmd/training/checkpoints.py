"""What an evaluation saves, and the run's resumable state.

Two things can be saved at an evaluation (`Saves`), each only when asked (``train(saves=...)``):

- **the student**, in the format its backbone's users load it (`dpdmd.student`: the network in the
  dtype it is served in, or the LoRA adapter alone), into ``OUT/report/student/``: what a search
  keeps of a trial's new best report (a few GB for SD3.5-M, MB for a LoRA adapter);
- **the full resumable state**, ``OUT/checkpoint/state.pt``: the student's and the fake score's
  trainable weights in fp32 and both optimisers' states, the config, the iteration and the counts
  so far (~54 GB for SD3.5-M full fine-tuning), written atomically (a crash mid-write leaves the
  previous one), read back and refused when damaged or of another config (the one before it,
  ``checkpoint.prev``, is the fallback), and loaded into a run to resume it.

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
from ..parallel.distributed import DistributedContext
from .run_files import truncate_metrics

CHECKPOINT = "checkpoint"
PREVIOUS = ".prev"  # the checkpoint before the last one, kept by save_checkpoint(keep_previous=True)
REPORT = "report"  # OUT/report/student: the student saved at the last evaluation that asked for it


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


def _read_state(path: Path) -> dict:
    """``path/state.pt``; a damaged (truncated, overwritten) file is a ConfigError naming it."""
    file = path / "state.pt"
    try:
        state = torch.load(file, map_location="cpu", weights_only=False, mmap=True)  # cheap to check twice
    except FileNotFoundError:
        raise ConfigError([f"resume: {file} does not exist"]) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on damage
        raise ConfigError([f"resume: {file} is damaged and cannot be read ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else 'no detail'})"]) from None
    if not isinstance(state, dict) or not {"method", "config", "iteration"} <= set(state):
        raise ConfigError([f"resume: {file} is not a dpdmd checkpoint (no method / config / iteration)"])
    return state


def load_checkpoint(path: Path, config: TrainConfig) -> dict:
    """The state saved in the checkpoint folder ``path`` for ``config``. If its state.pt is
    damaged and the previous checkpoint (``path.prev``, kept by `save_checkpoint`) is readable,
    that one is used, with a warning. A checkpoint of a different config is refused."""
    try:
        state = _read_state(path)
    except ConfigError as err:
        previous = path.with_name(path.name + PREVIOUS)
        if not (previous / "state.pt").exists():
            raise
        state = _read_state(previous)
        warnings.warn(f"{err.problems[0]}; resuming from the previous checkpoint {previous} "
                      f"(iteration {state['iteration']})", stacklevel=2)
    if state["config"] != config.to_dict():
        raise ConfigError(["resume: the checkpoint was written by a different config; "
                           "resume with the same config or start a new run"], str(path))
    return state


def save_checkpoint(path: Path, method: DPDMD | dict, config: TrainConfig, iteration: int, *,
                    keep_previous: bool = False, counters: dict | None = None) -> None:
    """Write ``path/state.pt`` atomically: a crash mid-write leaves the previous checkpoint intact.
    ``method``: the `DPDMD` or its ``state_dict()`` (gathered already from a sharded run);
    ``keep_previous``: keep the one before as ``path.prev`` (a fallback if the last is damaged
    later; it doubles the disk the checkpoints take).

    The checkpoint is a folder, written whole beside itself and swapped in, the one before moved
    aside (kept or dropped): the one rename of a folder; files go through `dpdmd.data.atomic`."""
    state = method if isinstance(method, dict) else method.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        torch.save({"method": state, "config": config.to_dict(), "iteration": iteration,
                    "counters": dict(counters or {})}, tmp / "state.pt")
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    except BaseException:  # a full disk: free what the half-written copy took; the last one stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    sharded networks load their part; a checkpoint of any number of workers, one format); returns its
    iteration (0: no checkpoint) and the counts of the run before it (added to this run's, `_carry`)."""
    if state is None:
        return 0, {}
    if distributed is not None:
        distributed.load_method_state(method, state["method"])
    else:
        method.load_state_dict(state["method"])
    if out is not None:
        truncate_metrics(out / "metrics.csv", state["iteration"])
    return state["iteration"], dict(state.get("counters", {}))
