"""The training config: every hyperparameter of method.md in one place, with its default and unit.

`TrainConfig` is what `dpdmd.train` (flags or ``--config FILE.yaml``) and the search's trials
build, and what ``train(config)`` takes. `from_mapping` builds it from a plain dict (a YAML
file), refusing unknown keys and wrong types; `problems` lists every out-of-range value. Both
report *all* problems at once, each naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Bad configuration. ``problems`` holds one message per bad key."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + ("\n  " if len(problems) > 1 else "") + "\n  ".join(problems))


@dataclass(kw_only=True)
class EvalConfig:
    """How a run is evaluated (method.md, "Evaluation").

    Attributes:
        prompts: evaluation prompts; empty = the backbone's default prompts.
        seeds_per_prompt: N images per prompt, from seeds 0..N-1 (the reference: 16; 9 in training).
        every: evaluate every this many student updates (and always at the end); 0 = only at the end.
        evaluator: which evaluator scores the images; "auto" = the backbone's (digits: "digits").
        quality_metric: the evaluator's metric used as "quality"; "auto" = the evaluator's default.
        evaluator_options: settings of the evaluator (real evaluators: model paths).
    """

    prompts: list[str] = field(default_factory=list)
    seeds_per_prompt: int = 8
    every: int = 25
    evaluator: str = "auto"
    quality_metric: str = "auto"
    evaluator_options: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class TrainConfig:
    """One DP-DMD run. Defaults are the reference's (method.md) unless the comment says otherwise.

    Attributes:
        backbone: registry name ("digits-flow", "digits-eps", "sd35m", "sd35l", "sd3m", "sdxl").
        backbone_options: backbone constructor settings beyond those below (e.g. a weights path).
        anchor_k: K, teacher steps to the anchor (1..teacher_steps).
        lambda_div: weight of L_div (>= 0); 0 is vanilla DMD.
        stop_grad: the stop-gradient after the first student step (False: the paper's ablation).
        teacher_steps: the teacher's Euler / DDIM steps.
        student_steps: the student's steps (NFE).
        cfg_scale: the teacher's CFG weight w; None = the backbone's default (3.5 for SD3.5-M as the
            reference; digits-flow 2.0 and digits-eps 3.5, measured: see README).
        fake_updates: fake-score updates per student update (two-time-scale rule).
        lr: AdamW learning rate of the student; None = the backbone's default (1e-5 for SD
            backbones as the reference, 1e-4 for the built-in digits).
        lr_fake: the fake score's learning rate; None = the same as lr.
        weight_decay, beta1, beta2: AdamW settings.
        grad_clip: gradient-norm clip for both networks.
        batch_size: prompts per iteration (reference: 4 per GPU; ours: 8, the digits are cheap).
        iterations: training iterations (student + fake).
        seed: seeds the iteration stream (prompts, x1 and DMD noise of iteration i: seed + i).
        prompts: training prompts; empty = the backbone's default prompts.
        device: "auto" (cuda if available), "cpu", "cuda", "cuda:N".
        mixed_precision: "no" or "bf16".
        compile: torch.compile each repeated block of the three networks (regional compilation,
            `dpdmd.acceleration`), with one compile cache under $DPDMD_CACHE/compile shared by all
            trials of a machine; measured on SD3.5-M at 1024 px: 59 s the first time, 10 s from the
            cache, the DP-DMD cycle 1.7x faster (bench/README_gpu.md). Off by default: it only pays
            on a GPU.
        eval: evaluation settings.
    """

    backbone: str = "digits-flow"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    anchor_k: int = 10
    lambda_div: float = 0.05
    stop_grad: bool = True
    teacher_steps: int = 30
    student_steps: int = 4
    cfg_scale: float | None = None
    fake_updates: int = 5
    lr: float | None = None
    lr_fake: float | None = None
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    batch_size: int = 8
    iterations: int = 600
    seed: int = 0
    prompts: list[str] = field(default_factory=list)
    device: str = "auto"
    mixed_precision: str = "no"
    compile: bool = False
    eval: EvalConfig = field(default_factory=EvalConfig)

    def problems(self) -> list[str]:
        """Every out-of-range value, as 'key: value — what is allowed' messages."""
        out = []

        def need(ok: bool, key: str, allowed: str):
            if not ok:
                value = getattr(self, key) if "." not in key else getattr(self.eval, key.split(".")[1])
                out.append(f"{key}: {value!r} is not allowed; {allowed}")

        need(self.teacher_steps >= 1, "teacher_steps", "it must be >= 1")
        need(1 <= self.anchor_k <= self.teacher_steps, "anchor_k",
             f"K must be an integer in 1..teacher_steps (= {self.teacher_steps})")
        need(self.lambda_div >= 0, "lambda_div", "it must be >= 0 (0 is vanilla DMD)")
        need(self.student_steps >= 2, "student_steps", "it must be >= 2 (the first step is anchored, the rest refine)")
        need(self.cfg_scale is None or self.cfg_scale >= 0, "cfg_scale", "it must be >= 0, or null for the backbone's default")
        need(self.fake_updates >= 0, "fake_updates", "it must be >= 0")
        for key in ("lr", "lr_fake"):
            need(getattr(self, key) is None or getattr(self, key) > 0, key, "it must be > 0, or null for the default")
        need(self.weight_decay >= 0, "weight_decay", "it must be >= 0")
        need(0 <= self.beta1 < 1, "beta1", "it must be in [0, 1)")
        need(0 <= self.beta2 < 1, "beta2", "it must be in [0, 1)")
        need(self.grad_clip > 0, "grad_clip", "it must be > 0")
        need(self.batch_size >= 1, "batch_size", "it must be >= 1")
        need(self.iterations >= 1, "iterations", "it must be >= 1")
        need(self.seed >= 0, "seed", "it must be >= 0")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
             "use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        need(self.mixed_precision in ("no", "bf16"), "mixed_precision", "use 'no' or 'bf16'")
        need(self.eval.seeds_per_prompt >= 2, "eval.seeds_per_prompt", "diversity needs >= 2 seeds per prompt")
        need(self.eval.every >= 0, "eval.every", "it must be >= 0 (0: evaluate only at the end)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# --- building dataclasses from plain dicts, with every problem reported ------------------------

def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value, tp, key: str, problems: list[str]):
    """Check ``value`` against the annotation ``tp``; returns the converted value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, problems)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping of {tp.__name__} settings, got {value!r}")
            return tp()
        return build_dataclass(tp, value, problems, prefix=f"{key}.")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {value!r}")
            return []
        return [_convert(v, item, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {value!r}")
            return {}
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (bool, str) and isinstance(value, tp):
        return value
    if tp is Any:
        return value
    problems.append(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return None


def build_dataclass(cls, data: dict, problems: list[str], prefix: str = ""):
    """``cls(**data)`` with every unknown key and wrong type appended to ``problems`` (keys named
    with ``prefix``); the fields' annotations are the schema."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    for key in unknown:
        problems.append(f"{prefix}{key}: unknown key; allowed keys are {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        if name in fields:
            converted = _convert(value, hints[name], prefix + name, problems)
            if converted is not None or value is None:
                kwargs[name] = converted
    try:
        return cls(**kwargs)
    except TypeError as err:  # a None where a value is required: already reported
        problems.append(f"{prefix.rstrip('.') or cls.__name__}: {err}")
        return cls()


def from_mapping(data: dict, *, source: str | None = None) -> TrainConfig:
    """A validated `TrainConfig` from a plain dict; raises `ConfigError` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping of training settings, got {type(data).__name__}"], source)
    problems: list[str] = []
    config = build_dataclass(TrainConfig, data, problems)
    if not problems:
        problems = config.problems()
    if problems:
        raise ConfigError(problems, source)
    return config


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing or unparsable file is a `ConfigError` naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError([f"cannot read the file: {err.strerror}"], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}"], str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping at the top level, got {type(data).__name__}"], str(path))
    return data


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """`TrainConfig` from a YAML file, with ``overrides`` (e.g. command-line flags) applied on top."""
    data = load_yaml(path)
    for key, value in (overrides or {}).items():
        if key == "eval" and isinstance(value, dict):
            data.setdefault("eval", {}).update(value)
        else:
            data[key] = value
    return from_mapping(data, source=str(path))
