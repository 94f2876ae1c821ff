"""DINOv2 / DINOv3 image features for diversity (method.md, "Evaluation": the pooled output).

`DinoFeatures` wraps a loaded transformers model (``Dinov2Model``, ``Dinov2WithRegistersModel``,
``DINOv3ViTModel`` or ``DINOv3ConvNextModel``) and its image processor; `dpdmd.evaluation.real`
loads them from local directories. The feature of an image is the model's ``pooler_output``: for
the ViTs the layer-normed CLS token, for DINOv3 ConvNeXt the normed global average.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from .image_ops import model_pixels

# config.json model_type of the checkpoints each option name accepts
MODEL_TYPES = {
    "dinov2": ("dinov2", "dinov2_with_registers"),
    "dinov3": ("dinov3_vit", "dinov3_convnext"),
}
DINOV3_MIN_TRANSFORMERS = "4.56"  # the first release with DINOv3ViTModel / DINOv3ConvNextModel


class DinoFeatures:
    """Pooled output of a DINOv2 / DINOv3 model.

    Args:
        model: the loaded model, already on its device and dtype, in eval mode.
        image_processor: its image processor (resize, crop, normalisation), which receives PIL
            images (see `dpdmd.evaluation.real` for why PIL).
    """

    def __init__(self, model: torch.nn.Module, image_processor):
        self.model = model
        self.image_processor = image_processor

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Features (B, D) float32 on the CPU of B RGB images."""
        out = self.model(pixel_values=model_pixels(self.model, self.image_processor, images))
        return out.pooler_output.float().cpu()
