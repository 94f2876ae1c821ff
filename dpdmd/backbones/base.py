"""The one interface the losses, the training loop and the search talk to.

A backbone bundles what method.md calls the networks and schedules: the parameterisation and its
noise grids (a `FlowSchedule` or `EpsSchedule`), prompt encoding (conditional, and the empty
prompt for CFG), the frozen teacher and the student / fake-score copies initialised from it, the
CFG-guided teacher call, and decoding latents to images for evaluation. The built-in digits
backbones and the diffusers ones (SD3/SD3.5, SDXL) implement it; nothing else in the trainer
knows which is which.

Prompt embeddings are plain dicts of tensors whose first dimension is the batch (e.g.
``{"encoder_hidden_states": (B, L, D), "pooled_projections": (B, D)}``), so they can be cached,
concatenated for CFG, and moved between processes as numpy arrays.
"""

from __future__ import annotations

import copy
import itertools
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..schedules import EpsSchedule, FlowSchedule

Embeddings = dict[str, torch.Tensor]


def cat_embeddings(*parts: Embeddings) -> Embeddings:
    """Concatenate prompt embeddings along the batch dimension (keys must match)."""
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def repeat_embeddings(emb: Embeddings, n: int) -> Embeddings:
    """Repeat a batch-of-one embedding ``n`` times along the batch dimension."""
    return {key: value.expand(n, *value.shape[1:]) for key, value in emb.items()}


