"""PickScore, the preference score of the reference protocol (method.md, "Evaluation").

PickScore_v1 is a CLIP-H model fine-tuned on human preferences; it is read with the processor
(image processor and tokenizer) of CLIP-ViT-H-14-laion2B, which lives in a separate directory.
method.md's score is ``logit_scale * cos / 26``, where ``logit_scale`` is the model's learned
temperature as PickScore's own code uses it, ``model.logit_scale.exp()`` (the parameter stores its
log), and ``cos`` the cosine of the L2-normalised projected image and prompt embeddings. Without
the ``/ 26`` this is the raw PickScore papers report (around 20-23).
"""

from __future__ import annotations

import torch

from .clip import ClipImageText

PICKSCORE_DIVISOR = 26.0  # method.md: "logit_scale * cos / 26"


class PickScore(ClipImageText):
    """``model.logit_scale.exp() * cos(image, text) / 26`` per image (a CLIPModel, PickScore_v1)."""

    name = "pickscore"

    def from_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        scale = float(self.model.logit_scale.detach().float().exp())
        return scale * cosine / PICKSCORE_DIVISOR
