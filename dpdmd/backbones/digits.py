"""The built-in backbones: class-conditional digit generators that pretrain on a laptop CPU.

``digits-flow`` is a small `SD3Transformer2DModel` trained by rectified flow (the SD3/SD3.5 case)
and ``digits-eps`` a small `UNet2DConditionModel` trained with the eps loss on the SDXL noise
schedule. They are diffusers' own classes at toy size, so the built-in and the real backbones run
the same code path.

Latents: the 32x32 digit image (see `dpdmd.data.digits`) folded 4x4 into channels, (16, 8, 8), the
way SD's VAE folds 8x8 pixels into latent channels; `decode` unfolds it. The "text encoder" maps
a digit prompt to a fixed one-hot token (class c -> unit vector c, plus a flag that it is
conditional); the empty prompt maps to zeros. The teacher learns the rest. The networks, the
folding and the tokens are `dpdmd.backbones.digits_net`, shared with the pretraining.

Teacher weights: shipped in ``dpdmd/backbones/weights/`` (made by ``python -m dpdmd.pretrain``),
else the disk cache (`dpdmd.data.disk_cache`), else pretrained on first use (about 4 minutes on 2 cores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..data import digits as digits_data
from ..data.disk_cache import cached_file, config_hash
from ..schedules import EpsSchedule, FlowSchedule
from .base import Backbone, Embeddings
from .digits_net import DigitsPretrainConfig, build_network, call_network, class_embeddings, unfold

SHIPPED_WEIGHTS = Path(__file__).parent / "weights"


class DigitsBackbone(Backbone):
    """A built-in digits backbone.

    Args (keyword-only):
        kind: "flow" (``digits-flow``) or "eps" (``digits-eps``).
        cfg_scale: teacher guidance weight w; None = the kind's default, chosen by measurement
            (README, "The built-in teachers"): flow 2.0 (at the reference's 3.5 its samples collapse
            to diversity 0.021 against the real digits' 0.075; at 2.0: 0.040, 97.5% classified as
            the prompted digit), eps 3.5 (0.057, 98.8%; at 2.0 only 90% are the prompted digit).
        teacher_steps: the teacher's Euler / DDIM steps (30 as the reference).
        student_steps: the student's steps (4).
        shift: flow only, the sigma shift of the grids (3.0 as SD3.5).
        device: "cpu" or a torch device.
    """

    # A 0.6M-parameter toy: at 1e-4 vanilla DMD already takes the 4-step student's diversity from
    # 0.055 to 0.033 within 25 student updates (README); 1e-5, the reference's, moves it little.
    default_lr = 1e-4
    default_prompts = digits_data.ALL_PROMPTS
    latent_shape = (16, 8, 8)

    DEFAULT_CFG = {"flow": 2.0, "eps": 3.5}

    def __init__(self, *, kind: str = "flow", cfg_scale: float | None = None, teacher_steps: int = 30,
                 student_steps: int = 4, shift: float = 3.0, device: str | torch.device = "cpu"):
        if kind not in ("flow", "eps"):
            raise ValueError(f"digits backbone kind must be 'flow' or 'eps', got {kind!r}")
        self.kind = kind
        self.name = f"digits-{kind}"
        self.network_folder = "transformer" if kind == "flow" else "unet"  # the network's diffusers class
        self.cfg_scale = float(self.DEFAULT_CFG[kind] if cfg_scale is None else cfg_scale)
        self.device = torch.device(device)
        if kind == "flow":
            self.schedule = FlowSchedule(shift=shift, teacher_steps=teacher_steps, student_steps=student_steps)
        else:
            self.schedule = EpsSchedule(teacher_steps=teacher_steps, student_steps=student_steps)
        self.pretrain_config = DigitsPretrainConfig(kind=kind, shift=shift)

    # --- prompts ---
    def validate_prompts(self, prompts: Sequence[str]) -> None:
        for prompt in prompts:
            digits_data.parse_prompt(prompt)

    def encode_prompts(self, prompts: Sequence[str]) -> Embeddings:
        emb = class_embeddings([digits_data.parse_prompt(p) for p in prompts])
        return {key: value.to(self.device) for key, value in emb.items()}

    # --- networks ---
    def load_teacher(self) -> nn.Module:
        net = build_network(self.kind)
        net.load_state_dict(load_file(str(teacher_weights(self.pretrain_config))))
        return net

    def predict(self, net: nn.Module, x: torch.Tensor, level, emb: Embeddings) -> torch.Tensor:
        timestep = torch.full((x.shape[0],), self.schedule.net_timestep(level), device=x.device)
        return call_network(net, x, timestep, emb)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((unfold(latents.float()) + 1.0) / 2.0).clamp(0.0, 1.0)


def teacher_weights(config: DigitsPretrainConfig) -> Path:
    """Path of the teacher weights for ``config``: shipped, cached, or pretrained now."""
    name = f"digits-{config.kind}-teacher"
    shipped = SHIPPED_WEIGHTS / f"{name}-{config_hash(asdict(config))}.safetensors"
    if shipped.exists():
        return shipped

    def build(path: Path) -> None:
        from .digits_pretrain import pretrain

        save_file(pretrain(config), str(path))

    return cached_file(name, asdict(config), build, suffix=".safetensors")
