"""The built-in digits backbones' networks and the pieces the backbone and its pretraining share
(`dpdmd.backbones.digits`, `dpdmd.backbones.digits_pretrain`): the two diffusers networks at toy
size, the 4x4 folding of a 32x32 image into a (16, 8, 8) latent, the digit prompts' one-hot
tokens, and the pretraining config whose hash names the teacher weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import SD3Transformer2DModel, UNet2DConditionModel
from torch import nn

from .base import Embeddings

EMBED_DIM = 16  # one-hot class (10) + conditional flag (1), padded
FOLD = 4  # 32x32x1 image <-> 8x8x16 latent


@dataclass(frozen=True)
class DigitsPretrainConfig:
    """How a digits teacher is pretrained. Its hash names the cached weights."""

    kind: str = "flow"
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999
    label_dropout: float = 0.1  # the unconditional branch CFG needs
    shift: float = 3.0  # flow: training levels drawn on the shifted grid the samplers use
    seed: int = 0
    version: int = 2  # bump when the network or the training code changes


def build_network(kind: str) -> nn.Module:
    """A fresh, randomly initialised teacher network of the given parameterisation."""
    torch.manual_seed(0)
    if kind == "flow":
        return SD3Transformer2DModel(
            sample_size=8, patch_size=1, in_channels=16, out_channels=16, num_layers=4,
            attention_head_dim=32, num_attention_heads=2, joint_attention_dim=EMBED_DIM,
            caption_projection_dim=64, pooled_projection_dim=EMBED_DIM, pos_embed_max_size=8,
        )
    if kind == "eps":
        return UNet2DConditionModel(
            sample_size=8, in_channels=16, out_channels=16, layers_per_block=1,
            block_out_channels=(48, 96), norm_num_groups=16, cross_attention_dim=EMBED_DIM,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=16,
        )
    raise ValueError(f"digits backbone kind must be 'flow' or 'eps', got {kind!r}")


def fold(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, 32, 32) images -> (B, 16, 8, 8) latents."""
    return nn.functional.pixel_unshuffle(images, FOLD)


def unfold(latents: torch.Tensor) -> torch.Tensor:
    """(B, 16, 8, 8) latents -> (B, 1, 32, 32) images."""
    return nn.functional.pixel_shuffle(latents, FOLD)


def class_embeddings(labels: Sequence[int | None]) -> Embeddings:
    """One token per prompt: one-hot class plus a conditional flag; ``None`` (empty prompt) is 0."""
    tokens = torch.zeros(len(labels), 1, EMBED_DIM)
    for row, label in enumerate(labels):
        if label is not None:
            tokens[row, 0, label] = 1.0
            tokens[row, 0, 10] = 1.0
    return {"encoder_hidden_states": tokens}


def call_network(net: nn.Module, x: torch.Tensor, timestep: torch.Tensor, emb: Embeddings) -> torch.Tensor:
    """Run either diffusers network on latents x with a (B,) timestep tensor."""
    tokens = emb["encoder_hidden_states"].to(x.dtype)
    if isinstance(net, SD3Transformer2DModel):
        return net(hidden_states=x, encoder_hidden_states=tokens, pooled_projections=tokens[:, 0],
                   timestep=timestep).sample
    return net(x, timestep, encoder_hidden_states=tokens).sample
