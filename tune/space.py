"""Search-space files: the schema, and its complete validation before anything starts.

A space file reads like a W&B sweep file::

    # python -m tune.search --space search_spaces/quickstart.yaml
    name: quickstart                  # experiment name (default: the file's stem)
    method: grid                      # grid | random | optuna_tpe | optuna_nsga2
    seed: 0                           # seeds the sampler and every trial's training stream
    num_samples: 1                    # grid: repeats of the grid; others: number of trials
    max_concurrent: 2                 # trials at once (0: as many as resources allow)
    backbones:                        # each backbone a trial may use, with its settings
      digits-flow:
        resources: {cpu: 1, gpu: 0}   # per trial (per worker with workers: N > 1, data-parallel,
                                      # networks sharded unless shard: false; cluster/README.md)
        options: {}                   # backbone constructor settings (e.g. path: /weights/sd35m)
        train: {}                     # training settings for this backbone only
    parameters:                       # searched; every other setting is fixed
      backbone: {values: [digits-flow, digits-eps]}
      anchor_k: {values: [5, 10, 20]}
      lambda_div: {distribution: log_uniform_values, min: 0.01, max: 0.5}
    train: {iterations: 300}          # fixed training settings (keys of dpdmd.TrainConfig)
    eval: {seeds_per_prompt: 8, every: 10}
    objective: {diversity_weight: 0.5, min_quality: 0.9, min_student_updates: 0}
    scheduler: {type: asha, grace_period: 10, reduction_factor: 2, brackets: 1}  # asha | moasha | fifo
    wandb: {enabled: true, project: dpdmd-tune}

A parameter is ``{value: x}`` (fixed), ``{values: [...]}`` (grid axis under ``method: grid``,
else a categorical choice), or ``{distribution: D, min: a, max: b}`` with D one of uniform,
log_uniform_values, int_uniform (not allowed under grid). Searchable: ``backbone`` and the
scalar keys of `dpdmd.TrainConfig` (anchor_k, lambda_div, lr, lr_fake, fake_updates, cfg_scale,
teacher_steps, batch_size, stop_grad, ...).

``scheduler.type``: ``asha`` stops trials early on the scalar ``objective`` (Ray's ASHA);
``moasha`` on the pair (diversity_score, quality_score) by non-dominated sorting at each rung,
ties broken by an epsilon-net (`tune.moasha`); ``fifo`` runs every trial to the end. Both ASHAs
save their rungs in the experiment directory, so ``--resume`` continues them.

`load_space` returns a `SearchSpace` or raises `SpaceError` listing every problem as
``FILE: KEY: what is wrong; what is allowed``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpdmd.config import (NEEDS_ANCHOR, ConfigError, TrainConfig, build_dataclass, from_mapping, knobs_with_role, load_yaml,
                          vanilla_dmd)
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
    epsilon-net; see `tune.moasha`) or ``fifo`` (no early stopping). Both ASHAs keep their rungs
    in the experiment directory, so ``--resume`` continues with them (`tune.schedulers`).
    max_t: None = the student updates of the configured iterations.
    """

    type: str = "asha"
    max_t: int | None = None
    grace_period: int = 10
    reduction_factor: float = 2.0
    brackets: int = 1


