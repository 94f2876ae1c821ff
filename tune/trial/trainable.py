"""The Ray Tune trainable: one DP-DMD trial, a thin wrapper around `dpdmd.train`.

``run_trial(config)`` turns the trial's overrides into a `dpdmd.TrainConfig` (through the
space), plugs the shared anchor and prompt caches into the trainer, and at every evaluation
reports diversity, quality, the combined objective, the losses, the student updates so far and
its cache hits and misses with ``tune.report(..., checkpoint=...)``. A restarted or resumed
trial continues from ``tune.get_checkpoint()``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from ray import tune

from dpdmd.data.disk_cache import config_hash
from dpdmd.anchors import shared_anchors
from dpdmd.data.cache_keys import cache_key
from dpdmd.data.prompt_cache import PromptEmbeddingCache
from dpdmd.training.loop import train

from .objective import objective_metrics, shown_objective
from .anchor_store import SharedCache, cached_prompt_lookup, get_or_create_store
from ..space.schema import SearchSpace


def trial_workspace() -> Path:
    """Where the trainer writes while the trial runs: a local folder *outside* Ray's trial
    directory, which Ray uploads while it changes (a file renamed mid-upload is an error). What
    must last goes into each reported checkpoint (`persistable_checkpoint`)."""
    path = Path(tempfile.gettempdir()) / "dpdmd-trials" / tune.get_context().get_trial_id()
    path.mkdir(parents=True, exist_ok=True)
    return path


def with_objective(metrics: dict, out_dir: Path, train_config, space: SearchSpace) -> dict:
    """The trainer's metrics plus the backbone, the teacher's reference scores, the
    teacher-normalised ``diversity_score`` / ``quality_score``, J (``objective``) and the J its
    checkpoint is kept by (``shown_objective``: -inf before ``objective.min_student_updates``)."""
    reference = json.loads((out_dir / "teacher_metrics.json").read_text())
    metrics = dict(metrics, backbone=train_config.backbone)
    metrics["teacher_diversity"], metrics["teacher_quality"] = reference["diversity"], reference["quality"]
    metrics.update(objective_metrics(
        metrics["diversity"], metrics["quality"], teacher_diversity=reference["diversity"],
        teacher_quality=reference["quality"], diversity_weight=space.objective.diversity_weight))
    metrics["shown_objective"] = float(shown_objective(metrics["objective"], metrics["student_updates"],
                                                       min_student_updates=space.objective.min_student_updates))
    return metrics


def persistable_checkpoint(checkpoint_dir, out_dir: Path) -> tune.Checkpoint | None:
    """The trainer's checkpoint, with the latest sample grids, the teacher's and metrics.csv beside
    it, so each trial's PNGs reach the experiment's storage (local or S3) with its checkpoint."""
    if checkpoint_dir is None:
        return None
    checkpoint_dir = Path(checkpoint_dir)
    for name in ("samples/student_latest.png", "samples/teacher.png", "metrics.csv", "teacher_metrics.json"):
        if (out_dir / name).exists():
            shutil.copyfile(out_dir / name, checkpoint_dir / Path(name).name)
    return tune.Checkpoint.from_directory(str(checkpoint_dir))


def cache_settings(space: SearchSpace, spill_uri: str | None, *, enabled: bool) -> dict:
    """What every trial needs to reach the search's shared caches: {"enabled", "spill_uri", "ks"}.

    ``ks`` is every K of the space, read here from the space rather than learnt from the trials'
    requests: the first trial to miss an iteration computes all of them in one teacher pass, before
    any trial at another K has asked."""
    return {"enabled": enabled, "spill_uri": spill_uri, "ks": space.anchor_ks()}


def shared_caches(train_config, cache: dict, *, shard: tuple[int, int] | None = None):
    """The trainer's ``anchors`` and ``embeddings`` factories, reading the search's shared store
    (``cache``: `cache_settings`). ``shard`` = (rank, world_size) of a data-parallel worker."""
    # one view serves both: it counts nothing (the anchor provider counts its own hits and misses)
    shared = SharedCache(get_or_create_store(cache["spill_uri"]), cache["spill_uri"])  # found, or made again
    anchors = shared_anchors(shared, cache["ks"], shard=shard)

    def embeddings(backbone):
        identity = config_hash(cache_key("embedding", train_config, backbone))
        return PromptEmbeddingCache(backbone, lookup=cached_prompt_lookup(shared, backbone, identity))

    return anchors, embeddings


def run_trial(config: dict, *, space: SearchSpace, cache: dict) -> None:
    """Ray Tune function trainable of one trial (``config``: its flat overrides, `tune.run.searcher`;
    ``cache``: `cache_settings`)."""
    train_config = space.train_config(config)
    cpus = space.backbones[train_config.backbone].resources.get("cpu", 1)
    torch.set_num_threads(max(1, int(cpus)))  # trials share the cores: never oversubscribe them
    out_dir = trial_workspace()

    anchors, embeddings = shared_caches(train_config, cache) if cache["enabled"] else (None, None)

    def report(metrics: dict, checkpoint_dir) -> None:
        tune.report(with_objective(metrics, out_dir, train_config, space),
                    checkpoint=persistable_checkpoint(checkpoint_dir, out_dir))

    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        resume_from = Path(checkpoint.to_directory())
    try:
        train(train_config, report=report, out_dir=out_dir, resume_from=resume_from, anchors=anchors,
              embeddings=embeddings, progress=False)
    finally:  # what lasts went to the storage with each reported checkpoint
        shutil.rmtree(out_dir, ignore_errors=True)
