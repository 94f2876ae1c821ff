"""Stable Diffusion XL as a DP-DMD backbone (eps): ``sdxl``.

Built from the components of a diffusers `StableDiffusionXLPipeline` folder: the
`UNet2DConditionModel` is the teacher (frozen) and, copied, the student and the fake score; the two
CLIP encoders give ``encoder_hidden_states`` (B, 77, 2048) and the pooled ``text_embeds``
(B, 1280), and every batch carries SDXL's size conditioning ``time_ids`` (B, 6) = (resolution,
resolution, 0, 0, resolution, resolution): original size, crop corner, target size. The empty
prompt gives zeros when the folder's pipeline says ``force_zeros_for_empty_prompt`` (SDXL base
does), exactly the unconditional branch diffusers' SDXL pipeline uses. The VAE decodes
``latents / scaling_factor`` in float32. The schedule is `EpsSchedule` with the folder's
scheduler betas (scaled-linear 0.00085..0.012): DDIM steps, students at [999, 749, 499, 249]
(method.md, "Eps (diffusion) backbones").

Memory and time per GPU. Measured (November 2026) through this class and `DPDMD` with random
weights of the real SDXL shape (text encoders tiny, so their memory is not in these figures),
1024 px, batch 4, weights_dtype bf16, ``mixed_precision="bf16"``, ``gradient_checkpointing=True``,
torch 2.11, diffusers 0.42.1, the optimiser `DPDMD` builds (torch AdamW, default foreach):

=====================  =========  ==========  ==========  ==========  =========  ===========
train_mode (SDXL)      trainable  GiB built   GiB steady  GiB peak    fake upd.  student upd.
=====================  =========  ==========  ==========  ==========  =========  ===========
lora, rank 64 (H100)   92.9 M     15.1        17.2        27.2        1.87 s     5.19 s
full (H200)            2.57 B     24.0        81.4        97.5        1.57 s     4.01 s
=====================  =========  ==========  ==========  ==========  =========  ===========

("built": the three networks; "steady": with AdamW states; the teacher anchor at K = 5 took a
further 1.1-1.3 s a student update.) LoRA fits one 80 GB GPU; full fine-tuning holds 2 x 2.57 B x 16
bytes of fp32 weights, gradients and AdamW moments = 77 GiB plus the bf16 teacher: 81.0 GiB peak
with fused AdamW on the H200 (bench/README_gpu.md), so it needs more than one 80 GB GPU (an H200,
or a multi-worker trial sharded with FSDP2, `dpdmd.sharding`); it was not tried on an H100. Not
measured: the real CLIP-L + CLIP-G encoders (0.8 B, ~1.6 GB in bf16), on the GPU only
while prompts are encoded (the trainer frees them before training).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..schedules import EpsSchedule
from .diffusers_backbone import DiffusersBackbone
from .base import Embeddings

UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class SDXLBackbone(DiffusersBackbone):
    """The SDXL backbone (eps), registered as ``sdxl``.

    Args (keyword-only):
        variant: fixed by the registry name.
        path: a local diffusers `StableDiffusionXLPipeline` folder, or a hub id; None = the SDXL
            base hub id (from the Hugging Face cache, or downloaded where a network exists).
        cfg_scale: teacher CFG weight w; None = 5.0 (diffusers' SDXL default).
        teacher_steps, student_steps: DDIM steps of the teacher (30) and the student (4).
        device: where the networks run.
        resolution: image side in pixels (1024); latents are (4, resolution / 8, resolution / 8)
            for the real VAE. Must be a multiple of 8 x the UNet's downsampling (32 px).
        weights_dtype: "bf16" (default), "fp16" or "fp32": the frozen teacher, the text encoders,
            and the frozen bases of LoRA copies. Trainable weights are always fp32.
        train_mode: "full" or "lora".
        lora_rank, lora_alpha: LoRA rank (64) and alpha (None = the rank, scale 1).
        lora_target_modules: module names that get adapters; None = to_q, to_k, to_v, to_out.0.
        gradient_checkpointing: recompute UNet blocks in the backward pass (needed at 1024 px).
        embedding_cache: keep prompt embeddings on disk (`dpdmd.data.disk_cache`) across processes.
    """

    network_folder = "unet"
    default_lora_targets = UNET_LORA_TARGETS

    def __init__(self, *, variant: str = "sdxl", path: str | None = None, cfg_scale: float | None = None,
                 teacher_steps: int = 30, student_steps: int = 4, device: str | torch.device = "cpu",
                 resolution: int = 1024, weights_dtype: str = "bf16", train_mode: str = "full",
                 lora_rank: int = 64, lora_alpha: float | None = None,
                 lora_target_modules: Sequence[str] | None = None, gradient_checkpointing: bool = False,
                 embedding_cache: bool = True):
        super().__init__(variant=variant, path=path, cfg_scale=cfg_scale, teacher_steps=teacher_steps,
                         student_steps=student_steps, device=device, resolution=resolution,
                         weights_dtype=weights_dtype, train_mode=train_mode, lora_rank=lora_rank,
                         lora_alpha=lora_alpha, lora_target_modules=lora_target_modules,
                         gradient_checkpointing=gradient_checkpointing, embedding_cache=embedding_cache)

    @staticmethod
    def pipeline_class():
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline

    @staticmethod
    def network_class():
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel

    def _setup_network(self, *, teacher_steps: int, student_steps: int) -> None:
        scheduler = self.read_config("scheduler", "scheduler_config.json")
        problems = []
        if scheduler.get("prediction_type", "epsilon") != "epsilon":
            problems.append(f"prediction_type {scheduler['prediction_type']!r} (only 'epsilon' is supported)")
        if scheduler.get("num_train_timesteps", 1000) != 1000:
            problems.append(f"num_train_timesteps {scheduler['num_train_timesteps']} (1000 expected)")
        if scheduler.get("rescale_betas_zero_snr"):
            problems.append("rescale_betas_zero_snr (not supported)")
        if problems:
            raise ValueError(f"backbone {self.name!r}: the scheduler config has " + "; ".join(problems))
        self.schedule = EpsSchedule(teacher_steps=teacher_steps, student_steps=student_steps,
                                    beta_start=scheduler.get("beta_start", 0.00085),
                                    beta_end=scheduler.get("beta_end", 0.012),
                                    beta_schedule=scheduler.get("beta_schedule", "scaled_linear"))
        unet = self.read_config("unet")
        factor = self._vae_scale_factor()
        down = 2 ** (len(unet["down_block_types"]) - 1)
        side = self._check_resolution(factor * down, f"VAE scale {factor} x UNet downsampling {down}")
        self.latent_shape = (unet["in_channels"], side, side)
        projection = self.read_config("text_encoder_2")["projection_dim"]
        found, time_dim = unet.get("projection_class_embeddings_input_dim"), unet.get("addition_time_embed_dim")
        if unet.get("addition_embed_type") != "text_time" or found != 6 * (time_dim or 0) + projection:
            raise ValueError(f"backbone {self.name!r}: the UNet is not an SDXL 'text_time' UNet matching "
                             f"text_encoder_2 (projection_class_embeddings_input_dim {found}, expected 6 x "
                             f"{time_dim} + {projection})")
        model_index = self.read_config("", "model_index.json")
        self.zeros_for_empty_prompt = bool(model_index.get("force_zeros_for_empty_prompt", True))
        r = float(self.resolution)
        self._time_ids = torch.tensor([[r, r, 0.0, 0.0, r, r]])

    def embedding_settings(self) -> dict:
        return {**super().embedding_settings(), "zeros_for_empty_prompt": self.zeros_for_empty_prompt}

    def _encode_text(self, pipe, prompts: list[str]) -> Embeddings:
        with torch.no_grad():
            embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, device=self.device,
                                                      do_classifier_free_guidance=False)
        if self.zeros_for_empty_prompt:  # the SDXL pipeline's unconditional branch is all zeros
            empty = torch.tensor([p == "" for p in prompts], device=embeds.device)
            embeds = torch.where(empty[:, None, None], torch.zeros_like(embeds), embeds)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        return {"encoder_hidden_states": embeds, "text_embeds": pooled}

    def _add_conditioning(self, emb: Embeddings) -> Embeddings:
        batch = emb["encoder_hidden_states"].shape[0]
        return {**emb, "time_ids": self._time_ids.to(self.device).expand(batch, -1)}

    def predict(self, net: nn.Module, x: torch.Tensor, level, emb: Embeddings) -> torch.Tensor:
        """Noise prediction (float32) of the UNet at integer timestep ``level``."""
        dtype = self.input_dtype(net)
        timestep = torch.full((x.shape[0],), self.schedule.net_timestep(level), device=x.device)
        added = {"text_embeds": emb["text_embeds"].to(x.device, dtype), "time_ids": emb["time_ids"].to(x.device, dtype)}
        out = net(x.to(dtype), timestep, encoder_hidden_states=emb["encoder_hidden_states"].to(x.device, dtype),
                  added_cond_kwargs=added, return_dict=False)[0]
        return out.float()

    def _vae_input(self, latents: torch.Tensor, vae_config) -> torch.Tensor:
        return latents / vae_config.scaling_factor
