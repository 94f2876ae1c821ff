"""Stable Diffusion 3 / 3.5 as a DP-DMD backbone (flow): ``sd35m``, ``sd35l``, ``sd3m``.

Built from the components of a diffusers `StableDiffusion3Pipeline` folder: the
`SD3Transformer2DModel` is the teacher (frozen) and, copied, the student and the fake score; the
two CLIP encoders and T5 give the prompt embeddings (``encoder_hidden_states`` (B, 77 + L, 4096)
with L = ``max_sequence_length``, ``pooled_projections`` (B, 2048)); the VAE decodes latents
(``latents / scaling_factor + shift_factor``). The schedule is `FlowSchedule` with the shift of the
folder's scheduler config (3.0 for all three); the transformer's timestep is ``1000 s``.

Memory and time per GPU. Measured (November 2026) through this class and `DPDMD` with random
weights of the real SD3.5-M shape (text encoders tiny, so their memory is not in these figures),
1024 px, batch 4, weights_dtype bf16, ``mixed_precision="bf16"``, ``gradient_checkpointing=True``,
torch 2.11, diffusers 0.42.1, the optimiser `DPDMD` builds (torch AdamW, default foreach):

=====================  =========  ==========  ==========  ==========  =========  ===========
train_mode (SD3.5-M)   trainable  GiB built   GiB steady  GiB peak    fake upd.  student upd.
=====================  =========  ==========  ==========  ==========  =========  ===========
lora, rank 64 (H100)   47.8 M     14.2        15.3        22.2        1.62 s     3.64 s
full (H200)            2.24 B     23.0        73.2        84.1        1.48 s     3.43 s
full (H100)            2.24 B     23.1        out of memory at batch 1 and 4 (76.9 GiB reached)
=====================  =========  ==========  ==========  ==========  =========  ===========

(Since then `DPDMD` uses fused AdamW on CUDA: full fine-tuning measured 72.4 GiB on an H100 through
``bench/gpu_step.py``, 47.5 GiB with ``optimizer: adamw8bit``, 39.0 GiB with ``adamw_offload``;
bench/README_gpu.md; the H100 row's "out of memory" came from the benchmark's FLOP counter and the
foreach AdamW's temporaries, not from training.) ("built": the three networks; "steady": with
AdamW states; the teacher anchor at K = 5 took a further 1.7-1.8 s a student update.) So: LoRA fits
one 80 GB GPU with room for larger batches; full fine-tuning, the reference's mode, fits one 80 GB
H100 with fused AdamW, and a multi-worker trial shards it over its GPUs with FSDP2
(`dpdmd.sharding`), as the reference shards it over 8. The arithmetic behind it: full holds fp32
weights, gradients and two AdamW moments, 16 bytes a parameter, for the student and the fake score
(2 x 2.24 B x 16 B = 72 GB = 67 GiB) plus the bf16 teacher (4.2 GiB). Estimates, not measured:
SD3-M (2.03 B; LoRA 37.6 M) a little below SD3.5-M; SD3.5-L (8.06 B; LoRA 94.3 M) ~258 GB of
states for full (sharding only) and ~48 GB of frozen bf16 weights for LoRA plus activations. The real
text encoders (T5-XXL 4.8 B + CLIP-L/G 0.8 B, ~11 GB in bf16) sit on the GPU only while prompts
are encoded: the trainer frees them (`release_text_encoders`) before training, and the disk cache spares later runs them.
Without gradient checkpointing the student's backward keeps the activations of three transformer
calls (steps 2..4): one forward+backward alone peaked at 53 GiB at this size (stack-notes.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..schedules import FlowSchedule
from .diffusers_backbone import DiffusersBackbone
from .base import Embeddings

SD3_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


class SD3Backbone(DiffusersBackbone):
    """An SD3 / SD3.5 backbone (flow). Registered as ``sd35m``, ``sd35l``, ``sd3m`` (see
    `dpdmd.backbones.registry_real` for what each name fixes).

    Args (keyword-only):
        variant: fixed by the registry name.
        path: a local diffusers `StableDiffusion3Pipeline` folder, or a hub id; None = the name's
            hub id (from the Hugging Face cache, or downloaded where a network exists).
        cfg_scale: teacher CFG weight w; None = the name's (sd35m: 3.5, the DP-DMD reference).
        teacher_steps, student_steps: Euler steps of the teacher (30) and the student (4).
        device: where the networks run.
        resolution: image side in pixels (1024); latents are (16, resolution / 8, resolution / 8)
            for the real VAE. Must be a multiple of 8 x the patch size (16 px).
        shift: the sigma shift of the grids; None = the folder's scheduler config (3.0).
        weights_dtype: "bf16" (default), "fp16" or "fp32": the frozen teacher, the text encoders,
            and the frozen bases of LoRA copies. Trainable weights are always fp32.
        train_mode: "full" (full fine-tuning, as the reference) or "lora".
        lora_rank, lora_alpha: LoRA rank (64) and alpha (None = the rank, scale 1).
        lora_target_modules: module names that get adapters; None = the joint attention's
            to_q, to_k, to_v, to_out.0, add_q_proj, add_k_proj, add_v_proj, to_add_out.
        gradient_checkpointing: recompute transformer blocks in the backward pass (needed at 1024 px).
        max_sequence_length: T5 tokens (256, the pipeline's default).
        embedding_cache: keep prompt embeddings on disk (`dpdmd.data.disk_cache`) across processes.
    """

    network_folder = "transformer"
    default_lora_targets = SD3_LORA_TARGETS

    def __init__(self, *, variant: str = "sd35m", path: str | None = None, cfg_scale: float | None = None,
                 teacher_steps: int = 30, student_steps: int = 4, device: str | torch.device = "cpu",
                 resolution: int = 1024, shift: float | None = None, weights_dtype: str = "bf16",
                 train_mode: str = "full", lora_rank: int = 64, lora_alpha: float | None = None,
                 lora_target_modules: Sequence[str] | None = None, gradient_checkpointing: bool = False,
                 max_sequence_length: int = 256, embedding_cache: bool = True):
        if not isinstance(max_sequence_length, int) or not 1 <= max_sequence_length <= 512:
            raise ValueError(f"backbone {variant!r}: max_sequence_length {max_sequence_length!r}: use 1..512 "
                             "(T5 tokens; the pipeline's default is 256)")
        if shift is not None and shift <= 0:
            raise ValueError(f"backbone {variant!r}: shift {shift!r}: use a positive number, or null for the "
                             "scheduler config's")
        self.max_sequence_length = max_sequence_length
        self._shift = shift
        super().__init__(variant=variant, path=path, cfg_scale=cfg_scale, teacher_steps=teacher_steps,
                         student_steps=student_steps, device=device, resolution=resolution,
                         weights_dtype=weights_dtype, train_mode=train_mode, lora_rank=lora_rank,
                         lora_alpha=lora_alpha, lora_target_modules=lora_target_modules,
                         gradient_checkpointing=gradient_checkpointing, embedding_cache=embedding_cache)

    @staticmethod
    def pipeline_class():
        from diffusers import StableDiffusion3Pipeline

        return StableDiffusion3Pipeline

    @staticmethod
    def network_class():
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel

    def _setup_network(self, *, teacher_steps: int, student_steps: int) -> None:
        scheduler = self.read_config("scheduler", "scheduler_config.json")
        if scheduler.get("_class_name") != "FlowMatchEulerDiscreteScheduler":
            raise ValueError(f"backbone {self.name!r}: the scheduler is {scheduler.get('_class_name')}, "
                             "not the FlowMatchEulerDiscreteScheduler of SD3 weights")
        shift = self._shift
        if shift is None:
            if scheduler.get("use_dynamic_shifting"):
                raise ValueError(f"backbone {self.name!r}: the scheduler shifts by resolution (use_dynamic_shifting); "
                                 "pass a fixed shift= (SD3 / SD3.5: 3.0)")
            shift = float(scheduler.get("shift", self.variant.shift))
        self.schedule = FlowSchedule(shift=shift, teacher_steps=teacher_steps, student_steps=student_steps)
        net = self.read_config("transformer")
        factor = self._vae_scale_factor()
        side = self._check_resolution(factor * net["patch_size"], f"VAE scale {factor} x patch {net['patch_size']}")
        max_side = net.get("pos_embed_max_size")
        if max_side is not None and side // net["patch_size"] > max_side:
            raise ValueError(f"backbone {self.name!r}: resolution {self.resolution} exceeds the transformer's "
                             f"position embedding ({max_side * net['patch_size'] * factor} px at most)")
        self.latent_shape = (net["in_channels"], side, side)

    def embedding_settings(self) -> dict:
        return {**super().embedding_settings(), "max_sequence_length": self.max_sequence_length}

    def _encode_text(self, pipe, prompts: list[str]) -> Embeddings:
        with torch.no_grad():
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompts, prompt_2=None, prompt_3=None, device=self.device,
                do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length)
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def predict(self, net: nn.Module, x: torch.Tensor, level, emb: Embeddings) -> torch.Tensor:
        """Velocity (float32) of the transformer at sigma ``level`` (timestep ``1000 s``)."""
        dtype = self.input_dtype(net)
        timestep = torch.full((x.shape[0],), self.schedule.net_timestep(level), device=x.device)
        out = net(hidden_states=x.to(dtype), timestep=timestep,
                  encoder_hidden_states=emb["encoder_hidden_states"].to(x.device, dtype),
                  pooled_projections=emb["pooled_projections"].to(x.device, dtype), return_dict=False)[0]
        return out.float()

    def _vae_input(self, latents: torch.Tensor, vae_config) -> torch.Tensor:
        return latents / vae_config.scaling_factor + (vae_config.shift_factor or 0.0)
