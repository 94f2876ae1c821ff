"""Image preprocessing of the evaluation models, done with PIL, numpy and torch only (no torchvision).

Each function reproduces the preprocessing a model was trained and published with, so the scores
equal the original implementation's:

- `resize_center_crop_pil`: torchvision's ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` applied
  to a PIL image (ImageReward: the short side to ``size`` with PIL's own resampling, the long side
  ``int(size * long / short)``, then the centre crop with torchvision's rounding).
- `resize_center_crop_tensor`: the same geometry on a float tensor, through
  ``torch.nn.functional.interpolate(..., antialias=True)``, which is what torchvision's ``Resize``
  calls on tensors.
- `resize_longest_pad_tensor`: HPSv2's evaluation transform (its open_clip fork's ``ResizeMaxSize``):
  the long side to ``size`` (the short side rounded), the rest padded with black, centred.
- `TorchImageProcessor`: an image processor read from a transformers ``preprocessor_config.json``
  (rescale, resize to height x width or the short side, centre crop, normalise) in the order and
  with the operations of transformers' torchvision backend: DINOv3's processor without torchvision.

Images arrive as 8-bit RGB PIL images (what `dpdmd.evaluation.real.to_pil_images` makes); outputs are
float32 tensors (B, 3, H, W), normalised.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# PIL resampling codes as transformers stores them (``resample`` in preprocessor_config.json)
_MODES = {2: "bilinear", 3: "bicubic"}


def shortest_edge_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) after scaling the short side to ``size``, the long side truncated as torchvision does."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def crop_box(height: int, width: int, crop_h: int, crop_w: int, *, rounding: str) -> tuple[int, int]:
    """(top, left) of a centre crop: ``rounding`` "round" (torchvision) or "floor" (transformers)."""
    if crop_h > height or crop_w > width:
        raise ValueError(f"cannot centre-crop {crop_h}x{crop_w} from a {height}x{width} image; "
                         "resize it first (the preprocessing resizes the short side to the crop size)")
    if rounding == "round":
        return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return int((height - crop_h) / 2.0), int((width - crop_w) / 2.0)


def normalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel of (B, C, H, W) float32."""
    mean_t = torch.tensor(mean, dtype=pixels.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype).view(1, -1, 1, 1)
    return (pixels - mean_t) / std_t


