"""Controlled degradations of a sample grid, to check that an objective cannot be raised by them.

Each takes images (P, N, C, H, W) in [0, 1] (N seeds for each of P prompts, as `Evaluator.score`)
and returns a new grid of the same shape, seeded and deterministic:

- `gaussian_noise`: pixel noise of standard deviation ``std`` (in [0, 1] units), then clipped, as
  an under-trained student's residual noise;
- `blur`: a separable Gaussian blur of ``sigma`` pixels, as a student that regresses to the mean;
- `drop_mode`: prompt ``prompt``'s samples replaced by those of prompt ``instead``: a lost mode
  (for class prompts, the wrong class);
- `collapse`: every seed of a prompt replaced by seed 0's sample (all variation lost).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def gaussian_noise(images: torch.Tensor, std: float, *, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (images + std * torch.randn(images.shape, generator=gen)).clamp(0.0, 1.0)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma + 0.5))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    p, n, c, h, w = images.shape
    x = images.reshape(p * n * c, 1, h, w).float()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.reshape(images.shape).to(images.dtype)


def drop_mode(images: torch.Tensor, prompt: int, instead: int) -> torch.Tensor:
    out = images.clone()
    out[prompt] = images[instead]
    return out


def collapse(images: torch.Tensor) -> torch.Tensor:
    return images[:, :1].expand_as(images).clone()


def standard_corruptions(images: torch.Tensor, *, noise_stds=(0.1, 0.2, 0.4), blur_sigmas=(0.5, 1.0),
                         drop: tuple[int, int] = (3, 8)) -> dict[str, torch.Tensor]:
    """The set the objective is checked on (README, "The combined objective and the front"):
    {"noise 0.1": ..., "noise 0.2": ..., "noise 0.4": ..., "blur 0.5": ..., "blur 1": ...,
    "drop 3 -> 8": ...}. A half-pixel blur is kept because it is the mildest: against the real
    digits' spectrum it raised the speckled digits-eps teacher's fidelity."""
    sets = {f"noise {std:g}": gaussian_noise(images, std) for std in noise_stds}
    sets.update({f"blur {sigma:g}": blur(images, sigma) for sigma in blur_sigmas})
    if images.shape[0] > max(drop):
        sets[f"drop {drop[0]} -> {drop[1]}"] = drop_mode(images, *drop)
    return sets
