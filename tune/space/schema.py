"""The schema of a search-space file (the format: `tune.space`): `SearchSpace` and its searched
parameters (`Param`) as pydantic models (`dpdmd.schema.Schema`: unknown keys, wrong types and
values out of range refused, each field documented; the settings sections are in
`tune.space.sections`), the constants its values are checked against, and the rules across
sections: which keys may be searched, one cap on the number of trials, and the space's
*corners*, the `TrainConfig` built at each for every backbone, so that what dpdmd refuses (K above
teacher_steps, a negative lambda_div, an unknown train key) is refused before anything starts,
named by the file's key. The JSON Schema for editors is written from these models
(`tune.space.json_schema`)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Literal

from typing import Annotated

from pydantic import PlainValidator, PrivateAttr, ValidationInfo, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dpdmd.backbones import available_backbones, backbone_options
from dpdmd.backbones.registry import shipped_backbones
from dpdmd.config import NEEDS_ANCHOR, ConfigError, TrainConfig, from_mapping, knobs_with_role
from dpdmd.schema import PROBLEM, Schema, fail, knob
from dpdmd.stream import student_updates_done

from ..storage.preflight import name_problems
from .sections import SCHEDULERS, BackboneSpec, CheckpointSpec, ObjectiveSpec, SchedulerSpec, WandbSpec, expand_paths

METHODS = ("grid", "random", "optuna_tpe", "optuna_nsga2")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform")
SEARCHABLE = tuple(n for n in TrainConfig.model_fields if n not in ("eval", "backbone_options", "prompts"))
#: The key that marks a trial as a reference trial (vanilla DMD) rather than a point of the search.
BASELINE = "baseline"
#: Trials of one search, grid points x repeats or sampled: a typo must not end in MemoryError.
MAX_TRIALS = 10_000
_INT32 = 2**31 - 1
#: Training settings that are constructor options too: set through ``train``, refused under ``options``.
_TRAIN_OPTIONS = ("cfg_scale", "teacher_steps", "student_steps", "device")
__all__ = ["BASELINE", "DISTRIBUTIONS", "MAX_TRIALS", "METHODS", "SCHEDULERS", "SEARCHABLE", "BackboneSpec",
           "CheckpointSpec", "ObjectiveSpec", "Param", "SchedulerSpec", "SearchSpace", "SpaceError", "WandbSpec",
           "grid_points", "too_many_trials"]


class SpaceError(ValueError):
    """A bad search-space file; ``problems`` holds every message."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path, self.problems = str(path), list(problems)
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s) in the search space:\n{lines}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value):
    if not _is_number(value):
        raise PydanticCustomError(PROBLEM, "{message}", {"message": f"expected a number, got {value!r}"})
    if not math.isfinite(value):
        raise PydanticCustomError(PROBLEM, "{message}", {"message": f"{value!r} is not allowed; give a finite number"})
    return value


#: A finite int or float, kept as written (``min: 1`` stays an int for int_uniform).
Number = Annotated[float, PlainValidator(_number), WithJsonSchema({"type": "number"})]