def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """8-bit RGB PIL images of one size as (B, 3, H, W) uint8."""
    arrays = [np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def resize_center_crop_pil(images: Sequence[Image.Image], size: int, *, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                           std: Sequence[float] = OPENAI_CLIP_STD) -> torch.Tensor:
    """PIL bicubic resize of the short side to ``size``, torchvision's centre crop, [0, 1], normalise:
    (B, 3, size, size) float32."""
    out = []
    for image in images:
        h, w = shortest_edge_size(image.height, image.width, size)
        resized = image.resize((w, h), Image.BICUBIC)
        top, left = crop_box(h, w, size, size, rounding="round")
        out.append(resized.crop((left, top, left + size, top + size)).convert("RGB"))
    return normalize(to_tensor(out).float() / 255.0, mean, std)


def resize_center_crop_tensor(images: Sequence[Image.Image], size: int, *, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                              std: Sequence[float] = OPENAI_CLIP_STD) -> torch.Tensor:
    """[0, 1] first, then an antialiased bicubic resize of the short side to ``size`` on the float
    tensor, torchvision's centre crop and normalisation: (B, 3, size, size) float32."""
    out = []
    for image in images:
        pixels = to_tensor([image]).float() / 255.0  # ToTensor: uint8 / 255
        h, w = shortest_edge_size(image.height, image.width, size)
        pixels = F.interpolate(pixels, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        top, left = crop_box(h, w, size, size, rounding="round")
        out.append(pixels[:, :, top:top + size, left:left + size])
    return normalize(torch.cat(out), mean, std)


def resize_longest_pad_tensor(images: Sequence[Image.Image], size: int, *, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                              std: Sequence[float] = OPENAI_CLIP_STD) -> torch.Tensor:
    """[0, 1] first, then an antialiased bicubic resize of the long side to ``size`` (the other side
    ``round(side * size / long)``), zero padding to ``size`` x ``size`` (left / top get the smaller
    half), normalisation: (B, 3, size, size) float32. An image whose long side already is ``size``
    is not resized (as the original), only padded."""
    out = []
    for image in images:
        pixels = to_tensor([image]).float() / 255.0
        height, width = pixels.shape[-2:]
        scale = size / float(max(height, width))
        if scale != 1.0:
            height, width = round(height * scale), round(width * scale)
            pixels = F.interpolate(pixels, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        pad_h, pad_w = size - height, size - width
        out.append(F.pad(pixels, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0))
    return normalize(torch.cat(out), mean, std)


class TorchImageProcessor:
    """A transformers image processor config applied with torch alone, as its torchvision backend does.

    Order (transformers' DINOv3 processor): rescale (``x * rescale_factor`` on the uint8 pixels),
    resize (``interpolate(..., antialias=True)`` to ``size`` = {height, width} or {shortest_edge}),
    centre crop (``crop_size``, transformers' floor rounding), normalise.

    Args:
        config: the dict of ``preprocessor_config.json``.
    """

    _KEYS = {"do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean",
             "image_std", "do_center_crop", "crop_size", "do_convert_rgb", "image_processor_type",
             "processor_class", "data_format", "default_to_square", "input_data_format", "device",
             "return_tensors", "disable_grouping", "do_pad", "pad_size"}

    def __init__(self, config: dict):
        unknown = sorted(set(config) - self._KEYS)
        if unknown:
            raise ValueError(f"TorchImageProcessor: preprocessor settings {unknown} are not supported; "
                             "use the model's own transformers image processor (install torchvision)")
        if config.get("do_pad"):
            raise ValueError("TorchImageProcessor: do_pad is not supported; use the model's own image processor")
        self.do_resize = bool(config.get("do_resize", True))
        self.size = dict(config.get("size") or {"height": 224, "width": 224})
        resample = int(config.get("resample", 2))
        if resample not in _MODES:
            raise ValueError(f"TorchImageProcessor: resample {resample} is not supported; allowed: "
                             f"{', '.join(f'{k} ({v})' for k, v in _MODES.items())}")
        self.mode = _MODES[resample]
        self.do_rescale = bool(config.get("do_rescale", True))
        self.rescale_factor = float(config.get("rescale_factor", 1 / 255))
        self.do_center_crop = bool(config.get("do_center_crop", False))
        self.crop_size = dict(config.get("crop_size") or {})
        self.do_normalize = bool(config.get("do_normalize", True))
        self.image_mean = list(config.get("image_mean", (0.485, 0.456, 0.406)))
        self.image_std = list(config.get("image_std", (0.229, 0.224, 0.225)))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "TorchImageProcessor":
        path = os.path.join(directory, "preprocessor_config.json")
        with open(path) as f:
            return cls(json.load(f))

    def _target(self, height: int, width: int) -> tuple[int, int]:
        if "height" in self.size and "width" in self.size:
            return int(self.size["height"]), int(self.size["width"])
        if "shortest_edge" in self.size:
            return shortest_edge_size(height, width, int(self.size["shortest_edge"]))
        raise ValueError(f"TorchImageProcessor: size {self.size} needs height and width, or shortest_edge")

    def __call__(self, images: Sequence[Image.Image], return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        """``{"pixel_values": (B, 3, H, W) float32}`` of RGB PIL images, like a transformers processor."""
        out = []
        for image in images:
            pixels = to_tensor([image])
            pixels = pixels * self.rescale_factor if self.do_rescale else pixels.float()
            if self.do_resize:
                h, w = self._target(*pixels.shape[-2:])
                pixels = F.interpolate(pixels, size=(h, w), mode=self.mode, align_corners=False, antialias=True)
            if self.do_center_crop:
                ch, cw = int(self.crop_size["height"]), int(self.crop_size["width"])
                top, left = crop_box(*pixels.shape[-2:], ch, cw, rounding="floor")
                pixels = pixels[:, :, top:top + ch, left:left + cw]
            out.append(pixels)
        pixels = torch.cat(out)
        if self.do_normalize:
            pixels = normalize(pixels, self.image_mean, self.image_std)
        return {"pixel_values": pixels}
