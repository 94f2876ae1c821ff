"""CLIP image features (diversity) and the CLIP score (quality) (method.md, "Evaluation").

- `ClipFeatures`: the image embedding of CLIP ViT-L/14, i.e. its CLS token after the final
  layer norm and the visual projection (``CLIPModel.get_image_features``, the same as
  ``CLIPVisionModelWithProjection``'s ``image_embeds``). The projection is linear, so this is the
  CLS token expressed in the space where CLIP's image-text cosines live.
- `ClipImageText`: L2-normalised image and text embeddings of a CLIPModel and their cosine; the
  scores built on it say how the cosine becomes a score (`ClipScore` here, `PickScore` in
  `dpdmd.evaluation.pickscore`).
- `ClipScore`: ``max(100 * cos(image, text), 0)`` per image, as torchmetrics' ``CLIPScore``.

The models are loaded from local directories by `dpdmd.evaluation.real`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from PIL import Image

from .image_ops import model_pixels

# config.json model_type accepted for the "clip" diversity encoder and for image-text scorers
FEATURE_MODEL_TYPES = ("clip", "clip_vision_model")
IMAGE_TEXT_MODEL_TYPES = ("clip",)


def _pooled(out) -> torch.Tensor:
    """The embedding from ``get_*_features``: a tensor in transformers 4, an output object
    (``pooler_output`` = projected embedding) in transformers 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipFeatures:
    """Projected CLS-token image embeddings of a CLIPModel or CLIPVisionModelWithProjection.

    Args:
        model: the loaded model, on its device and dtype, in eval mode.
        image_processor: its image processor, which receives PIL images.
    """

    def __init__(self, model: torch.nn.Module, image_processor):
        self.model = model
        self.image_processor = image_processor

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Image embeddings (B, projection_dim) float32 on the CPU (not normalised)."""
        pixels = model_pixels(self.model, self.image_processor, images)
        if hasattr(self.model, "get_image_features"):  # CLIPModel
            embeds = _pooled(self.model.get_image_features(pixel_values=pixels))
        else:  # CLIPVisionModelWithProjection
            embeds = self.model(pixel_values=pixels).image_embeds
        return embeds.float().cpu()


class ClipImageText(ABC):
    """Image-text scores of a CLIPModel from the cosine of its normalised embeddings.

    Subclasses define `from_cosine`. Args: a CLIPModel (on its device, eval mode), its image
    processor and its tokenizer (prompts are truncated to the text model's positions, 77 for CLIP).
    """

    name = "clip_image_text"

    def __init__(self, model: torch.nn.Module, image_processor, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self._images = ClipFeatures(model, image_processor)

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised image embeddings (B, D) float32 on the CPU."""
        return torch.nn.functional.normalize(self._images.embed_images(images), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (T, D) float32 on the CPU."""
        max_length = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt").to(self.model.device)
        embeds = _pooled(self.model.get_text_features(input_ids=tokens["input_ids"],
                                                      attention_mask=tokens["attention_mask"]))
        return torch.nn.functional.normalize(embeds.float().cpu(), dim=-1)

    def scores(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Scores (P, N) of image embeddings (P, N, D) against their prompts' text embeddings (P, D)."""
        cosine = torch.einsum("pnd,pd->pn", image_embeds.double(), text_embeds.double())
        return self.from_cosine(cosine)

    @abstractmethod
    def from_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        """Per-image scores from cosines (float64, any shape)."""


class ClipScore(ClipImageText):
    """CLIP score: ``max(100 * cos(image, text), 0)`` (torchmetrics' ``CLIPScore``)."""

    name = "clip_score"

    def from_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        return (100.0 * cosine).clamp(min=0.0)
