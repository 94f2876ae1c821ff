"""The sections of a search-space file that hold settings, as pydantic models (`dpdmd.schema.Schema`:
unknown keys, wrong types and values out of range refused, each field documented): a backbone's
settings and resources, the objective, the scheduler, W&B and the checkpoints; and the expansion
of ~ and $VARS in paths. The space itself, its searched parameters and the rules across its
sections: `tune.space.schema`."""

from __future__ import annotations

import math
import os
from typing import Annotated, Any, Literal

from pydantic import WithJsonSchema, field_validator

from dpdmd.config import unset_variables
from dpdmd.schema import Schema, fail, knob

SCHEDULERS = ("asha", "moasha", "fifo")


_RESOURCES_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "cpu": {"type": "number", "minimum": 0}, "gpu": {"type": "number", "minimum": 0},
    "workers": {"type": "integer", "minimum": 1}, "shard": {"type": "boolean"}}}


def resource_problems(resources: dict) -> list[tuple[tuple, str]]:
    """``backbones.NAME.resources``: cpu, gpu (numbers >= 0), workers (>= 1), shard (true / false)."""
    out = [((k,), "unknown key; allowed keys are cpu, gpu, workers, shard") for k in resources
           if k not in ("cpu", "gpu", "workers", "shard")]
    for k in ("cpu", "gpu"):
        v = resources.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or not math.isfinite(v):
            out.append(((k,), f"{v!r} must be a number >= 0"))
    workers = resources.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        out.append((("workers",), f"{workers!r} must be an integer >= 1 (> 1 trains the trial data-parallel over "
                                  "that many workers)"))
    if not isinstance(resources.get("shard", True), bool):
        out.append((("shard",), f"{resources['shard']!r} must be true (the default: FSDP2 splits the student, fake "
                                "score and optimiser states over the workers) or false (replicas)"))
    return out


class BackboneSpec(Schema):
    """One backbone a trial may use, with its settings."""

    resources: Annotated[dict[str, Any], WithJsonSchema(_RESOURCES_SCHEMA)] = knob(
        default_factory=lambda: {"cpu": 1.0, "gpu": 0.0}, doc="what one trial asks for (below).")
    options: dict[str, Any] = knob(default_factory=dict, doc="the backbone's constructor settings, e.g. `path: "
                                   "${DPDMD_WEIGHTS}/sd35m` ([Backbone options](#backbone-options)).")
    train: dict[str, Any] = knob(default_factory=dict, doc="training settings for this backbone only: keys of "
                                 "`TrainConfig`, over the space's `train`.")

    @field_validator("resources")
    @classmethod
    def _resources(cls, resources: dict) -> dict:
        fail(resource_problems(resources))
        return resources


class ObjectiveSpec(Schema):
    """J = w * diversity_score + (1 - w) * quality_score (see `tune.trial.objective`); the front keeps
    only trials with quality_score >= min_quality (a fraction of the teacher's quality), each
    shown by its best checkpoint from min_student_updates on (before it a student is a transient)."""

    diversity_weight: float = knob(0.5, ge=0, le=1, doc="w in J = w diversity_score + (1 - w) min(quality_score, 1).")
    min_quality: float = knob(0.9, ge=0, le=2, doc="the fidelity floor: the front keeps only trials with quality_score "
                              ">= this (a fraction of the teacher's quality; 0: no floor).",
                              allowed="it must be in [0, 2] (a fraction of the teacher's quality; 0 = no fidelity floor)")
    min_student_updates: int = knob(0, ge=0, doc="student updates before which no report is a trial's kept checkpoint "
                                    "or its point on the front (earlier students are transients).",
                                    allowed="it must be >= 0 (student updates before which no checkpoint is shown "
                                            "on the front)")


class SchedulerSpec(Schema):
    """Early stopping; time is counted in student updates (``student_updates``). Both ASHAs keep
    their rungs in the experiment directory, so ``--resume`` continues with them (`tune.schedulers`)."""

    type: Literal[SCHEDULERS] = knob(  # type: ignore[valid-type]
        "asha", doc="`asha`: Ray's ASHA on J; `moasha`: multi-objective ASHA on (diversity_score, quality_score), "
                    "by non-dominated sorting, ties by an epsilon-net (`tune.schedulers.moasha`); `fifo`: no early stopping.")
    max_t: int | None = knob(None, doc="the last rung, in student updates; null: the student updates of "
                                       "`train.iterations`.")
    grace_period: int = knob(10, ge=1, allowed="it must be >= 1 (student updates)",
                             doc="the first rung, in student updates (rungs at grace_period x reduction_factor^k "
                                 "below max_t).")
    reduction_factor: float = knob(2.0, gt=1, doc="the fraction of trials a rung keeps is 1 / reduction_factor.")
    brackets: int = knob(1, ge=1, doc="ASHA brackets.")

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


class WandbSpec(Schema):
    """Weights & Biases."""

    enabled: bool = knob(True, doc="write the W&B summary run (offline when no API key is configured).")
    project: str = knob("dpdmd-tune", doc="the W&B project.")
    entity: str | None = knob(None, doc="the W&B entity; null: your default.")
    per_trial: bool = knob(False, doc="a W&B run per trial too (Ray's WandbLoggerCallback; slower).")
    mode: Literal["online", "offline", "disabled"] | None = knob(None, doc="null: online with an API key, else offline.")
    upload_students: bool = knob(False, doc="the front's students, logged as W&B model artifacts, are uploaded (true) "
                                            "or referenced where the search stored them (false: nothing copied).")


class CheckpointSpec(Schema):
    """What a trial saves besides its best student (`tune.trial.saves`): the full resumable state
    (student, fake score, optimisers: ~54 GB for SD3.5-M full fine-tuning) every
    ``state_every_minutes`` of the trial's training (0: at every report), into the trial's
    storage folder; a restarted or resumed trial continues from the last one."""

    state_every_minutes: float = knob(
        30.0, ge=0, allowed="it must be >= 0 (minutes of training between the full resumable states; 0: at every "
                            "report)",
        doc="minutes of a trial's training between its full resumable states (the student, the fake score and both "
            "optimisers, into the trial's storage folder: ~54 GB for SD3.5-M full fine-tuning); 0: at every report. "
            "A restarted or resumed trial continues from the last one ([exporting students](../guide/export.md)).")


def expand_paths(value, loc: tuple, problems: list):
    """Expand ~ and $VARS in the strings of a mapping (paths come from the environment); under an
    ``options`` key a variable that is not set is a problem naming the key and the variable."""
    if isinstance(value, str):
        if any("options" in str(part) for part in loc):  # paths, not prompts
            for name in unset_variables(value):
                problems.append((loc, f"{value!r} uses ${{{name}}}, which is not set in the environment; "
                                      f"export {name}=... before running"))
        return os.path.expandvars(os.path.expanduser(value))
    if isinstance(value, dict):
        return {k: expand_paths(v, (*loc, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_paths(v, (*loc, i), problems) for i, v in enumerate(value)]
    return value