class Param(Schema):
    """One searched parameter: exactly one of value / values / distribution (with min and max)."""

    value: Any = knob(None, doc="a fixed value, part of every trial.")
    values: list | None = knob(None, doc="a list: a grid axis under `method: grid`, a categorical choice otherwise.",
                               allowed="a non-empty list")
    distribution: Literal[DISTRIBUTIONS] | None = knob(  # type: ignore[valid-type]
        None, doc="a distribution to sample from (samplers only, with `min` and `max`).",
        allowed=f"one of {', '.join(DISTRIBUTIONS)}; not under `method: grid`")
    min: Number | None = knob(None, doc="the distribution's lower end.",
                              allowed="a number below max; > 0 for log_uniform_values; an integer for int_uniform")
    max: Number | None = knob(None, doc="the distribution's upper end.", allowed="a number above min")

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        kinds = [k for k in ("value", "values", "distribution") if k in self.model_fields_set]
        lo, hi = self.min, self.max
        if len(kinds) != 1:
            fail([((), f"give exactly one of value, values or distribution (got {kinds or 'none'})")])
        elif self.values is not None and not self.values:
            fail([(("values",), "expected a non-empty list, got []")])
        elif self.distribution is not None:
            if lo is None or hi is None:
                fail([((), f"a distribution needs numeric min and max, got min={lo!r} max={hi!r}")])
            elif lo >= hi:
                fail([((), f"min ({lo}) must be below max ({hi})")])
            elif self.distribution == "log_uniform_values" and lo <= 0:
                fail([(("min",), f"log_uniform_values needs min > 0, got {lo}")])
            elif self.distribution == "int_uniform" and not (float(lo).is_integer() and float(hi).is_integer()):
                fail([((), f"int_uniform needs integer min and max, got {lo}, {hi}")])
        elif {"min", "max"} & self.model_fields_set:
            fail([((), "min/max only go with a distribution")])
        return self

    def extremes(self) -> list:
        """Every value the parameter can take at its edges (for validation)."""
        if self.values is not None:
            return list(self.values)
        if self.distribution is not None:
            return [self.min, self.max]
        return [self.value]

    def ends(self) -> list:
        """The smallest and largest of its numbers, and each of its other values (words, booleans)."""
        values = self.extremes()
        numbers = sorted({v for v in values if _is_number(v)})
        others = {repr(v): v for v in values if not _is_number(v)}
        return numbers[:1] + numbers[1:][-1:] + list(others.values())

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


def grid_points(method: str, parameters: dict[str, Param]) -> int:
    """Points of one pass over the space: the grid's (1 for a sampler: each trial is one point)."""
    return math.prod(len(p.values) for p in parameters.values() if p.values is not None) if method == "grid" else 1


def too_many_trials(method: str, parameters: dict[str, Param], num_samples: int) -> str | None:
    """The one cap on a search's size, a grid's points x repeats and a sampler's num_samples alike,
    checked before any plan is built (the file's ``num_samples`` here, ``--num-samples`` by the
    command line): what is wrong and what is allowed, or None."""
    points = grid_points(method, parameters)
    if points * num_samples <= MAX_TRIALS:
        return None
    asked = f"{points} grid point(s) x num_samples {num_samples} = {points * num_samples}" if method == "grid" \
        else f"num_samples {num_samples}"
    return (f"{asked} trials are not allowed; a search runs at most {MAX_TRIALS} trials (a typo must not end "
            f"in MemoryError): fewer {'values or repeats' if method == 'grid' else 'samples'}")


_SECTIONS = ("backbones", "parameters", "train", "eval", "objective", "scheduler", "wandb", "checkpoint")


