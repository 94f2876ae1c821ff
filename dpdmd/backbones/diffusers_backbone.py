"""What the diffusers backbones (`sd3`, `sdxl`) share: weights, prompts, training modes, decoding.

`DiffusersBackbone` implements the `Backbone` interface around one diffusers pipeline folder;
subclasses say which network it is and how to call it. Components load lazily, each when first
needed: the denoiser in `load_teacher`, the text encoders on the first prompt that is not cached,
the VAE on the first `decode`. Constructing a backbone reads JSON configs only.

Prompt embeddings (method.md: the conditional prompt, and ``""`` for CFG) are computed by the
pipeline's own ``encode_prompt`` and written to disk, one safetensors file per (weights identity,
prompt, encoder settings; key: `dpdmd.data.cache_keys.text_key`) under the `dpdmd.data.disk_cache` folder, so
later runs and processes never load the text encoders at all (SD3.5 at
``max_sequence_length=256``: 333 x 4096 bf16, ~2.7 MB a prompt). Holding them in memory is not
the backbone's job: the process's one in-memory prompt cache is the trainer's
`dpdmd.data.prompt_cache.PromptEmbeddingCache`.

`release_text_encoders()` drops the text encoders (T5-XXL alone is 4.8 B parameters, 9.5 GB in
bf16) and frees their GPU memory: the trainer encodes every training and evaluation prompt (and
``""``) first, then releases them. A prompt seen only later still works: the encoders are loaded
again (with a warning).

Training modes (``train_mode``): "full" fine-tunes deep copies of the teacher held in float32
(fp32 master weights; `DPDMD`'s ``mixed_precision="bf16"`` autocast gives bf16 compute) while the
frozen teacher stays in ``weights_dtype``; "lora" gives each of the student and the fake score its
own deep copy of the teacher in ``weights_dtype`` with peft LoRA adapters (float32) on
``lora_target_modules``, and only the adapters train. Memory per mode: see `sd3` and `sdxl`.
"""

from __future__ import annotations

import gc
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..data.disk_cache import cache_dir, cached_file, config_hash
from ..data.cache_keys import text_key
from .base import Backbone, Embeddings
from .registry_real import LAYOUTS, VARIANTS, Variant, check_weights_dir

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
TRAIN_MODES = ("full", "lora")
DECODE_CHUNK = 4  # latents per VAE call: a 1024 px fp32 decode of 16 images at once needs tens of GB
EMBEDDING_CACHE_VERSION = 1  # bump when the stored embedding format changes
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # the file name diffusers' save_lora_weights writes


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """``from_pretrained``'s dtype argument: ``dtype`` in newer diffusers (which deprecate
    ``torch_dtype`` and define ``_resolve_dtype`` for it), ``torch_dtype`` before."""
    import diffusers.utils

    return {"dtype" if hasattr(diffusers.utils, "_resolve_dtype") else "torch_dtype": dtype}

# Generic prompts for runs whose config names none (real runs should pass a prompt file's lines).
DEFAULT_PROMPTS = (
    "a photo of a dog", "a red sports car on a mountain road at sunset", "a bowl of fruit on a wooden table",
    "a portrait of an old fisherman, dramatic light", "a cozy cabin in a snowy forest",
    "an astronaut riding a horse", "a watercolor painting of a city street in the rain",
    "a lighthouse on a cliff above stormy sea",
)


def weights_identity(root: Path | str) -> str:
    """A string naming the weights: the resolved folder plus a hash of its configs and of its weight
    files' names, sizes and modification times (a hub id that is not cached: the id itself)."""
    if isinstance(root, str):
        return root
    parts = {"model_index.json": (root / "model_index.json").read_text()}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(sub.iterdir()):
            if f.name.endswith(".json"):
                parts[f"{sub.name}/{f.name}"] = f.read_text()
            elif f.is_file():
                st = f.stat()
                parts[f"{sub.name}/{f.name}"] = [st.st_size, st.st_mtime_ns]
    return f"{root.resolve()}#{config_hash(parts)}"