def meta_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` whose parameters and buffers are on the meta device (same shapes,
    dtypes, names and ``requires_grad``; no storage, no copy of the values)."""
    memo: dict = {}
    for tensor in itertools.chain(net.parameters(), net.buffers()):
        empty = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
    return copy.deepcopy(net, memo)  # deepcopy takes what ``memo`` holds for an object instead of copying it


class Backbone(ABC):
    """Base class of every backbone. Subclasses set the attributes below in ``__init__``.

    Attributes:
        name: the registry name, e.g. ``"digits-flow"`` or ``"sd35m"``.
        schedule: the parameterisation with its student / teacher / DMD grids.
        latent_shape: (C, H, W) of one latent.
        cfg_scale: the teacher's classifier-free guidance weight ``w``.
        default_lr: the learning rate this backbone is meant to train at when none is given.
        default_prompts: the training prompts used when the config names none.
        device: where the networks run.
        trainable_on_meta: `build_networks` builds the student and the fake score on the meta
            device (shapes, no storage). A sharded run sets it (`dpdmd.parallel.distributed.
            DistributedContext.prepare`) and `dpdmd.parallel.sharding` then materialises each rank's shards
            from the teacher, so no rank ever holds the whole fp32 networks.
    """

    name: str
    schedule: FlowSchedule | EpsSchedule
    latent_shape: tuple[int, int, int]
    cfg_scale: float
    default_lr: float
    default_prompts: tuple[str, ...]
    device: torch.device = torch.device("cpu")
    trainable_on_meta: bool = False
    network_folder: str = "transformer"  # the student's folder in a saved student, as in a pipeline

    # --- prompts ---
    @abstractmethod
    def validate_prompts(self, prompts: Sequence[str]) -> None:
        """Raise ValueError naming the first prompt this backbone cannot encode."""

    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> Embeddings:
        """Embeddings of ``prompts`` (batch first); ``""`` gives the unconditional embedding."""

    def release_text_encoders(self) -> None:
        """Free the text encoders once every prompt is encoded (a no-op for cheap encoders)."""

    # --- networks ---
    @abstractmethod
    def load_teacher(self) -> nn.Module:
        """The pretrained multi-step model (weights loaded, not yet frozen)."""

    @abstractmethod
    def predict(self, net: nn.Module, x: torch.Tensor, level, emb: Embeddings) -> torch.Tensor:
        """The network's raw output (flow: velocity; eps: noise) for states x (B, C, H, W) at
        ``level`` (a scalar, see `dpdmd.schedules`), conditioned on ``emb``."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H', W') in [0, 1] from latents, for evaluation and PNG grids."""

    def build_networks(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(teacher, student, fake score): the teacher frozen, the others copies of it that train."""
        teacher = self.load_teacher().to(self.device)
        student = self.make_trainable(self.copy_teacher(teacher))
        fake = self.make_trainable(self.copy_teacher(teacher))
        teacher.requires_grad_(False).eval()
        return teacher, student, fake

    def copy_teacher(self, teacher: nn.Module) -> nn.Module:
        """The copy of the teacher that becomes the student or the fake score: a real one, or its
        shapes on the meta device if ``trainable_on_meta`` (its weights are the teacher's, loaded
        into each rank's shards by `dpdmd.parallel.sharding`)."""
        return meta_copy(teacher) if self.trainable_on_meta else copy.deepcopy(teacher)

    @property
    def trains_teacher_copies(self) -> bool:
        """Whether the student and the fake score are the teacher's weights (in the trained dtype)
        and nothing else: full fine-tuning (True here; LoRA backbones add random adapters)."""
        return True

    def make_trainable(self, net: nn.Module) -> nn.Module:
        """Prepare a teacher copy for training (full fine-tuning here; LoRA backbones override)."""
        return net.requires_grad_(True).train()

    # --- the CFG-guided teacher ---
    def guided(self, net: nn.Module, x: torch.Tensor, level, cond: Embeddings, uncond: Embeddings,
               scale: float | None = None) -> torch.Tensor:
        """``T_uncond + w (T_cond - T_uncond)``, both branches in one batch of 2B."""
        w = self.cfg_scale if scale is None else scale
        out = self.predict(net, torch.cat([x, x]), level, cat_embeddings(cond, uncond))
        out_cond, out_uncond = out.chunk(2)
        return out_uncond + w * (out_cond - out_uncond)

    def unconditional(self, batch_size: int) -> Embeddings:
        """The empty-prompt embedding repeated to ``batch_size``."""
        return repeat_embeddings(self.encode_prompts([""]), batch_size)

    # --- the trained student, as its users load it (`dpdmd.student`) ---
    @property
    def serving_dtype(self) -> torch.dtype:
        """The dtype a saved student's weights are stored in (the dtype it is served in)."""
        return torch.float32

    def save_student(self, student: nn.Module, folder: Path) -> dict:
        """Write the trained ``student`` into ``folder`` the way this backbone's users load it and
        return what the student's manifest records about the format. Here: a diffusers model folder
        ``folder/<network_folder>`` (``config.json`` + ``diffusion_pytorch_model.safetensors`` in
        `serving_dtype`, loadable with the network class's ``from_pretrained``) and
        ``folder/scheduler`` (the scheduler whose grid the student was trained on)."""
        save_diffusers_model(student, Path(folder) / self.network_folder, self.serving_dtype)
        self.schedule.student_scheduler().save_pretrained(Path(folder) / "scheduler")
        return {"format": "diffusers-model", "network_folder": self.network_folder,
                "dtype": str(self.serving_dtype).removeprefix("torch.")}

    def load_student(self, folder: Path) -> nn.Module:
        """The student network `save_student` wrote into ``folder``, on ``device``, frozen."""
        return load_diffusers_model(Path(folder) / self.network_folder).to(self.device).requires_grad_(False).eval()


def save_diffusers_model(net: nn.Module, folder: Path, dtype: torch.dtype) -> None:
    """``net`` (a diffusers model, possibly wrapped by ``torch.compile``) as ``from_pretrained``
    reads it, its weights cast to ``dtype`` one tensor at a time on the CPU (no second copy of the
    network on its device)."""
    from safetensors.torch import save_file

    net = getattr(net, "_orig_mod", net)  # a whole-model torch.compile wrapper
    folder.mkdir(parents=True, exist_ok=True)
    net.save_config(folder)
    weights = {name: tensor.detach().to("cpu", dtype).contiguous() for name, tensor in net.state_dict().items()}
    save_file(weights, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


def load_diffusers_model(folder: Path) -> nn.Module:
    """The diffusers model saved in ``folder``, its class read from its ``config.json``."""
    import diffusers

    name = json.loads((folder / "config.json").read_text()).get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if cls is None:
        raise ValueError(f"{folder / 'config.json'}: _class_name {name!r} is not a diffusers model class")
    return cls.from_pretrained(folder)