class SearchSpace(Schema):
    """A search-space file, checked whole when it is built (`tune.space.load_space`: the file's path
    comes in the validation context, ``{"path": PATH}``)."""

    _path: Path = PrivateAttr(default_factory=lambda: Path("space.yaml"))
    name: str = knob("", doc="the experiment's name: the folder `STORAGE/NAME/` (`--name` overrides it); default: "
                     "the file's stem. One folder name.", allowed="one folder name: letters, digits, '.', '_', '-'")
    method: Literal[METHODS] = knob("grid", doc="how trials are chosen: every grid point, or a sampler (Optuna's "  # type: ignore[valid-type]
                                    "random, TPE, NSGA-II).")
    seed: int = knob(0, ge=0, le=_INT32, doc="the sampler's seed and every trial's training seed.")
    num_samples: int = knob(1, ge=1, doc="grid: repeats of the grid; samplers: the number of sampled trials "
                            "(`--num-samples` overrides it).", allowed=f"it must be an integer >= 1, and a "
                            f"search at most {MAX_TRIALS} trials (grid: points x num_samples)")
    max_concurrent: int = knob(0, ge=0, le=_INT32, doc="trials at once; 0: as many as the resources allow.")
    backbones: dict[str, BackboneSpec] = knob(
        doc="each backbone a trial may use, by registry name, with its settings (below). Required.",
        # the shipped ones (the page and the JSON Schema are written from this); an unknown name's error lists all
        allowed="a mapping of backbone name -> settings; available: " + ", ".join(shipped_backbones()))
    parameters: dict[str, Param] = knob(default_factory=dict, doc="the searched keys, each a parameter (below); every "
                                        "other setting is fixed.", allowed="`backbone` or a searchable `train` key")
    train: dict[str, Any] = knob(default_factory=dict, doc="fixed training settings: keys of `TrainConfig` (below), "
                                 "except `backbone`.")
    eval: dict[str, Any] = knob(default_factory=dict, doc="evaluation settings: keys of `EvalConfig` (below).")
    objective: ObjectiveSpec = knob(default_factory=ObjectiveSpec, doc="the combined objective J, the fidelity floor "
                                    "and the front (below).")
    scheduler: SchedulerSpec = knob(default_factory=SchedulerSpec, doc="early stopping (below).")
    wandb: WandbSpec = knob(default_factory=WandbSpec, doc="Weights & Biases (below).")
    checkpoint: CheckpointSpec = knob(default_factory=CheckpointSpec, doc="what each trial saves besides its best student "
                                      "(below).")
    baseline: bool = knob(True, doc="add one vanilla-DMD trial (lambda_div = 0) per backbone, the reference every "
                          "result is compared with, unless the space already has lambda_div 0.")

    # --- the rules -----------------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """A section left empty (``objective:``) is its defaults; the name is the file's stem."""
        if not isinstance(data, dict):
            return data
        data = {k: {} if v is None and k in _SECTIONS else v for k, v in data.items()}
        path = (info.context or {}).get("path")
        if "name" not in data and path is not None:
            data["name"] = Path(path).stem
        return data

    @field_validator("name")
    @classmethod
    def _one_folder(cls, name: str) -> str:
        fail(((), p.split(": ", 1)[1]) for p in name_problems(name, "name"))
        return name

    @field_validator("backbones", mode="before")
    @classmethod
    def _empty_backbone_is_defaults(cls, backbones: Any) -> Any:
        return {k: {} if v is None else v for k, v in backbones.items()} if isinstance(backbones, dict) else backbones

    @field_validator("backbones")
    @classmethod
    def _known_backbones(cls, backbones: dict[str, BackboneSpec]) -> dict[str, BackboneSpec]:
        """Each a registered backbone, with the constructor options it has (paths expanded)."""
        available = available_backbones()
        if not backbones:
            fail([((), "required, a mapping of backbone name -> settings; available: " + ", ".join(available))])
        problems: list = []
        for name, spec in backbones.items():
            if name not in available:
                problems.append(((name,), f"unknown backbone; available: {', '.join(available)}"))
                continue
            allowed = [o for o in backbone_options(name) if o not in _TRAIN_OPTIONS]
            problems += [((name, "options", key), f"unknown key; allowed keys are {', '.join(allowed) or 'none'}")
                         for key in spec.options if key not in allowed]
            spec.options = expand_paths(spec.options, (name, "options"), problems)
        fail(problems)
        return backbones

    @field_validator("parameters")
    @classmethod
    def _searchable(cls, parameters: dict[str, Param], info: ValidationInfo) -> dict[str, Param]:
        """Searchable keys only; no distribution under a grid; the backbones searched are defined."""
        method, backbones = info.data.get("method"), info.data.get("backbones")
        problems: list = []
        for name, p in parameters.items():
            if name != "backbone" and name not in SEARCHABLE:
                problems.append(((name,), f"{name!r} cannot be searched; searchable: {', '.join(SEARCHABLE)}"))
            elif method == "grid" and p.distribution is not None:
                problems.append(((name,), f"method grid needs values, not a distribution (use method: random or "
                                          f"optuna_tpe for {p.distribution})"))
        if backbones is not None and "backbone" in parameters:
            problems += [(("backbone",), f"{v!r} has no entry under backbones (defined: {', '.join(backbones)})")
                         for v in parameters["backbone"].extremes() if v not in backbones]
        elif backbones is not None and len(backbones) > 1:
            problems.append((("backbone",), "several backbones are defined; search over them with "
                                            "backbone: {values: [...]}, or keep one"))
        fail(problems)
        return parameters

    @field_validator("train")
    @classmethod
    def _no_backbone(cls, train: dict) -> dict:
        fail([(("backbone",), "choose backbones under `backbones:` (and `parameters.backbone`)")] if "backbone" in train
             else [])
        return train

    @field_validator("eval")
    @classmethod
    def _paths(cls, eval: dict) -> dict:  # noqa: A002 - the section's name
        problems: list = []
        eval = expand_paths(eval, (), problems)
        fail(problems)
        return eval

    @model_validator(mode="after")
    def _corners(self, info: ValidationInfo) -> SearchSpace:
        """The search's size (before any plan is built), then what dpdmd refuses at the space's
        corners (`corners`), named by the file's key."""
        if (info.context or {}).get("path") is not None:
            self._path = Path(info.context["path"])
        too_many = too_many_trials(self.method, self.parameters, self.num_samples)
        if too_many:
            fail([(("num_samples" if self.method != "grid" or self.num_samples > MAX_TRIALS else "parameters",),
                   too_many)])
        problems = []
        for backbone in self.backbone_names():
            for point in self.corners():
                try:
                    self.train_config({**point, "backbone": backbone})
                except ConfigError as err:
                    problems.extend(self._where(backbone, point, p) for p in err.problems)
        fail(((), p) for p in dict.fromkeys(problems))
        return self

    def _where(self, backbone: str, point: dict, problem: str) -> str:
        """Name the file's key a TrainConfig problem at ``point`` comes from: the parameter where the
        point sets it, else the backbone's train, else the space's (a searched key may be fixed too)."""
        key, _, message = problem.partition(":")
        if key in point and key in self.parameters:
            where = f"parameters.{key}"
        elif key in self.backbones[backbone].train:
            where = f"backbones.{backbone}.train.{key}"
        elif key.startswith("eval.") or key == "eval":
            where = key
        else:
            where = f"train.{key}"
        return f"{where} (backbone {backbone}): {message.strip()}"

    # --- derived -------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The file the space was read from."""
        return self._path

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
        """A valid point of the space: the fixed values, the anchor knob (K) at its smallest (valid
        whatever teacher_steps a trial has), the first backbone."""
        point = {n: v for n, v in self.fixed_values().items() if n != "backbone"}
        point.update({n: min(self.parameters[n].extremes()) for n in knobs_with_role(NEEDS_ANCHOR)
                      if n in self.parameters})
        return {**point, "backbone": self.backbone_names()[0]}

    def corners(self) -> list[dict]:
        """The space's corners, without the backbone: the base point; each searched parameter at each
        of its values (a range: its ends), the others at the base point; and each pair of them at
        their ends together (a number's smallest and largest, every value of a list of words). A rule
        between two fields, such as K <= teacher_steps, is broken at one of them if anywhere."""
        base = {n: v for n, v in self.base_point().items() if n != "backbone"}
        searched = {n: p for n, p in self.parameters.items() if n != "backbone" and p.value is None}
        points = [base, *({**base, n: v} for n, p in searched.items() for v in p.extremes())]
        for (a, pa), (b, pb) in itertools.combinations(searched.items(), 2):
            points += [{**base, a: x, b: y} for x in pa.ends() for y in pb.ends()]
        return list({repr(sorted(p.items())): p for p in points}.values())

    def anchor_ks(self) -> list[int]:
        """Every K (the anchor knob's values) a trial may use: the anchor cache computes all of
        them in one teacher pass."""
        (name,) = knobs_with_role(NEEDS_ANCHOR)
        p = self.parameters.get(name)
        if p is None:
            return [int(self.train.get(name, TrainConfig.model_fields[name].default))]
        return sorted(set(p.int_values() or []))

    def max_student_updates(self, config: TrainConfig) -> int:
        return student_updates_done(config.iterations, config.fake_updates)

    def max_t(self) -> int:
        """The scheduler's max_t: as set, else the student updates of the configured iterations."""
        return self.scheduler.max_t or self.max_student_updates(self.train_config(self.base_point()))

    def warnings(self) -> list[str]:
        """What is allowed but likely not meant: a first rung beyond the trials' length."""
        s = self.scheduler
        if s.type == "fifo" or s.grace_period <= self.max_t():
            return []
        return [f"scheduler.grace_period: {s.grace_period} is above the trials' length ({self.max_t()} student "
                f"updates): no rung will be reached, so {s.type} stops no trial early; give a grace_period of at most "
                f"{self.max_t()} (or type: fifo)"]