@dataclass(kw_only=True)
class ObjectiveSpec:
    """J = w * diversity_score + (1 - w) * quality_score (see `tune.objective`); the front keeps
    only trials with quality_score >= min_quality (a fraction of the teacher's quality), each
    shown by its best checkpoint from min_student_updates on (before it a student is a transient)."""

    diversity_weight: float = 0.5
    min_quality: float = 0.9
    min_student_updates: int = 0


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
    baseline: bool = True  # add a vanilla-DMD (lambda_div = 0) trial per backbone for reference

    # --- derived ---
    def backbone_names(self) -> list[str]:
        p = self.parameters.get("backbone")
        return [str(v) for v in p.extremes()] if p else list(self.backbones)

    def train_config(self, trial: dict) -> TrainConfig:
        """The TrainConfig of one trial (`tune.trials`: flat overrides, ``baseline`` ignored):
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
        return {**_edge_points(self)[0], "backbone": self.backbone_names()[0]}

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


def _check_keys(data: dict, allowed, where: str, problems: list[str]) -> None:
    for key in data:
        if key not in allowed:
            problems.append(f"{where}{key}: unknown key; allowed: {', '.join(allowed)}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_param(name: str, spec, problems: list[str]) -> Param | None:
    where = f"parameters.{name}"
    if name != "backbone" and name not in SEARCHABLE:
        problems.append(f"{where}: {name!r} cannot be searched; searchable: backbone, {', '.join(SEARCHABLE)}")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected a mapping such as {{values: [...]}}, {{value: x}} or "
                        f"{{distribution: uniform, min: a, max: b}}, got {spec!r}")
        return None
    _check_keys(spec, ("value", "values", "distribution", "min", "max"), f"{where}.", problems)
    kinds = [k for k in ("value", "values", "distribution") if k in spec]
    if len(kinds) != 1:
        problems.append(f"{where}: give exactly one of value, values or distribution (got {kinds or 'none'})")
        return None
    param = Param(name=name, value=spec.get("value"), values=spec.get("values"),
                  distribution=spec.get("distribution"), min=spec.get("min"), max=spec.get("max"))
    if param.values is not None and (not isinstance(param.values, list) or not param.values):
        problems.append(f"{where}.values: expected a non-empty list, got {param.values!r}")
        return None
    if param.distribution is not None:
        if param.distribution not in DISTRIBUTIONS:
            problems.append(f"{where}.distribution: {param.distribution!r} is unknown; allowed: {', '.join(DISTRIBUTIONS)}")
            return None
        if not (_number(param.min) and _number(param.max)):
            problems.append(f"{where}: a distribution needs numeric min and max, got min={param.min!r} max={param.max!r}")
            return None
        if param.min >= param.max:
            problems.append(f"{where}: min ({param.min}) must be below max ({param.max})")
            return None
        if param.distribution == "log_uniform_values" and param.min <= 0:
            problems.append(f"{where}.min: log_uniform_values needs min > 0, got {param.min}")
            return None
        if param.distribution == "int_uniform" and not (float(param.min).is_integer() and float(param.max).is_integer()):
            problems.append(f"{where}: int_uniform needs integer min and max, got {param.min}, {param.max}")
            return None
    elif "min" in spec or "max" in spec:
        problems.append(f"{where}: min/max only go with a distribution")
    return param


def _build_section(cls, data, where: str, problems: list[str]):
    """A section of the file as its dataclass (unknown keys and wrong types reported)."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping, got {data!r}")
        return cls()
    return build_dataclass(cls, data, problems, prefix=f"{where}.")


def load_space(path: str | Path, *, check_weights: bool = True) -> SearchSpace:
    """Read and validate a search-space file completely; raises `SpaceError` with every problem."""
    path = Path(path)
    try:
        data = load_yaml(path)
    except ConfigError as err:
        raise SpaceError(path, err.problems) from None
    problems: list[str] = []
    _check_keys(data, [f.name for f in dataclasses.fields(SearchSpace) if f.name != "path"], "", problems)
    space = SearchSpace(path=path, name=str(data.get("name", path.stem)))
    from .preflight import name_problems

    problems += name_problems(space.name, "name")
    _parse_top(space, data, problems)
    space.backbones = _parse_backbones(data.get("backbones"), problems)
    space.parameters = _parse_parameters(data.get("parameters"), space, problems)
    _parse_sections(space, data, problems)
    if not problems:
        problems.extend(_check_trials(space, check_weights))
    if problems:
        raise SpaceError(path, problems)
    return space


