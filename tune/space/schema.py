"""The schema of a search-space file (the format: `tune.space`): one dataclass per section, the
constants the file's values are checked against, and the points at the space's edges that the
checks build a `TrainConfig` at (`tune.space.checks`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpdmd.config import NEEDS_ANCHOR, TrainConfig, from_mapping, knobs_with_role
from dpdmd.stream import student_updates_done

METHODS = ("grid", "random", "optuna_tpe", "optuna_nsga2")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform")
SCHEDULERS = ("asha", "moasha", "fifo")
_SCALAR_TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                           if f.name not in ("eval", "backbone_options", "prompts"))
SEARCHABLE = _SCALAR_TRAIN_KEYS
#: The key that marks a trial as a reference trial (vanilla DMD) rather than a point of the search.
BASELINE = "baseline"


class SpaceError(ValueError):
    """A bad search-space file; ``problems`` holds every message."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path, self.problems = str(path), list(problems)
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the search space:\n{lines}")


@dataclass(kw_only=True)
class Param:
    """One searched parameter. Exactly one of value / values / distribution is set."""

    name: str
    value: Any = None
    values: list | None = None
    distribution: str | None = None
    min: float | None = None
    max: float | None = None

    def extremes(self) -> list:
        """Every value the parameter can take at its edges (for validation)."""
        if self.values is not None:
            return list(self.values)
        if self.distribution is not None:
            return [self.min, self.max]
        return [self.value]

    def typical(self):
        """One representative value: the fixed one, the first of a list, a range's middle
        (geometric for log-uniform). Used for the baseline trials' unsearched settings."""
        if self.value is not None:
            return self.value
        if self.values is not None:
            return self.values[0]
        if self.distribution == "log_uniform_values":
            return (self.min * self.max) ** 0.5
        middle = (self.min + self.max) / 2
        return int(round(middle)) if self.distribution == "int_uniform" else middle

    def int_values(self) -> list[int] | None:
        """All values of an integer parameter (None if it is continuous)."""
        if self.values is not None:
            return [int(v) for v in self.values]
        if self.distribution == "int_uniform":
            return list(range(int(self.min), int(self.max) + 1))
        if self.distribution is None:
            return [int(self.value)]
        return None


@dataclass(kw_only=True)
class BackboneSpec:
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class SchedulerSpec:
    """Early stopping; time is counted in student updates (``student_updates``).

    type: ``asha`` (Ray's ASHA on the scalar ``objective``), ``moasha`` (multi-objective ASHA:
    promotes at each rung by non-dominated sorting of (diversity_score, quality_score), ties by an
    epsilon-net; see `tune.schedulers.moasha`) or ``fifo`` (no early stopping). Both ASHAs keep their rungs
    in the experiment directory, so ``--resume`` continues with them (`tune.schedulers`).
    max_t: None = the student updates of the configured iterations.
    """

    type: str = "asha"
    max_t: int | None = None
    grace_period: int = 10
    reduction_factor: float = 2.0
    brackets: int = 1

    def milestones(self, max_t: int) -> list[float]:
        """The student updates at which the ASHA compares trials ([] for ``fifo``), as Ray's
        ``_Bracket`` and `tune.schedulers.moasha` set them: bracket ``s`` has ``grace_period *
        reduction_factor ** (k + s)`` for ``k`` in ``range(int(log(max_t / grace_period) /
        log(reduction_factor) - s + 1))``, at most ``max_t`` (``grace_period`` capped at ``max_t``,
        as `tune.schedulers.make_scheduler` does); the union over the brackets, ascending. A trial
        reaches a milestone at its first report at or past it (17.5 is met at 20)."""
        if self.type not in ("asha", "moasha"):
            return []
        if self.grace_period < 1 or self.reduction_factor <= 1 or max_t < 1:
            raise ValueError(f"ASHA needs grace_period >= 1, reduction_factor > 1 and max_t >= 1; got "
                             f"{self.grace_period}, {self.reduction_factor}, {max_t}")
        grace, out = min(self.grace_period, max_t), set()
        for s in range(self.brackets):
            rungs = int(math.log(max_t / grace) / math.log(self.reduction_factor) - s + 1)
            out.update(grace * self.reduction_factor ** (k + s) for k in range(max(rungs, 0)))
        return sorted(float(m) for m in out if m <= max_t)


