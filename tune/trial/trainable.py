"""The Ray Tune trainable: one DP-DMD trial, a thin wrapper around `dpdmd.train`.

``run_trial(config)`` turns the trial's overrides into a `dpdmd.TrainConfig` (through the
space), plugs the shared anchor and prompt caches into the trainer, and at every evaluation
reports diversity, quality, the teacher-normalised scores, J and the J a trial keeps its student
by (``shown_objective``; also under ``shown_objective/BACKBONE``), the losses, the student updates
so far and its cache hits and misses with ``tune.report``. What it saves (`tune.trial.saves`): the
student at each new best, as the report's Ray checkpoint (with the report's sample grid, the
teacher's, ``metrics.csv``); the resumable state at the space's cadence, in ``TRIAL/resume/``, which
a restarted or resumed trial continues from.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from ray import tune

from dpdmd.anchors import shared_anchors
from dpdmd.data.cache_keys import cache_key
from dpdmd.data.disk_cache import config_hash
from dpdmd.data.prompt_cache import PromptEmbeddingCache
from dpdmd.student import MANIFEST, STUDENT_DIR
from dpdmd.training.checkpoints import Saved
from dpdmd.training.loop import train

from ..space.schema import SearchSpace
from ..storage.uri import join_uri
from .anchor_store import SharedCache, cached_prompt_lookup, get_or_create_store
from .saves import ResumeStore, TrialSaves

SHARED_FILES = ("samples/student_latest.png", "samples/teacher.png", "metrics.csv", "teacher_metrics.json")


def trial_workspace() -> Path:
    """Where the trainer writes while the trial runs: a local folder *outside* Ray's trial
    directory, which Ray uploads while it changes (a file renamed mid-upload is an error), emptied
    when the trial starts. What must last goes into the reported checkpoints and the resume store."""
    path = Path(tempfile.gettempdir()) / "dpdmd-trials" / tune.get_context().get_trial_id()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def trial_storage(experiment: str) -> str:
    """This trial's folder in the search's storage (``STORAGE/NAME/<trial dir>``), where Ray keeps
    its checkpoints and `ResumeStore` its resumable state."""
    return join_uri(experiment, Path(tune.get_context().get_trial_dir()).name)


class TrialReporter:
    """What one trial tells Tune: the metrics with their scores, the new best's student as the
    report's checkpoint, and, when the state was saved, the state uploaded to the resume store
    first (so a report Tune has seen is always one a restart can reach)."""

    def __init__(self, *, space: SearchSpace, train_config, out_dir: Path, resume: ResumeStore, best: float,
                 extra: dict | None = None):
        self.space, self.train_config, self.out_dir, self.resume = space, train_config, out_dir, resume
        self.best, self.extra = best, dict(extra or {})
        self._policy: TrialSaves | None = None

    def policy(self) -> TrialSaves:
        """The trial's `TrialSaves`, made at the first evaluation from the teacher's reference,
        which the trainer writes before training (read once)."""
        if self._policy is None:
            teacher = json.loads((self.out_dir / "teacher_metrics.json").read_text())
            o, c = self.space.objective, self.space.checkpoint
            self._policy = TrialSaves(teacher=teacher, diversity_weight=o.diversity_weight,
                                      min_student_updates=o.min_student_updates, min_quality=o.min_quality,
                                      state_every_s=60.0 * c.state_every_minutes, best=self.best)
        return self._policy

    def saves(self, metrics: dict):
        """The trainer's ``saves`` rule (asked where the trainer evaluates: rank 0)."""
        return self.policy()(metrics)

    def metrics(self, metrics: dict) -> dict:
        """The trainer's metrics plus the backbone, the teacher's scores, the teacher-normalised
        scores, J and the shown J (also under ``shown_objective/BACKBONE``, so that Ray's
        ``get_best_result`` can be asked per backbone)."""
        backbone = self.train_config.backbone
        out = dict(metrics, backbone=backbone, **self.extra)
        if "diversity" not in metrics or not (self.out_dir / "teacher_metrics.json").exists():
            return out
        policy = self.policy()
        out["teacher_diversity"], out["teacher_quality"] = policy.teacher["diversity"], policy.teacher["quality"]
        out.update(policy.scores(metrics))
        out[f"shown_objective/{backbone}"] = out["shown_objective"]
        return out

    def __call__(self, metrics: dict, saved: Saved) -> None:
        reported = self.metrics(metrics)
        if saved.student is not None:  # where the rule ran in another process (rank 0 of a multi-GPU trial)
            self.policy().best = max(self.policy().best, reported["shown_objective"])
        if saved.state is not None:
            self.resume.upload(saved.state, iteration=int(metrics["iteration"]), best=self.policy().best)
        checkpoint = self.student_checkpoint(saved.student, reported) if saved.student is not None else None
        tune.report(reported, checkpoint=checkpoint)

    def student_checkpoint(self, folder: Path, reported: dict) -> tune.Checkpoint:
        """The report's checkpoint: the saved student (its manifest given the report's scores),
        the sample grids and metrics.csv beside it, so they reach the storage with it."""
        manifest_path = folder / STUDENT_DIR / MANIFEST
        manifest = json.loads(manifest_path.read_text())
        manifest["scores"] = {k: reported[k] for k in ("diversity", "quality", "diversity_score", "quality_score",
                                                       "objective") if k in reported}
        manifest["teacher"] = self.policy().teacher
        manifest_path.write_text(json.dumps(manifest, indent=1, default=str))
        for name in SHARED_FILES:
            if (self.out_dir / name).exists():
                shutil.copyfile(self.out_dir / name, folder / Path(name).name)
        return tune.Checkpoint.from_directory(str(folder))


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


def run_trial(config: dict, *, space: SearchSpace, cache: dict, experiment: str) -> None:
    """Ray Tune function trainable of one trial (``config``: its flat overrides, `tune.run.searcher`;
    ``cache``: `cache_settings`; ``experiment``: the search's folder, STORAGE/NAME)."""
    train_config = space.train_config(config)
    cpus = space.backbones[train_config.backbone].resources.get("cpu", 1)
    torch.set_num_threads(max(1, int(cpus)))  # trials share the cores: never oversubscribe them
    out_dir = trial_workspace()
    anchors, embeddings = shared_caches(train_config, cache) if cache["enabled"] else (None, None)
    resume = ResumeStore(trial_storage(experiment))
    pointer = resume.download(out_dir / "resume")  # a restarted or resumed trial: its last state
    reporter = TrialReporter(space=space, train_config=train_config, out_dir=out_dir, resume=resume,
                             best=pointer["best_shown_objective"] if pointer else float("-inf"))
    try:
        train(train_config, report=reporter, out_dir=out_dir, anchors=anchors, embeddings=embeddings, progress=False,
              resume_from=out_dir / "resume" if pointer else None, saves=reporter.saves)
    finally:  # what lasts went to the storage with the reports
        shutil.rmtree(out_dir, ignore_errors=True)