def _parse_top(space: SearchSpace, data: dict, problems: list[str]) -> None:
    """The scalar top-level keys: seed, num_samples, max_concurrent, baseline, method."""
    for key in ("seed", "num_samples", "max_concurrent"):
        if key in data:
            low, high = (1, 10_000) if key == "num_samples" else (0, 2**31 - 1)  # a typo: no MemoryError
            if not isinstance(data[key], int) or isinstance(data[key], bool) or not low <= data[key] <= high:
                problems.append(f"{key}: {data[key]!r} must be an integer in {low}..{high}")
            else:
                setattr(space, key, data[key])
    if "baseline" in data:
        if isinstance(data["baseline"], bool):
            space.baseline = data["baseline"]
        else:
            problems.append(f"baseline: expected true or false, got {data['baseline']!r}")
    space.method = data.get("method", "grid")
    if space.method not in METHODS:
        problems.append(f"method: {space.method!r} is unknown; allowed: {', '.join(METHODS)}")


def _parse_backbones(raw, problems: list[str]) -> dict[str, BackboneSpec]:
    """``backbones:``: each a known backbone with valid resources and constructor options."""
    from dpdmd.backbones import available_backbones, backbone_options

    if not isinstance(raw, dict) or not raw:
        problems.append("backbones: required, a mapping of backbone name -> settings; available: "
                        + ", ".join(available_backbones()))
        return {}
    out = {}
    for name, spec in raw.items():
        where = f"backbones.{name}"
        if name not in available_backbones():
            problems.append(f"{where}: unknown backbone; available: {', '.join(available_backbones())}")
            continue
        bspec = _build_section(BackboneSpec, spec or {}, where, problems)
        res = bspec.resources
        _check_keys(res, ("cpu", "gpu", "workers", "shard"), f"{where}.resources.", problems)
        for k, v in res.items():
            if k in ("cpu", "gpu") and (not _number(v) or v < 0):
                problems.append(f"{where}.resources.{k}: {v!r} must be a number >= 0")
        workers = res.get("workers", 1)
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            problems.append(f"{where}.resources.workers: {workers!r} must be an integer >= 1 "
                            "(> 1 trains the trial data-parallel over that many workers)")
        if not isinstance(res.get("shard", True), bool):
            problems.append(f"{where}.resources.shard: {res['shard']!r} must be true (the default: FSDP2 splits "
                            "the student, fake score and optimiser states over the workers) or false (replicas)")
        # the training settings that are also constructor options are set through train:
        allowed_opts = [o for o in backbone_options(name) if o not in ("cfg_scale", "teacher_steps", "student_steps", "device")]
        _check_keys(bspec.options, allowed_opts, f"{where}.options.", problems)
        bspec.options = _expand_paths(bspec.options, f"{where}.options", problems)
        out[name] = bspec
    return out


def _parse_parameters(raw, space: SearchSpace, problems: list[str]) -> dict[str, Param]:
    """``parameters:``, checked against the method and the defined backbones."""
    raw = raw or {}
    if not isinstance(raw, dict):
        problems.append(f"parameters: expected a mapping of name -> spec, got {raw!r}")
        raw = {}
    out = {}
    for name, spec in raw.items():
        param = _parse_param(name, spec, problems)
        if param is None:
            continue
        if space.method == "grid" and param.distribution is not None:
            problems.append(f"parameters.{name}: method grid needs values, not a distribution "
                            f"(use method: random or optuna_tpe for {param.distribution})")
        out[name] = param
    bparam = out.get("backbone")
    if bparam is not None:
        for value in bparam.extremes():
            if value not in space.backbones:
                problems.append(f"parameters.backbone: {value!r} has no entry under backbones "
                                f"(defined: {', '.join(space.backbones) or 'none'})")
    elif len(space.backbones) > 1:
        problems.append("parameters.backbone: several backbones are defined; search over them with "
                        "backbone: {values: [...]}, or keep one")
    return out


