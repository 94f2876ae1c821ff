"""A fixed grid of "teacher samples" for the real evaluator's corruption checks.

The tiny random pipelines (tiny_pipelines.py) draw noise-like textures that hardly depend on the
prompt (measured: a lost prompt mode changes nothing there), so they cannot stand in for a
teacher whose prompts are distinct modes. `shape_grid` draws one: prompt p is a coloured shape of
its own kind (disk, square, bar, ring, ...) and each seed moves it, resizes it and changes the
background shade, with soft edges, as a teacher's seeds vary one prompt's image.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

PROMPTS = ["a red disk", "a green square", "a blue bar", "a yellow ring"]
_COLOURS = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9], [0.9, 0.8, 0.2]])


def _shape_mask(kind: int, cx: float, cy: float, radius: float, size: int) -> torch.Tensor:
    """(size, size) soft mask of shape ``kind`` (0 disk, 1 square, 2 bar, 3 ring) centred at (cx, cy)."""
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    dist = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()
    mask = {0: dist < radius,
            1: ((xx - cx).abs() < radius) & ((yy - cy).abs() < radius),
            2: (yy - cy).abs() < radius / 3,
            3: (dist < radius) & (dist > 0.6 * radius)}[kind].float()
    return F.avg_pool2d(mask[None, None], 3, 1, 1)[0, 0]  # soft edges, as decoded images have


def shape_grid(seeds: int = 8, *, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Images (len(PROMPTS), seeds, 3, size, size) in [0, 1], deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.zeros(len(PROMPTS), seeds, 3, size, size)
    for p in range(len(PROMPTS)):
        for n in range(seeds):
            cx, cy = (torch.rand(2, generator=gen) * 12 + 10).tolist()
            radius = float(torch.rand(1, generator=gen) * 4 + 6)
            background = float(torch.rand(1, generator=gen) * 0.3 + 0.05)
            mask = _shape_mask(p % 4, cx, cy, radius, size)
            grid[p, n] = background + mask[None] * (_COLOURS[p][:, None, None] - background)
    return grid.clamp(0.0, 1.0)
