"""Reading a search-space file (`load_space`): every section parsed into the schema
(`tune.space.schema`) and checked, every problem collected, then the space's trials built and
checked against dpdmd (`tune.space.checks`). Raises `SpaceError` listing every problem as
``FILE: KEY: what is wrong; what is allowed``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from dpdmd.config import ConfigError, build_dataclass, load_yaml

from ..storage.preflight import name_problems
from .checks import check_trials, expand_paths
from .schema import (DISTRIBUTIONS, METHODS, SCHEDULERS, SEARCHABLE, BackboneSpec, ObjectiveSpec, Param, SchedulerSpec,
                     SearchSpace, SpaceError, WandbSpec, CheckpointSpec)


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
    problems += name_problems(space.name, "name")
    _parse_top(space, data, problems)
    space.backbones = _parse_backbones(data.get("backbones"), problems)
    space.parameters = _parse_parameters(data.get("parameters"), space, problems)
    _parse_sections(space, data, problems)
    if not problems:
        problems.extend(check_trials(space, check_weights))
    if problems:
        raise SpaceError(path, problems)
    return space


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
        bspec.options = expand_paths(bspec.options, f"{where}.options", problems)
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
        setattr(space, section, expand_paths(value, section, problems) if section == "eval" else value)
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
    space.checkpoint = _build_section(CheckpointSpec, data.get("checkpoint"), "checkpoint", problems)
    if not space.checkpoint.state_every_minutes >= 0:
        problems.append(f"checkpoint.state_every_minutes: {space.checkpoint.state_every_minutes} must be >= 0 "
                        "(minutes of training between the full resumable states; 0: at every report)")
    if space.wandb.mode not in (None, "online", "offline", "disabled"):
        problems.append(f"wandb.mode: {space.wandb.mode!r}; allowed: online, offline, disabled (or omit)")