def _parse_sections(space: SearchSpace, data: dict, problems: list[str]) -> None:
    """train, eval (plain mappings, checked by TrainConfig later), objective, scheduler, wandb."""
    for section in ("train", "eval"):
        value = data.get(section) or {}
        if not isinstance(value, dict):
            problems.append(f"{section}: expected a mapping, got {value!r}")
            value = {}
        setattr(space, section, _expand_paths(value, section, problems) if section == "eval" else value)
    if "backbone" in space.train:
        problems.append("train.backbone: choose backbones under `backbones:` (and `parameters.backbone`)")
    space.objective = _build_section(ObjectiveSpec, data.get("objective"), "objective", problems)
    if not 0 <= space.objective.diversity_weight <= 1:
        problems.append(f"objective.diversity_weight: {space.objective.diversity_weight} must be in [0, 1]")
    if not 0 <= space.objective.min_quality <= 2:  # a fraction of the teacher's quality
        problems.append(f"objective.min_quality: {space.objective.min_quality} must be in [0, 2] "
                        "(a fraction of the teacher's quality; 0 = no fidelity floor)")
    if space.objective.min_student_updates < 0:
        problems.append(f"objective.min_student_updates: {space.objective.min_student_updates} must be >= 0 "
                        "(student updates before which no checkpoint is shown on the front)")
    space.scheduler = s = _build_section(SchedulerSpec, data.get("scheduler"), "scheduler", problems)
    if s.type not in SCHEDULERS:
        problems.append(f"scheduler.type: {s.type!r} is unknown; allowed: {', '.join(SCHEDULERS)}")
    if s.grace_period < 1:
        problems.append(f"scheduler.grace_period: {s.grace_period} must be >= 1 (student updates)")
    if s.reduction_factor <= 1:
        problems.append(f"scheduler.reduction_factor: {s.reduction_factor} must be > 1")
    if s.brackets < 1:
        problems.append(f"scheduler.brackets: {s.brackets} must be >= 1")
    space.wandb = _build_section(WandbSpec, data.get("wandb"), "wandb", problems)
    if space.wandb.mode not in (None, "online", "offline", "disabled"):
        problems.append(f"wandb.mode: {space.wandb.mode!r}; allowed: online, offline, disabled (or omit)")


def _bounded_knobs(space: SearchSpace) -> dict[str, str]:
    """The searched knobs whose upper bound is another field, e.g. {"anchor_k": "teacher_steps"}
    (from the fields' `dpdmd.config.Range`)."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        valid = f.metadata.get("range")
        if f.name in space.parameters and valid is not None and isinstance(valid.high, str):
            out[f.name] = valid.high
    return out


def _edge_points(space: SearchSpace) -> list[dict]:
    """Sampled-parameter dicts at the edges of the space: each parameter at each of its extreme
    values, the others at a valid base point (fixed values; a knob bounded by another field, such
    as K <= teacher_steps, at its smallest, and at its largest while that field varies)."""
    bounded = _bounded_knobs(space)
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


def _where(space: SearchSpace, backbone: str, problem: str) -> str:
    """Name the file's key a TrainConfig problem comes from."""
    key, _, message = problem.partition(":")
    if key in space.parameters:
        where = f"parameters.{key}"
    elif key in space.backbones[backbone].train:
        where = f"backbones.{backbone}.train.{key}"
    elif key.startswith("eval.") or key == "eval":
        where = key
    else:
        where = f"train.{key}"
    return f"{where} (backbone {backbone}): {message.strip()}"


def _check_trials(space: SearchSpace, check_weights: bool) -> list[str]:
    """Build the TrainConfig at every edge of the space for every backbone and collect what
    `dpdmd` refuses (K above teacher_steps, negative lambda_div, bad prompts, missing weights)."""
    problems: list[str] = []
    for backbone in space.backbone_names():
        for point in _edge_points(space):
            try:
                space.train_config({**point, "backbone": backbone})
            except ConfigError as err:
                problems.extend(_where(space, backbone, p) for p in err.problems)
    if problems:
        return list(dict.fromkeys(problems))
    from dpdmd.trainer import build_backbone, check

    for backbone in space.backbone_names():
        config = space.train_config({**_edge_points(space)[0], "backbone": backbone})
        if check_weights and not backbone.startswith("digits"):  # is the weights directory there?
            problems.extend(_weights_problems(backbone, config.backbone_options))
        if backbone.startswith("digits"):  # cheap to build: check the prompts against it
            try:
                check(config, build_backbone(config.replace(device="cpu")))
            except ConfigError as err:  # "prompts: ..." is train.prompts in the file
                problems.extend(p if p.startswith("eval.") else f"train.{p}" for p in err.problems)
        elif check_weights:  # the real evaluator's folders (digits backbones: in check above)
            from dpdmd.evaluation import evaluator_problems

            problems.extend(evaluator_problems(config.eval, "real"))
    return list(dict.fromkeys(problems))


