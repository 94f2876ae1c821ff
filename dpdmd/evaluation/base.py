"""The evaluation API every evaluator implements (digits classifier, DINOv2, CLIP, PickScore).

An evaluator turns images into features and scores a grid of generated images: ``N`` seeds for
each of ``P`` prompts, as in the reference protocol (method.md, "Evaluation"). Every evaluator
reports at least

- ``"diversity"``: `pairwise_diversity` of its features (computed here, shared by subclasses);
- ``"quality"``: a copy of its primary quality metric, named by ``quality_key`` (higher = better),

so the trainer and the search can read ``diversity`` and ``quality`` without knowing which
evaluator produced them. Extra metrics go in the same dict under their own names.

An evaluator whose fidelity is measured against the teacher's own samples (the real evaluator:
no real images exist for free-text prompts) sets ``uses_teacher_reference``: the caller derives a
reference from the teacher's samples once (`teacher_reference_state`, cached on disk with the
teacher's scores by `dpdmd.evaluation.teacher_reference`) and hands it to every evaluator that
scores against it (`set_teacher_reference`), so every trial is read against the same one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from .diversity import pairwise_diversity


class Evaluator(ABC):
    """Base class of the evaluators.

    Attributes:
        quality_key: the name, in `score`'s dict, of the primary quality metric (higher = better).
    """

    quality_key: str
    uses_teacher_reference: bool = False  # True: `score` needs `set_teacher_reference` first

    @classmethod
    def prompt_problem(cls, prompt: str) -> str | None:
        """Why this evaluator cannot score ``prompt``, and what it can score: asked before anything
        runs (`dpdmd.evaluation.evaluators.evaluator_problems`) for every prompt of ``eval.prompts``.
        None: it can. The default: any prompt."""
        return None

    @abstractmethod
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images (B, C, H, W) float in [0, 1] as (B, D) float32 features."""

    @abstractmethod
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, float]:
        """Score images (P, N, C, H, W) in [0, 1], N seeds for each of P prompts.

        Returns at least ``"diversity"`` and ``"quality"`` (== the value under `quality_key`).
        Subclasses typically call `grid_features`, `diversity` and `with_quality`.
        """

    def teacher_reference_state(self, images: torch.Tensor, prompts: Sequence[str]) -> dict | None:
        """What `score` reads later students against, derived from the teacher's images
        (P, N, C, H, W) on the evaluation prompts; None (the default): this evaluator has its own
        reference (the digits evaluator: the real digits). A dict of tensors, strings and numbers
        (saved with ``torch.save``, loaded with ``weights_only=True``)."""
        return None

    def set_teacher_reference(self, state: dict | None) -> None:
        """Use ``state`` (from `teacher_reference_state`) as the reference; the default ignores it."""

    # --- shared helpers for subclasses ---
    def grid_features(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Check a (P, N, C, H, W) grid against its P prompts and embed it as (P, N, D)."""
        p, n = check_grid(images, prompts)
        feats = self.features(images.reshape(p * n, *images.shape[2:]))
        return feats.reshape(p, n, -1)

    @staticmethod
    def diversity(features: torch.Tensor) -> float:
        """The reference diversity of (P, N, D) features: see `pairwise_diversity`."""
        return pairwise_diversity(features)

    def with_quality(self, metrics: dict[str, float]) -> dict[str, float]:
        """``metrics`` plus ``"quality"``, a copy of ``metrics[self.quality_key]``."""
        if self.quality_key not in metrics:
            raise ValueError(
                f"{type(self).__name__}.quality_key is {self.quality_key!r}, which is not among "
                f"the metrics it computed ({', '.join(sorted(metrics))})"
            )
        return {**metrics, "quality": float(metrics[self.quality_key])}


def check_grid(images: torch.Tensor, prompts: Sequence[str]) -> tuple[int, int]:
    """Validate a (P, N, C, H, W) image grid and its P prompts; return (P, N).

    Images must be floating point in [0, 1] (a small overshoot is tolerated); images in [-1, 1]
    are the usual mistake and the error says how to convert them.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 5:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(
            f"score() takes images of shape (P prompts, N seeds, C, H, W), got {shape}; "
            "stack the N samples of each prompt along dim 1"
        )
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ValueError(f"score() takes a sequence of P prompts, got {prompts!r}; wrap one prompt in a list")
    p, n = images.shape[:2]
    if len(prompts) != p:
        raise ValueError(f"score() got {p} prompts' worth of images (dim 0) but {len(prompts)} prompts")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}; divide uint8 by 255")
    low, high = float(images.min()), float(images.max())
    if low < -0.25 or high > 1.25:
        raise ValueError(
            f"images must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]; "
            "for images in [-1, 1] pass (images + 1) / 2"
        )
    return p, n
