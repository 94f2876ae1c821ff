"""The digits data set behind the built-in backbones: scikit-learn's 8x8 handwritten digits.

1,797 grey images in 10 classes ship inside scikit-learn, so nothing is downloaded. They are
nearest-upsampled to 32x32 and scaled to [-1, 1]. Upsampling matters for the method: each source
pixel becomes 16 pixels with independent noise, the signal-to-noise of 4x the amplitude, so the
state after the student's first step (sigma 0.86) still carries sample-specific structure, as it
does for SD3.5 latents at 1024 px (see README, "Why 32x32").

Prompts name a digit. Accepted forms (case and surrounding spaces ignored):
  "a handwritten digit seven"   "a handwritten digit 7"   "digit seven"   "digit 7"   "seven"   "7"
The empty prompt "" is the unconditional prompt used for classifier-free guidance.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PROMPT_FORMS = (
    '"a handwritten digit seven"',
    '"a handwritten digit 7"',
    '"digit seven"',
    '"digit 7"',
    '"seven"',
    '"7"',
)
NATIVE_SIZE = 8
IMAGE_SIZE = 32


def prompt_for(digit: int) -> str:
    """The canonical prompt for a class index: ``prompt_for(7) == "a handwritten digit seven"``."""
    return f"a handwritten digit {DIGIT_WORDS[digit]}"


ALL_PROMPTS = tuple(prompt_for(d) for d in range(10))


def parse_prompt(prompt: str) -> int | None:
    """Class index named by ``prompt``; ``None`` for the unconditional prompt ``""``.

    Raises ValueError naming the prompt and listing the accepted forms for anything else.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"a digits prompt must be a string, got {prompt!r}")
    text = " ".join(prompt.strip().lower().split())
    if text == "":
        return None
    for prefix in ("a handwritten digit ", "digit "):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if text in DIGIT_WORDS:
        return DIGIT_WORDS.index(text)
    if len(text) == 1 and text.isdigit():
        return int(text)
    raise ValueError(
        f"unknown digits prompt {prompt!r}: the built-in backbones accept one of the forms "
        f"{', '.join(PROMPT_FORMS)} for the digits 0-9 (words zero..nine), or \"\" (unconditional)"
    )


def upsample(images_8x8: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Nearest-upsample (N, 1, 8, 8) images to (N, 1, size, size)."""
    factor = size // NATIVE_SIZE
    return images_8x8.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def downsample(images: torch.Tensor) -> torch.Tensor:
    """Average-pool (N, 1, S, S) images back to the native (N, 1, 8, 8): the inverse of `upsample`
    for real digits, and a denoising read-out for generated ones."""
    factor = images.shape[-1] // NATIVE_SIZE
    return torch.nn.functional.avg_pool2d(images, factor)


@functools.lru_cache(maxsize=1)
def _load_native() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    # sklearn stores intensities 0..16; map to [-1, 1] as diffusion models expect.
    images = (data.images.astype(np.float32) / 16.0) * 2.0 - 1.0
    return images[:, None, :, :], data.target.astype(np.int64)


def load_digits(size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (images (N, 1, size, size) in [-1, 1], labels (N,) int64)."""
    if size % NATIVE_SIZE:
        raise ValueError(f"digits size must be a multiple of {NATIVE_SIZE}, got {size}")
    images, labels = _load_native()
    x = torch.from_numpy(images.copy())
    return (upsample(x, size) if size != NATIVE_SIZE else x), torch.from_numpy(labels.copy())
