"""The Ray Tune trainable: one DP-DMD trial, a thin wrapper around `dpdmd.train`.

``run_trial(config)`` turns the sampled parameters into a `dpdmd.TrainConfig` (through the
space), plugs the shared anchor and prompt caches into the trainer, and at every evaluation
reports diversity, quality, the combined objective, the losses, the student updates so far and
its cache hits and misses with ``tune.report(..., checkpoint=...)``. A restarted or resumed
trial continues from ``tune.get_checkpoint()``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from ray import tune

from dpdmd._cache import config_hash
from dpdmd.prompt_cache import PromptEmbeddingCache
from dpdmd.trainer import train

from .anchor_cache import CachedAnchors, SharedCache, cached_prompt_lookup, find_store
from .objective import combined_objective
from .space import SearchSpace


def sampled_params(config: dict) -> dict:
    """The searched values of a trial: grid trials carry them under "trial", samplers flat."""
    return dict(config["trial"]) if "trial" in config else dict(config)


def anchor_identity(train_config, backbone) -> str:
    """Everything a teacher anchor depends on except the iteration and K."""
    return config_hash({"backbone": train_config.backbone, "options": train_config.backbone_options,
                        "weights": getattr(backbone, "identity", None), "teacher_steps": train_config.teacher_steps,
                        "cfg_scale": backbone.cfg_scale, "seed": train_config.seed,
                        "batch_size": train_config.batch_size, "prompts": train_config.prompts,
                        "latent_shape": list(backbone.latent_shape)})


def run_trial(config: dict, *, space: SearchSpace, cache: dict) -> None:
    """Ray Tune function trainable. ``cache`` = {"enabled", "spill_uri", "ks"}."""
    params = sampled_params(config)
    train_config = space.train_config(params)
    cpus = space.backbones[train_config.backbone].resources.get("cpu", 1)
    torch.set_num_threads(max(1, int(cpus)))  # trials share the cores: never oversubscribe them
    out_dir = Path(tune.get_context().get_trial_dir() or os.getcwd()) / "run"

    anchors = embeddings = None
    if cache["enabled"]:
        store = find_store(cache["spill_uri"])
        anchor_cache, prompt_cache = SharedCache(store), SharedCache(store)

        def anchors(backbone, teacher, cfg):
            return CachedAnchors(anchor_cache, backbone, teacher, cfg.anchor_k, cache["ks"],
                                 anchor_identity(cfg, backbone))

        def embeddings(backbone):
            identity = config_hash({"backbone": train_config.backbone, "options": train_config.backbone_options,
                                    "weights": getattr(backbone, "identity", None)})
            return PromptEmbeddingCache(backbone, lookup=cached_prompt_lookup(prompt_cache, backbone, identity))

    def report(metrics: dict, checkpoint_dir) -> None:
        reference = json.loads((out_dir / "teacher_metrics.json").read_text())
        metrics = dict(metrics, backbone=train_config.backbone)
        metrics["teacher_diversity"], metrics["teacher_quality"] = reference["diversity"], reference["quality"]
        metrics["objective"] = combined_objective(
            metrics["diversity"], metrics["quality"], teacher_diversity=reference["diversity"],
            teacher_quality=reference["quality"], diversity_weight=space.objective.diversity_weight)
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        resume_from = Path(checkpoint.to_directory())
    train(train_config, report=report, out_dir=out_dir, resume_from=resume_from, anchors=anchors,
          embeddings=embeddings, progress=False)