def _weights_problems(backbone: str, options: dict) -> list[str]:
    """The diffusers backbones' weights directory, checked without loading anything."""
    from dpdmd.backbones.registry_real import check_weights_dir

    path = options.get("path")
    if path is None:
        return [f"backbones.{backbone}.options.path: not set; set it to a local diffusers folder of the "
                f"{backbone} weights (no weights are downloaded here), or run search_spaces/quickstart.yaml, "
                f"which needs none"]
    try:
        check_weights_dir(path, backbone)
    except (FileNotFoundError, ValueError) as err:
        hint = "" if "$" not in str(path) else " (an environment variable in the path is not set)"
        return [f"backbones.{backbone}.options.path: {err}{hint}"]
    return []


def _expand_paths(value, where: str, problems: list[str]):
    """Expand ~ and $VARS in the strings of an options mapping (paths come from the environment);
    a variable that is not set is a problem naming the key and the variable."""
    import os

    from dpdmd.config import unset_variables

    if isinstance(value, str):
        for name in (unset_variables(value) if "options" in where else []):  # paths, not prompts
            problems.append(f"{where}: {value!r} uses ${{{name}}}, which is not set in the environment; "
                            f"export {name}=... before running")
        return os.path.expandvars(os.path.expanduser(value))
    if isinstance(value, dict):
        return {k: _expand_paths(v, f"{where}.{k}", problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_paths(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    return value


def grid_size(space: SearchSpace) -> int | None:
    """Trials a grid search launches (None for samplers)."""
    if space.method != "grid":
        return None
    sizes = [len(p.values) for p in space.parameters.values() if p.values is not None]
    return math.prod(sizes) * space.num_samples if sizes else space.num_samples


def iter_grid(space: SearchSpace):
    """Every point of a grid space, as dicts of the searched values (for plans and tests)."""
    names = [n for n, p in space.parameters.items() if p.values is not None]
    for combo in itertools.product(*(space.parameters[n].values for n in names)):
        yield dict(zip(names, combo))


# --- the trials the space yields: flat, validated overrides of its TrainConfig ------------------

def baseline_trials(space: SearchSpace) -> list[dict]:
    """One vanilla-DMD trial per backbone, for reference, unless the space has one already. Its
    other searched settings take their typical value (`Param.typical`); the anchor knob its
    smallest (unused: vanilla DMD asks for no anchor)."""
    vanilla = vanilla_dmd()
    if not space.baseline or any(space.parameters[n].values and v in space.parameters[n].values
                                 for n, v in vanilla.items() if n in space.parameters):
        return []
    out = []
    for backbone in space.backbone_names():
        trial = {BASELINE: True, **vanilla}
        if "backbone" in space.parameters:
            trial["backbone"] = backbone
        for name in knobs_with_role(NEEDS_ANCHOR):
            if name in space.parameters:
                trial[name] = min(space.parameters[name].extremes())
        for name, p in space.parameters.items():
            trial.setdefault(name, p.typical())
        out.append(trial)
    return out


def grid_trials(space: SearchSpace) -> list[dict]:
    """Every grid point (``num_samples`` times), with the fixed parameters."""
    fixed = space.fixed_values()
    return [{BASELINE: False, **fixed, **point} for point in iter_grid(space)] * space.num_samples


def planned_trials(space: SearchSpace) -> list[dict]:
    """The trials handed out before any sampler: the baselines, then the grid's points."""
    return baseline_trials(space) + (grid_trials(space) if space.method == "grid" else [])
