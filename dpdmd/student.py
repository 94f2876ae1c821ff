"""A trained DP-DMD student, as its users load and sample it.

A *saved student* is a folder: the network in the format its backbone's users load
(`Backbone.save_student`: a diffusers model folder such as ``transformer/``, or a LoRA adapter,
``pytorch_lora_weights.safetensors``; and ``scheduler/``, the scheduler whose grid the student
was trained on) and ``dpdmd_student.json``, its manifest (the backbone, the run's `TrainConfig`,
the format and dtype, and which report of the run it is). The trainer writes one at the end of a
run (``--out/student``); a search at each report that is a trial's new best (the kept checkpoint's
``student/``); ``tune.export`` copies one out of a search with a model card.

    from dpdmd import load_student
    student = load_student("exports/quickstart-digits-flow")     # or a run dir, or a checkpoint
    images = student.sample(["seven", "three"], seeds=4)        # (2, 4, C, H, W) in [0, 1]

Seed ``n`` of `Student.sample` draws its initial noise as ``torch.randn(latent_shape,
generator=torch.Generator().manual_seed(n))``, which is also what a diffusers pipeline called with
``generator=torch.Generator().manual_seed(n)`` draws for one image in float32: the exported
student gives the same images in diffusers' own pipeline (tests/dpdmd/test_student.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .backbones.base import Backbone
from .config import ConfigError, TrainConfig, from_mapping

MANIFEST = "dpdmd_student.json"
STUDENT_DIR = "student"  # the saved student's folder inside a run directory or a kept checkpoint
MANIFEST_VERSION = 1


def save_student(folder: str | Path, *, backbone: Backbone, network: nn.Module, config: TrainConfig,
                 **record) -> Path:
    """Write ``network`` (the trained student of a run of ``config`` on ``backbone``) and its
    manifest into ``folder``; ``record`` adds to the manifest (e.g. ``student_updates``,
    ``iteration``, the scores of the report it is). Returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = backbone.save_student(network, folder)
    manifest = {"dpdmd_student": MANIFEST_VERSION, "backbone": config.backbone, **layout,
                "config": config.to_dict(), **record}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    return folder


def find_student(path: str | Path) -> Path:
    """The saved student at ``path``: the folder itself, or its ``student/`` (a run directory of
    ``dpdmd.train --out``, a search's kept checkpoint). A ValueError says what was looked for."""
    path = Path(path)
    for folder in (path, path / STUDENT_DIR):
        if (folder / MANIFEST).is_file():
            return folder
    if not path.exists():
        raise ValueError(f"{path} does not exist; give an exported student folder (python -m tune.export), a "
                         "search's checkpoint folder or a dpdmd.train --out directory")
    raise ValueError(f"{path} holds no saved student: neither {path / MANIFEST} nor {path / STUDENT_DIR / MANIFEST} "
                     "exists. Export one from a search with `python -m tune.export RUN_DIR --recommended --out DIR`; "
                     "a dpdmd.train --out directory has one once the run finished")


def read_manifest(path: str | Path) -> dict:
    """The manifest of the saved student at ``path`` (`find_student`)."""
    file = find_student(path) / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{file} cannot be read: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("dpdmd_student") != MANIFEST_VERSION:
        raise ValueError(f"{file} is not a dpdmd student manifest of version {MANIFEST_VERSION}")
    return manifest


@dataclass
class Student:
    """A loaded student: its folder, manifest, `TrainConfig`, built backbone and network (and its
    teacher, loaded on the first `teacher_sample` and kept)."""

    folder: Path
    manifest: dict
    config: TrainConfig
    backbone: Backbone
    network: nn.Module
    _teacher: nn.Module | None = field(default=None, init=False, repr=False, compare=False)

    def sample(self, prompts: Sequence[str], seeds: int) -> torch.Tensor:
        """Images (P, N, C, H, W) in [0, 1] on the CPU: the student's few steps from seeds 0..N-1
        for each prompt, no classifier-free guidance (the student was distilled from the guided
        teacher)."""
        from .data.prompt_cache import PromptEmbeddingCache
        from .evaluation import generate, student_sampler

        return generate(self.backbone, student_sampler(self.backbone, self.network), list(prompts), seeds,
                        PromptEmbeddingCache(self.backbone))

    @property
    def teacher(self) -> nn.Module:
        """The backbone's teacher on its device, frozen: loaded on first use and kept, so that
        `teacher_sample` called once per chunk of prompts (the final protocol) loads it once."""
        if self._teacher is None:
            self._teacher = self.backbone.load_teacher().to(self.backbone.device).requires_grad_(False).eval()
        return self._teacher

    def drop_teacher(self) -> None:
        """Free the kept teacher (the next `teacher_sample` loads it again)."""
        self._teacher = None

    def teacher_sample(self, prompts: Sequence[str], seeds: int) -> torch.Tensor:
        """The teacher's images on the same seeds (its ``teacher_steps`` guided steps), as `sample`."""
        from .data.prompt_cache import PromptEmbeddingCache
        from .evaluation import generate, teacher_sampler

        embed = PromptEmbeddingCache(self.backbone)
        return generate(self.backbone, teacher_sampler(self.backbone, self.teacher, embed), list(prompts), seeds, embed)


def load_student(path: str | Path, *, device: str | None = None, weights: str | None = None) -> Student:
    """Load the saved student at ``path`` (an exported folder, a search's kept checkpoint, a
    ``dpdmd.train --out`` directory).

    Args:
        device: where it runs ("cpu", "cuda", ...); None: the run's own setting.
        weights: the teacher's diffusers folder on this machine, when it is not where the run had it
            (the backbones sd35m, sd3m, sd35l, sdxl: a LoRA student loads its adapter into it, and
            every student encodes prompts and decodes with its text encoders and VAE).
    """
    folder = find_student(path)
    manifest = read_manifest(folder)
    data = dict(manifest["config"])
    if device is not None:
        data["device"] = device
    if weights is not None:
        data["backbone_options"] = {**data.get("backbone_options", {}), "path": str(weights)}
    try:
        config = from_mapping(data, source=str(folder / MANIFEST))
    except ConfigError as err:
        raise ValueError(str(err)) from None
    from .training.build import build_backbone

    backbone = build_backbone(config)
    return Student(folder, manifest, config, backbone, backbone.load_student(folder))
