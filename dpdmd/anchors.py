"""The teacher anchor (method.md, student iteration, steps 1-2) and where the trainer gets it.

`teacher_anchors` runs the teacher with CFG from x1 for the first K steps and returns the
first-step target for every K asked for, from one pass up to the largest. The trainer does not
call it directly: it asks an *anchor provider*, ``provider(batch, cond, uncond) -> first_step_target``.
K is ``anchor_k`` everywhere (`dpdmd.TrainConfig` checks it is in 1..teacher_steps: nothing here
checks it again), the Ks a cache computes together ``anchor_ks``.
`LocalAnchors` computes on demand. `CachedAnchors` reads an `AnchorCache` that several runs
share: the first run to need iteration i's anchor computes every K of a set in one teacher pass
and stores them; runs at any K of that set read them. `InMemoryAnchorCache` shares them between
runs of one process; a search shares them between its trials through Ray (`tune.trial.anchor_store`),
which dpdmd never imports.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from .data.disk_cache import config_hash
from .backbones.base import Backbone, Embeddings
from .data.cache_keys import cache_key
from .stream import Batch


@torch.no_grad()
def teacher_anchors(backbone: Backbone, teacher: nn.Module, x1: torch.Tensor, cond: Embeddings,
                    uncond: Embeddings, anchor_ks: Iterable[int]) -> dict[int, torch.Tensor]:
    """First-step targets ``{K: first_step_target}`` for every K in ``anchor_ks``, from one teacher pass.

    Args:
        x1: (B, C, H, W) initial noise of the iteration.
        cond, uncond: prompt embeddings of the batch and of ``""`` (batch B each).
        anchor_ks: anchor steps, each in 1..teacher_steps (as `dpdmd.TrainConfig` checks ``anchor_k``).
    Returns:
        {K: (B, C, H, W)}: flow ``v_tgt = (x1 - z_K) / (1 - s_K)``; eps the teacher's x0 at z_K.
    """
    schedule = backbone.schedule
    anchor_ks = sorted(set(int(k) for k in anchor_ks))
    levels = schedule.teacher_levels
    first_step_targets: dict[int, torch.Tensor] = {}
    z = x1
    for j in range(anchor_ks[-1] + 1):  # z is z_j: the state after j teacher steps
        last = j == anchor_ks[-1]
        needs_out = j < schedule.teacher_steps and (not last or schedule.target_needs_teacher_output)
        out = backbone.guided(teacher, z, levels[j], cond, uncond) if needs_out else None
        if j in anchor_ks:
            first_step_targets[j] = schedule.first_step_target(x1, z, levels[j], out)
        if not last:
            z = schedule.step(z, out, levels[j], levels[j + 1])
    return first_step_targets


def teacher_calls_for(anchor_ks: Iterable[int], schedule) -> int:
    """Guided teacher evaluations one `teacher_anchors` pass costs (each is a batch of 2B)."""
    k_max = max(anchor_ks)
    extra = 1 if schedule.target_needs_teacher_output and k_max < schedule.teacher_steps else 0
    return k_max + extra


class AnchorProvider(Protocol):
    """Gives the first-step target of one iteration for this run's K."""

    def __call__(self, batch: Batch, cond: Embeddings, uncond: Embeddings) -> torch.Tensor: ...


class _CountedAnchors:
    """The counts every provider reports with the run's metrics (the trainer adds ``stats()``)."""

    def __init__(self, backbone: Backbone, teacher: nn.Module, anchor_k: int):
        self.backbone, self.teacher, self.anchor_k = backbone, teacher, anchor_k
        self.hits = 0  # anchors read from a cache
        self.misses = 0  # anchors this run computed
        self.teacher_calls = 0  # guided teacher evaluations this run spent on them

    def stats(self) -> dict[str, int]:
        asked = self.hits + self.misses
        return {"anchor_hits": self.hits, "anchor_misses": self.misses, "anchor_teacher_calls": self.teacher_calls,
                # what this run would have spent on its own K with no cache
                "anchor_teacher_calls_alone": asked * teacher_calls_for([self.anchor_k], self.backbone.schedule)}


class LocalAnchors(_CountedAnchors):
    """Computes the anchor on demand for one K; counts the teacher evaluations it spends."""

    def __call__(self, batch: Batch, cond: Embeddings, uncond: Embeddings) -> torch.Tensor:
        x1 = batch.x1.to(self.backbone.device)
        self.misses += 1
        self.teacher_calls += teacher_calls_for([self.anchor_k], self.backbone.schedule)
        return teacher_anchors(self.backbone, self.teacher, x1, cond, uncond, [self.anchor_k])[self.anchor_k]


def local_anchors(backbone: Backbone, teacher: nn.Module, config) -> LocalAnchors:
    """The trainer's ``anchors`` factory when no cache is shared: this run's K, on demand."""
    return LocalAnchors(backbone, teacher, config.anchor_k)


# --- anchors shared between runs -------------------------------------------------------------------