@dataclass(kw_only=True)
class ObjectiveSpec:
    """J = w * diversity_score + (1 - w) * quality_score (see `tune.trial.objective`); the front keeps
    only trials with quality_score >= min_quality (a fraction of the teacher's quality), each
    shown by its best checkpoint from min_student_updates on (before it a student is a transient)."""

    diversity_weight: float = 0.5
    min_quality: float = 0.9
    min_student_updates: int = 0


@dataclass(kw_only=True)
class CheckpointSpec:
    """What a trial saves besides its best student (`tune.trial.saves`): the full resumable state
    (student, fake score, optimisers: ~54 GB for SD3.5-M full fine-tuning) every
    ``state_every_minutes`` of the trial's training (0: at every report), into the trial's
    storage folder; a restarted or resumed trial continues from the last one."""

    state_every_minutes: float = 30.0


@dataclass(kw_only=True)
class WandbSpec:
    enabled: bool = True
    project: str = "dpdmd-tune"
    entity: str | None = None
    per_trial: bool = False  # a W&B run per trial (Ray's WandbLoggerCallback; slower)
    mode: str | None = None  # None: online with an API key, else offline
    upload_students: bool = False  # the front's students as W&B artifacts: uploaded (True) or storage references


@dataclass(kw_only=True)
class SearchSpace:
    path: Path
    name: str
    method: str = "grid"
    seed: int = 0
    num_samples: int = 1
    max_concurrent: int = 0
    backbones: dict[str, BackboneSpec] = field(default_factory=dict)
    parameters: dict[str, Param] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    wandb: WandbSpec = field(default_factory=WandbSpec)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    baseline: bool = True  # add a vanilla-DMD (lambda_div = 0) trial per backbone for reference

    # --- derived ---
    def backbone_names(self) -> list[str]:
        p = self.parameters.get("backbone")
        return [str(v) for v in p.extremes()] if p else list(self.backbones)

    def train_config(self, trial: dict) -> TrainConfig:
        """The TrainConfig of one trial (`tune.run.searcher`: flat overrides, ``baseline`` ignored):
        fixed settings, then its backbone's, then the trial's."""
        overrides = {k: v for k, v in trial.items() if k != BASELINE}
        backbone = overrides.get("backbone", self.backbone_names()[0])
        spec = self.backbones[backbone]
        data = {**self.train, **spec.train, **overrides, "backbone": backbone,
                "backbone_options": dict(spec.options), "eval": dict(self.eval)}
        data.setdefault("seed", self.seed)
        return from_mapping(data, source=str(self.path))

    def fixed_values(self) -> dict:
        """The parameters given one ``value``: part of every trial."""
        return {n: p.value for n, p in self.parameters.items() if p.value is not None}

    def base_point(self) -> dict:
        """A valid point of the space (fixed values, the smallest K, the first backbone)."""
        return {**edge_points(self)[0], "backbone": self.backbone_names()[0]}

    def anchor_ks(self) -> list[int]:
        """Every K (the anchor knob's values) a trial may use: the anchor cache computes all of
        them in one teacher pass."""
        (name,) = knobs_with_role(NEEDS_ANCHOR)
        p = self.parameters.get(name)
        if p is None:
            return [int(self.train.get(name, getattr(TrainConfig(), name)))]
        return sorted(set(p.int_values() or []))

    def max_student_updates(self, config: TrainConfig) -> int:
        return student_updates_done(config.iterations, config.fake_updates)


def bounded_knobs(space: SearchSpace) -> dict[str, str]:
    """The searched knobs whose upper bound is another field, e.g. {"anchor_k": "teacher_steps"}
    (from the fields' `dpdmd.config.Range`)."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        valid = f.metadata.get("range")
        if f.name in space.parameters and valid is not None and isinstance(valid.high, str):
            out[f.name] = valid.high
    return out


def edge_points(space: SearchSpace) -> list[dict]:
    """Sampled-parameter dicts at the edges of the space: each parameter at each of its extreme
    values, the others at a valid base point (fixed values; a knob bounded by another field, such
    as K <= teacher_steps, at its smallest, and at its largest while that field varies)."""
    bounded = bounded_knobs(space)
    base = {n: v for n, v in space.fixed_values().items() if n != "backbone"}
    base.update({n: min(space.parameters[n].extremes()) for n in bounded})
    points = [dict(base)]
    for name, param in space.parameters.items():
        if name == "backbone" or param.value is not None:
            continue
        for value in param.extremes():
            point = {**base, name: value}
            point.update({n: max(space.parameters[n].extremes()) for n, bound in bounded.items() if bound == name})
            points.append(point)
    return points
