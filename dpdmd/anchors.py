"""The teacher anchor (method.md, student iteration, steps 1-2) and where the trainer gets it.

`teacher_anchors` runs the teacher with CFG from x1 for the first K steps and returns the
first-step target for every K asked for, from one pass up to the largest. The trainer does not
call it directly: it asks an *anchor provider*, ``provider(batch, cond, uncond) -> target``.
`LocalAnchors` computes on demand; the search platform puts a cache shared by all trials behind
the same call (`tune.shared_cache`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import nn

from .backbones.base import Backbone, Embeddings
from .stream import Batch


@torch.no_grad()
def teacher_anchors(backbone: Backbone, teacher: nn.Module, x1: torch.Tensor, cond: Embeddings,
                    uncond: Embeddings, ks: Iterable[int]) -> dict[int, torch.Tensor]:
    """First-step targets ``{K: target}`` for every K in ``ks``, from one teacher pass.

    Args:
        x1: (B, C, H, W) initial noise of the iteration.
        cond, uncond: prompt embeddings of the batch and of ``""`` (batch B each).
        ks: anchor steps, each in 1..teacher_steps.
    Returns:
        {K: (B, C, H, W)}: flow ``v_tgt = (x1 - z_K) / (1 - s_K)``; eps the teacher's x0 at z_K.
    """
    schedule = backbone.schedule
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1 or ks[-1] > schedule.teacher_steps:
        raise ValueError(f"anchor steps must lie in 1..{schedule.teacher_steps}, got {ks}")
    levels = schedule.teacher_levels
    targets: dict[int, torch.Tensor] = {}
    z = x1
    for j in range(ks[-1] + 1):  # z is z_j: the state after j teacher steps
        last = j == ks[-1]
        needs_out = j < schedule.teacher_steps and (not last or schedule.target_needs_teacher_output)
        out = backbone.guided(teacher, z, levels[j], cond, uncond) if needs_out else None
        if j in ks:
            targets[j] = schedule.first_step_target(x1, z, levels[j], out)
        if not last:
            z = schedule.step(z, out, levels[j], levels[j + 1])
    return targets


def teacher_calls_for(ks: Iterable[int], schedule) -> int:
    """Guided teacher evaluations one `teacher_anchors` pass costs (each is a batch of 2B)."""
    k_max = max(ks)
    extra = 1 if schedule.target_needs_teacher_output and k_max < schedule.teacher_steps else 0
    return k_max + extra


class AnchorProvider(Protocol):
    """Gives the first-step target of one iteration for this run's K."""

    def __call__(self, batch: Batch, cond: Embeddings, uncond: Embeddings) -> torch.Tensor: ...


class LocalAnchors:
    """Computes the anchor on demand for one K; counts the teacher evaluations it spends."""

    def __init__(self, backbone: Backbone, teacher: nn.Module, anchor_k: int):
        self.backbone, self.teacher, self.anchor_k = backbone, teacher, anchor_k
        self.teacher_calls = 0
        self.hits = 0
        self.misses = 0

    def __call__(self, batch: Batch, cond: Embeddings, uncond: Embeddings) -> torch.Tensor:
        x1 = batch.x1.to(self.backbone.device)
        self.misses += 1
        self.teacher_calls += teacher_calls_for([self.anchor_k], self.backbone.schedule)
        return teacher_anchors(self.backbone, self.teacher, x1, cond, uncond, [self.anchor_k])[self.anchor_k]

    def stats(self) -> dict[str, int]:
        return {"anchor_hits": self.hits, "anchor_misses": self.misses, "anchor_teacher_calls": self.teacher_calls,
                "anchor_teacher_calls_alone": self.teacher_calls}