#: One cache entry: {str(anchor_k): (B, C, H, W) float32 first-step target}. String keys and numpy
#: arrays because a store may spill entries as safetensors files and hand them between processes.
Entry = dict[str, np.ndarray]


class AnchorCache(Protocol):
    """Where anchors computed once are kept for other runs, keyed by `anchor_key`.

    One call, not a get and a put: a store shared by concurrent runs lets exactly one of them
    compute a missing key while the others wait for it (`tune.trial.anchor_store.SharedCache`), and
    frees the key again if that run fails; a separate get and put cannot say this."""

    def get_or_compute(self, key: str, compute: Callable[[], tuple[Entry, int]]) -> Entry:
        """The entry under ``key``; if there is none, ``compute()`` -> (entry, teacher calls it
        spent), stored before it is returned."""
        ...


class InMemoryAnchorCache:
    """An `AnchorCache` in this process's memory, without Ray: several ``train()`` calls in one
    process (a sweep over K or lambda_div, tests) compute each anchor once. It keeps every entry
    (one batch of latents per iteration and K): meant for small runs."""

    def __init__(self):
        self.entries: dict[str, Entry] = {}
        self.teacher_calls = 0  # spent on the entries it holds, by all runs together

    def get_or_compute(self, key: str, compute: Callable[[], tuple[Entry, int]]) -> Entry:
        if key not in self.entries:
            entry, calls = compute()
            for array in entry.values():  # read-only, as a shared store's are: no run may change another's anchor
                array.setflags(write=False)
            self.entries[key], self.teacher_calls = entry, self.teacher_calls + calls
        return self.entries[key]


def anchor_key(identity: str, iteration: int, anchor_ks: Sequence[int]) -> str:
    """The cache key of iteration ``iteration``'s anchors for every K in ``anchor_ks``."""
    return f"anchor/{identity}/i{iteration}/k{','.join(map(str, sorted(anchor_ks)))}"


def stored_tensor(array: np.ndarray, device) -> torch.Tensor:
    """A stored numpy array as a tensor on ``device``, sharing its memory where it can."""
    with warnings.catch_warnings():  # read-only stored arrays: we never write to them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array).to(device)


class CachedAnchors(_CountedAnchors):
    """An `AnchorProvider` reading ``cache``, computing every K of ``anchor_ks`` in one teacher pass
    on a miss (the pass up to the largest K gives all smaller ones for free).

    Args:
        identity: a hash of everything the anchor depends on but the iteration (backbone and its
            weights, teacher steps, CFG scale, seed, batch size, prompts): `shared_anchors`.
        anchor_ks: every K the runs sharing ``cache`` may use (a search: every K of its space);
            this run's ``anchor_k`` is added if missing.
    """

    def __init__(self, cache: AnchorCache, backbone: Backbone, teacher: nn.Module, anchor_k: int,
                 anchor_ks: Iterable[int], identity: str):
        super().__init__(backbone, teacher, anchor_k)
        self.cache, self.anchor_ks, self.identity = cache, sorted(set(anchor_ks) | {anchor_k}), identity

    def __call__(self, batch: Batch, cond: Embeddings, uncond: Embeddings) -> torch.Tensor:
        spent: list[int] = []  # filled only if the cache asked this run to compute

        def compute() -> tuple[Entry, int]:
            x1 = batch.x1.to(self.backbone.device)
            first_step_targets = teacher_anchors(self.backbone, self.teacher, x1, cond, uncond, self.anchor_ks)
            spent.append(teacher_calls_for(self.anchor_ks, self.backbone.schedule))
            # float32: numpy has no bfloat16 (SD backbones in bf16); exact for both
            return {str(k): t.detach().float().cpu().numpy() for k, t in first_step_targets.items()}, spent[0]

        entry = self.cache.get_or_compute(anchor_key(self.identity, batch.iteration, self.anchor_ks), compute)
        if spent:
            self.misses, self.teacher_calls = self.misses + 1, self.teacher_calls + spent[0]
        else:
            self.hits += 1
        return stored_tensor(entry[str(self.anchor_k)], self.backbone.device)


def shared_anchors(cache: AnchorCache, anchor_ks: Iterable[int], *, shard: tuple[int, int] | None = None):
    """The trainer's ``anchors`` factory (`dpdmd.train`) over ``cache``: runs that agree on
    everything the anchor depends on (`dpdmd.data.cache_keys`, kind "anchor") share its entries.

    ``shard`` = (rank, world_size) of a data-parallel worker: it sees rows rank::world_size of
    the global batch, so its anchors are keyed by the shard too (shared rank by rank)."""
    rank = {} if shard is None else {"rank": shard[0], "world_size": shard[1]}

    def anchors(backbone: Backbone, teacher: nn.Module, config) -> CachedAnchors:
        identity = config_hash(cache_key("anchor", config, backbone, **rank))  # all but the iteration and K
        return CachedAnchors(cache, backbone, teacher, config.anchor_k, anchor_ks, identity)

    return anchors
