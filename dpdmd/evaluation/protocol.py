"""Evaluation of a student or the teacher, by the reference protocol (method.md, "Evaluation").

For each evaluation prompt, N images from seeds 0..N-1 (seed n gives the same initial noise for
every prompt), decoded and scored by an `Evaluator` (diversity of its features, quality). The
teacher's scores for a backbone and evaluation set are computed once and cached on disk: they
normalise the search's objective and are the reference every run is compared with. Which
evaluator scores is `dpdmd.evaluation.evaluators`' choice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..backbones.base import Backbone, Embeddings
from ..config import TrainConfig
from ..data.atomic import atomic_path
from ..data.cache_keys import cache_key
from ..data.disk_cache import cache_dir, cached_file, config_hash
from ..data.prompts import eval_prompts
from .evaluators import make_evaluator

Sampler = Callable[[torch.Tensor, Embeddings], torch.Tensor]  # (x1, cond) -> latents


def eval_noise(num_seeds: int, latent_shape: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) initial noise: row n from a generator seeded n."""
    return torch.stack([torch.randn(tuple(latent_shape), generator=torch.Generator().manual_seed(n))
                        for n in range(num_seeds)])


@torch.no_grad()
def generate(backbone: Backbone, sampler: Sampler, prompts: Sequence[str], num_seeds: int,
             embed: Callable[[Sequence[str]], Embeddings]) -> torch.Tensor:
    """Images (P, N, C, H, W) in [0, 1]: ``sampler`` run from seeds 0..N-1 for each prompt."""
    x1 = eval_noise(num_seeds, backbone.latent_shape).to(backbone.device)
    rows = []
    for prompt in prompts:
        latents = sampler(x1, embed([prompt] * num_seeds))
        rows.append(backbone.decode(latents).cpu())
    return torch.stack(rows)


@torch.no_grad()
def teacher_sampler(backbone: Backbone, teacher: torch.nn.Module,
                    embed: Callable[[Sequence[str]], Embeddings] | None = None) -> Sampler:
    """The teacher's full CFG sampler (its ``teacher_steps`` Euler / DDIM steps). ``embed``: the
    run's prompt cache, which gives the empty prompt's embedding (None: the backbone encodes it;
    after `Backbone.release_text_encoders` that may load the encoders again)."""
    schedule = backbone.schedule
    levels = schedule.teacher_levels

    def sample(x1: torch.Tensor, cond: Embeddings) -> torch.Tensor:
        batch = x1.shape[0]
        uncond = embed([""] * batch) if embed is not None else backbone.unconditional(batch)
        x = x1
        for j in range(len(levels) - 1):
            x = schedule.step(x, backbone.guided(teacher, x, levels[j], cond, uncond), levels[j], levels[j + 1])
        return x

    return sample


@torch.no_grad()
def student_sampler(backbone: Backbone, student: torch.nn.Module) -> Sampler:
    """A trained student's few-step sampler on its own grid, conditional only (no CFG): the
    sample `dpdmd.method.DPDMD.sample` draws, for a student loaded on its own (`dpdmd.student`)."""
    schedule = backbone.schedule
    levels = schedule.student_levels

    def sample(x1: torch.Tensor, cond: Embeddings) -> torch.Tensor:
        x = x1
        for j in range(len(levels) - 1):
            x = schedule.step(x, backbone.predict(student, x, levels[j], cond), levels[j], levels[j + 1])
        return x

    return sample


def score(evaluator, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, float]:
    return {k: float(v) for k, v in evaluator.score(images, list(prompts)).items()}


def teacher_reference(config: TrainConfig, backbone: Backbone, teacher: torch.nn.Module,
                      embed: Callable[[Sequence[str]], Embeddings], evaluator=None) -> tuple[dict[str, float], Path]:
    """The teacher's scores on the run's evaluation set and the path of its sample grid (PNG),
    cached on disk by everything they depend on, so a search computes them once per backbone.

    An evaluator that reads students against the teacher's samples (``uses_teacher_reference``,
    the real evaluator) gets its reference here: derived from the teacher's images when they are
    generated, saved beside the scores (``teacher-features-<hash>.pt``) and loaded into
    ``evaluator`` on every later call, so every trial of a search is read against the same one.
    The teacher's own scores are computed against that reference (leave-one-out)."""
    prompts = eval_prompts(config, backbone)
    key = cache_key("teacher_reference", config, backbone)
    ev = evaluator or make_evaluator(config.eval, backbone)
    grid = cache_dir() / f"teacher-samples-{config_hash(key)}.png"
    state_file = cache_dir() / f"teacher-features-{config_hash(key)}.pt"

    def build(path: Path) -> None:
        images = generate(backbone, teacher_sampler(backbone, teacher, embed), prompts, config.eval.seeds_per_prompt, embed)
        with atomic_path(grid, keep_suffix=True) as tmp:  # PIL reads the format from the suffix
            save_grid(images, tmp)
        state = ev.teacher_reference_state(images, prompts)
        if state is not None:  # written before the scores, which mark the entry complete
            with atomic_path(state_file) as tmp:
                torch.save(state, tmp)
            ev.set_teacher_reference(state)
        path.write_text(json.dumps(score(ev, images, prompts)))

    path = cached_file("teacher-metrics", key, build, suffix=".json")
    if ev.uses_teacher_reference:
        if not state_file.exists():
            raise FileNotFoundError(f"{path} has no teacher reference beside it ({state_file} is missing); "
                                    f"delete {path} so that the teacher's reference is computed again")
        ev.set_teacher_reference(torch.load(state_file, map_location="cpu", weights_only=True))
    return json.loads(path.read_text()), grid


def save_grid(images: torch.Tensor, path: str | Path, *, scale: int = 2, pad: int = 2) -> Path:
    """Write images (P, N, C, H, W) in [0, 1] as one PNG: rows are prompts, columns seeds."""
    p, n, c, h, w = images.shape
    canvas = np.ones((p * (h + pad) + pad, n * (w + pad) + pad, 3), dtype=np.float32)
    for i in range(p):
        for j in range(n):
            tile = images[i, j].float().clamp(0, 1).permute(1, 2, 0).numpy()
            if c == 1:
                tile = np.repeat(tile, 3, axis=2)
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[top:top + h, left:left + w] = tile[..., :3]
    image = Image.fromarray((canvas * 255).round().astype(np.uint8))
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
