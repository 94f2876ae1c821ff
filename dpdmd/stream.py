"""The deterministic per-iteration stream: what iteration ``i`` of a run sees.

Everything random in iteration ``i`` (the prompt batch, the initial noise x1, the DMD noise level
and its eps) comes from one generator seeded ``seed + i``, on the CPU, whatever the device. So
every run with the same seed, backbone and prompts sees the same batch at iteration ``i``,
whatever its K or lambda_div: the teacher's anchor for that batch is the same in all of them,
which is what lets a search compute it once. It also makes a resumed run exactly continue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """One iteration's draws.

    Attributes:
        iteration: the iteration index i.
        prompts: B prompt strings.
        x1: (B, C, H, W) initial noise.
        dmd_level_index: index into the schedule's ``dmd_levels`` (one per batch).
        dmd_eps: (B, C, H, W) the noise DMD and the fake score add to the student's samples.
    """

    iteration: int
    prompts: tuple[str, ...]
    x1: torch.Tensor
    dmd_level_index: int
    dmd_eps: torch.Tensor


def iteration_batch(*, seed: int, iteration: int, prompts: Sequence[str], batch_size: int,
                    latent_shape: tuple[int, ...], num_dmd_levels: int) -> Batch:
    """Draw iteration ``iteration``'s batch from the generator seeded ``seed + iteration``."""
    g = torch.Generator().manual_seed(seed + iteration)
    picks = torch.randint(0, len(prompts), (batch_size,), generator=g).tolist()
    x1 = torch.randn((batch_size, *latent_shape), generator=g)
    level_index = int(torch.randint(0, num_dmd_levels, (1,), generator=g))
    dmd_eps = torch.randn((batch_size, *latent_shape), generator=g)
    return Batch(iteration, tuple(prompts[p] for p in picks), x1, level_index, dmd_eps)


def is_student_iteration(iteration: int, fake_updates: int) -> bool:
    """Two-time-scale rule: iteration i trains the student when (i + 1) % (fake_updates + 1) == 0."""
    return (iteration + 1) % (fake_updates + 1) == 0


def student_updates_done(iterations: int, fake_updates: int) -> int:
    """How many student updates the first ``iterations`` iterations contain."""
    return iterations // (fake_updates + 1)