class DiffusersBackbone(Backbone):
    """The shared part of `SD3Backbone` and `SDXLBackbone` (see their docstrings for the options).

    Subclasses set ``network_folder``, ``network_class``, ``pipeline_class``,
    ``default_lora_targets`` and implement `predict`, `_encode_text`, `_vae_input` and
    `_setup_network` (schedule and latent shape from the configs).
    """

    network_folder: str
    default_lora_targets: tuple[str, ...]
    default_evaluator = "real"  # the name `dpdmd.evaluation.make_real_evaluator` gets for eval.evaluator "auto"
    default_prompts = DEFAULT_PROMPTS

    def __init__(self, *, variant: str, path: str | None, cfg_scale: float | None, teacher_steps: int,
                 student_steps: int, device: str | torch.device, resolution: int, weights_dtype: str,
                 train_mode: str, lora_rank: int, lora_alpha: float | None, lora_target_modules: Sequence[str] | None,
                 gradient_checkpointing: bool, embedding_cache: bool):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
        self.variant: Variant = VARIANTS[variant]
        self.name = variant
        problems = []
        if train_mode not in TRAIN_MODES:
            problems.append(f"train_mode {train_mode!r}: use 'full' or 'lora'")
        if weights_dtype not in DTYPES:
            problems.append(f"weights_dtype {weights_dtype!r}: use one of {', '.join(DTYPES)}")
        if not isinstance(resolution, int) or resolution <= 0:
            problems.append(f"resolution {resolution!r}: use a positive number of pixels, e.g. 1024")
        if not isinstance(lora_rank, int) or lora_rank < 1:
            problems.append(f"lora_rank {lora_rank!r}: use an integer >= 1, e.g. 64")
        if lora_alpha is not None and lora_alpha <= 0:
            problems.append(f"lora_alpha {lora_alpha!r}: use a positive number, or null for lora_rank")
        if lora_target_modules is not None and (isinstance(lora_target_modules, str) or not lora_target_modules):
            problems.append(f"lora_target_modules {lora_target_modules!r}: use a non-empty list of module names, "
                            f"e.g. {list(self.default_lora_targets)}")
        if problems:
            raise ValueError(f"backbone {variant!r}: " + "; ".join(problems))
        self.path = str(path) if path is not None else self.variant.hub_id
        self.root = check_weights_dir(self.path, variant)  # local folder, or the hub id to download
        # what from_pretrained reads: the resolved folder (a trial may run in another working
        # directory; a cached hub snapshot loads with no network), else the hub id to download
        self.source = str(self.root) if isinstance(self.root, Path) else self.path
        self.identity = weights_identity(self.root)
        self.cfg_scale = float(cfg_scale if cfg_scale is not None else self.variant.cfg_scale)
        self.device = torch.device(device)
        self.resolution = resolution
        self.weights_dtype = DTYPES[weights_dtype]
        self.train_mode = train_mode
        self.lora_rank = lora_rank
        self.lora_alpha = float(lora_alpha) if lora_alpha is not None else float(lora_rank)
        self.lora_target_modules = tuple(lora_target_modules or self.default_lora_targets)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.embedding_cache = bool(embedding_cache)
        # LoRA moves slower per step than full fine-tuning: 10x the reference's 1e-5 (a common
        # starting point, not tuned here). TrainConfig.lr overrides it.
        self.default_lr = 1e-5 if train_mode == "full" else 1e-4
        self._text_pipe = None
        self._vae = None
        self.text_encoder_loads = 0  # how often the text encoders were loaded (tests, logs)
        self.prompts_encoded = 0  # prompts that went through the text encoders in this process
        self._setup_network(teacher_steps=teacher_steps, student_steps=student_steps)

    # --- configs of the folder ----------------------------------------------------------------
    def read_config(self, sub: str, filename: str = "config.json") -> dict:
        """A component's JSON config (``sub=""``: the folder's top level), read from the folder or
        fetched alone from the hub."""
        if isinstance(self.root, Path):
            return json.loads((self.root / sub / filename).read_text())
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(self.path, filename, subfolder=sub or None)).read_text())

    def _vae_scale_factor(self) -> int:
        return 2 ** (len(self.read_config("vae")["block_out_channels"]) - 1)

    def _check_resolution(self, multiple: int, why: str) -> int:
        """Latent side length; the resolution must be a multiple of ``multiple`` pixels."""
        if self.resolution % multiple:
            raise ValueError(f"backbone {self.name!r}: resolution {self.resolution} is not a multiple of {multiple} "
                             f"({why}); use e.g. {max(multiple, self.resolution // multiple * multiple)}")
        return self.resolution // self._vae_scale_factor()

    # --- prompts -------------------------------------------------------------------------------
    def validate_prompts(self, prompts: Sequence[str]) -> None:
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise ValueError(f"prompt {prompt!r} is not a string")

    def embedding_settings(self) -> dict:
        """Everything besides the weights and the prompt that changes an embedding."""
        return {"dtype": str(self.weights_dtype), "version": EMBEDDING_CACHE_VERSION}

    def _disk_key(self, prompt: str) -> dict:
        return {**text_key(self), "prompt": prompt}

    def _disk_path(self, prompt: str) -> Path:
        # the name `dpdmd.data.disk_cache.cached_file` gives the same key (it writes the file; we only read)
        return cache_dir() / f"prompt-{self.variant.kind}-{config_hash(self._disk_key(prompt))}.safetensors"

    def encode_prompts(self, prompts: Sequence[str]) -> Embeddings:
        """Embeddings of ``prompts`` (batch first, on ``device``): each distinct prompt read from
        the disk cache, else encoded by the text encoders (and written there). Nothing is kept in
        memory: callers that repeat prompts go through a `PromptEmbeddingCache`."""
        self.validate_prompts(prompts)
        if not prompts:
            raise ValueError("encode_prompts needs at least one prompt ('' for the unconditional embedding)")
        rows: dict[str, Embeddings] = {}  # prompt -> batch-one embeddings on the CPU
        if self.embedding_cache:
            for prompt in dict.fromkeys(prompts):
                path = self._disk_path(prompt)
                if path.exists():
                    rows[prompt] = load_file(str(path))
        missing = [p for p in dict.fromkeys(prompts) if p not in rows]
        if missing:
            batch = self._encode_text(self._text_pipeline(), missing)
            self.prompts_encoded += len(missing)
            for i, prompt in enumerate(missing):
                row = {k: v[i:i + 1].detach().to("cpu").contiguous() for k, v in batch.items()}
                rows[prompt] = row
                if self.embedding_cache:
                    cached_file(f"prompt-{self.variant.kind}", self._disk_key(prompt),
                                lambda tmp, row=row: save_file(row, str(tmp)), suffix=".safetensors")
        out = {k: torch.cat([rows[p][k] for p in prompts]).to(self.device) for k in rows[prompts[0]]}
        return self._add_conditioning(out)

    def _add_conditioning(self, emb: Embeddings) -> Embeddings:
        """Prompt-independent conditioning added to every batch (SDXL: the size ids)."""
        return emb

    def release_text_encoders(self) -> None:
        """Drop the text encoders and free their (GPU) memory; the disk cache stays."""
        if self._text_pipe is None:
            return
        self._text_pipe = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _text_pipeline(self):
        """The pipeline with its tokenizers and text encoders only (no denoiser, no VAE), loaded lazily."""
        if self._text_pipe is None:
            if self.text_encoder_loads:
                warnings.warn(f"backbone {self.name!r}: loading the text encoders again for prompts not encoded "
                              "before release_text_encoders(); encode every prompt first",
                              stacklevel=3)
            pipeline_class = self.pipeline_class()
            self._text_pipe = pipeline_class.from_pretrained(
                self.source, **{self.network_folder: None, "vae": None}, **_dtype_kwarg(self.weights_dtype)
            ).to(self.device)
            self.text_encoder_loads += 1
        return self._text_pipe

    # --- networks ------------------------------------------------------------------------------
    def load_teacher(self) -> nn.Module:
        return self.network_class().from_pretrained(self.source, subfolder=self.network_folder,
                                                    **_dtype_kwarg(self.weights_dtype))

    def build_networks(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(teacher, student, fake): the frozen teacher in ``weights_dtype``; the others per ``train_mode``."""
        teacher = self.load_teacher().to(self.device).requires_grad_(False).eval()
        student = self.make_trainable(self.copy_teacher(teacher))
        fake = self.make_trainable(self.copy_teacher(teacher))
        return teacher, student, fake

    @property
    def trains_teacher_copies(self) -> bool:
        return self.train_mode == "full"

    def make_trainable(self, net: nn.Module) -> nn.Module:
        """Full: the whole copy in float32, trainable. LoRA: the copy frozen in ``weights_dtype``,
        float32 adapters on ``lora_target_modules`` trainable (a `peft.PeftModel`; its
        ``save_pretrained`` writes the adapter only). Gradient checkpointing when asked."""
        if self.gradient_checkpointing:
            net.enable_gradient_checkpointing()
        if self.train_mode == "full":
            if any(p.dtype != torch.float32 for p in net.parameters()):
                net.to(torch.float32)  # fp32 master weights
            return net.requires_grad_(True).train()
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha, target_modules=list(self.lora_target_modules),
                            init_lora_weights=True)  # B = 0: the student starts as the teacher
        net.requires_grad_(False)
        try:
            lora = get_peft_model(net, config)  # autocast_adapter_dtype: the adapters are float32
        except ValueError as err:
            raise ValueError(f"backbone {self.name!r}: lora_target_modules {list(self.lora_target_modules)} do not fit "
                             f"the {self.network_folder}: {err}") from None
        return lora.train()

    @staticmethod
    def input_dtype(net: nn.Module) -> torch.dtype:
        """The dtype inputs are cast to: the network's (LoRA: the frozen base's) first parameter's."""
        return next(net.parameters()).dtype

    # --- the trained student, as its users load it ---------------------------------------------
    @property
    def serving_dtype(self) -> torch.dtype:
        """Full fine-tuning's student is stored in ``weights_dtype``, the dtype the teacher (and so
        the pipeline it joins) runs in; a LoRA adapter in float32, as trained (it is small)."""
        return self.weights_dtype if self.train_mode == "full" else torch.float32

    def save_student(self, student: nn.Module, folder: Path) -> dict:
        """Full: the network folder (`Backbone.save_student`). LoRA: the adapter alone, in the
        diffusers LoRA format (``pytorch_lora_weights.safetensors``, its rank, alpha and targets in
        the file's metadata), which the pipeline's ``load_lora_weights(folder)`` reads. Both with
        the student's scheduler in ``folder/scheduler``."""
        if self.train_mode == "full":
            return {**super().save_student(student, folder), "hub_id": self.variant.hub_id}
        from peft import get_peft_model_state_dict

        folder = Path(folder)
        layers = {name.removeprefix("base_model.model."): tensor.detach().to("cpu", self.serving_dtype).contiguous()
                  for name, tensor in get_peft_model_state_dict(student).items()}
        metadata = {"r": self.lora_rank, "lora_alpha": self.lora_alpha, "target_modules": list(self.lora_target_modules)}
        self.pipeline_class().save_lora_weights(folder, weight_name=LORA_WEIGHTS, **{f"{self.network_folder}_lora_layers": layers,
                                                           f"{self.network_folder}_lora_adapter_metadata": metadata})
        self.schedule.student_scheduler().save_pretrained(folder / "scheduler")
        return {"format": "diffusers-lora", "network_folder": self.network_folder, "hub_id": self.variant.hub_id,
                "dtype": str(self.serving_dtype).removeprefix("torch."), "lora": metadata}

    def load_student(self, folder: Path) -> nn.Module:
        """Full: the saved network. LoRA: the teacher with the saved adapter loaded into it, as the
        pipeline's ``load_lora_weights`` does (unfused)."""
        if self.train_mode == "full":
            return super().load_student(folder)
        net = self.load_teacher()
        net.load_lora_adapter(str(folder), prefix=self.network_folder, weight_name=LORA_WEIGHTS)
        return net.to(self.device).requires_grad_(False).eval()

    # --- decoding ------------------------------------------------------------------------------
    def _load_vae(self):
        if self._vae is None:
            from diffusers import AutoencoderKL

            # float32: the SDXL VAE overflows in fp16, and decoding is a small part of the cost
            self._vae = AutoencoderKL.from_pretrained(self.source, subfolder="vae", **_dtype_kwarg(torch.float32))
            self._vae.to(self.device).requires_grad_(False).eval()
        return self._vae

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, resolution, resolution) in [0, 1], on ``device``, decoded in float32."""
        vae = self._load_vae()
        images = []
        for chunk in latents.split(DECODE_CHUNK):
            image = vae.decode(self._vae_input(chunk.to(self.device, torch.float32), vae.config)).sample
            images.append(((image.float() + 1.0) / 2.0).clamp(0.0, 1.0))
        return torch.cat(images)

    # --- for subclasses ------------------------------------------------------------------------
    def _setup_network(self, *, teacher_steps: int, student_steps: int) -> None:
        raise NotImplementedError

    def _encode_text(self, pipe, prompts: list[str]) -> Embeddings:
        raise NotImplementedError

    def _vae_input(self, latents: torch.Tensor, vae_config) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def pipeline_class():
        raise NotImplementedError

    @staticmethod
    def network_class():
        raise NotImplementedError


__all__ = ["DEFAULT_PROMPTS", "DTYPES", "DiffusersBackbone", "LAYOUTS", "TRAIN_MODES", "weights_identity"]
