"""The training config: every hyperparameter of method.md in one place, with its default and unit.

`TrainConfig` is what `dpdmd.train` (flags or ``--config FILE.yaml``) and the search's trials
build, and what ``train(config)`` takes. Each field is declared with `knob`: its default, its
documentation (the flag's help), its valid `Range` and its *role* in the method, so that the
search (`tune/`) reads what a knob means from here instead of naming fields. A `TrainConfig` checks
its ranges when it is built (``__post_init__``): a config that exists is in range. `from_mapping`
builds one from a plain dict (a YAML file), refusing unknown keys and wrong types. Both report
*all* problems at once, each naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from .parallel.attention_impl import ATTENTION_BACKENDS
from .parallel.fp8 import FP8_MODES
from .parallel.optimizers import OPTIMIZERS

#: Role of the knob that picks the teacher anchor (K): a trial with it needs the teacher's anchor
#: latents, and a search's anchor cache computes every value it may take in one teacher pass.
NEEDS_ANCHOR = "needs the teacher anchor"


class ConfigError(ValueError):
    """Bad configuration. ``problems`` holds one message per bad key."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + ("\n  " if len(problems) > 1 else "") + "\n  ".join(problems))


@dataclass(frozen=True)
class Range:
    """A knob's valid values: ``low <= v <= high`` (``<`` where open). ``high`` may name another
    field ("teacher_steps"); ``optional``: None is allowed too (the backbone's default).
    ``text`` replaces the generated "what is allowed" message ({field} names are filled in)."""

    low: float | None = None
    high: float | str | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    text: str = ""

    def upper(self, config) -> float | None:
        return getattr(config, self.high) if isinstance(self.high, str) else self.high

    def contains(self, value, config) -> bool:
        if value is None:
            return self.optional
        high = self.upper(config)
        return ((self.low is None or (value > self.low if self.low_open else value >= self.low))
                and (high is None or (value < high if self.high_open else value <= high)))

    def describe(self, config) -> str:
        if self.text:
            return self.text.format(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
        if self.low is not None and self.high is not None:
            text = f"it must be in {'(' if self.low_open else '['}{self.low:g}, {self.upper(config):g}" \
                   f"{')' if self.high_open else ']'}"
        else:
            text = f"it must be {'>' if self.low_open else '>='} {self.low:g}"
        return text + (", or null for the default" if self.optional else "")


def knob(default=dataclasses.MISSING, *, doc: str, range: Range | None = None, role: str | None = None,
         vanilla: Any = None, label: str | None = None, default_factory=dataclasses.MISSING):
    """A config field with what the rest of the project needs to know about it.

    Args:
        doc: one sentence, with the unit; the command-line flag's help.
        range: the valid values, checked when the config is built.
        role: what the knob does in the method, e.g. `NEEDS_ANCHOR`.
        vanilla: the value at which DP-DMD is vanilla DMD (the search's baseline trials use it).
        label: short name on plots ("K", "λ").
    """
    metadata = {"doc": doc, "range": range, "role": role, "vanilla": vanilla, "label": label}
    return field(default=default, default_factory=default_factory, metadata=metadata)


def _check_ranges(config) -> list[str]:
    """Every field of ``config`` outside its `Range`, as 'key: value is not allowed; ...'."""
    out = []
    for f in dataclasses.fields(config):
        valid = f.metadata.get("range")
        value = getattr(config, f.name)
        if valid is not None and not valid.contains(value, config):
            out.append(f"{f.name}: {value!r} is not allowed; {valid.describe(config)}")
    return out


# An evaluation holds all its images in memory at once (P prompts x N seeds): bounded so that a
# typo (seeds_per_prompt: 100000) is refused up front instead of ending in MemoryError.
MAX_SEEDS_PER_PROMPT = 1024
MAX_EVAL_PROMPTS = 1024


@dataclass(kw_only=True)
class EvalConfig:
    """How a run is evaluated (method.md, "Evaluation")."""

    prompts: list[str] = knob(default_factory=list, doc="evaluation prompts; empty = the backbone's default prompts.")
    seeds_per_prompt: int = knob(8, doc="N images per prompt, from seeds 0..N-1 (the reference: 16; 9 in training).",
                                 range=Range(2, MAX_SEEDS_PER_PROMPT, text="diversity needs >= 2 seeds per prompt, and "
                                             f"at most {MAX_SEEDS_PER_PROMPT} are generated (every image of an "
                                             "evaluation is held in memory at once)"))
    every: int = knob(25, doc="evaluate every this many student updates (and always at the end); 0 = only at the end.",
                      range=Range(0, text="it must be >= 0 (0: evaluate only at the end)"))
    evaluator: str = knob("auto", doc='which evaluator scores the images; "auto" = the backbone\'s (digits: "digits").')
    quality_metric: str = knob("auto", doc='the evaluator\'s metric used as "quality"; "auto" = the evaluator\'s default.')
    evaluator_options: dict[str, Any] = knob(default_factory=dict,
                                             doc="settings of the evaluator (real evaluators: model paths).")


@dataclass(kw_only=True)
class TrainConfig:
    """One DP-DMD run. Defaults are the reference's (method.md) unless the doc says otherwise."""

    backbone: str = knob("digits-flow", doc='registry name ("digits-flow", "digits-eps", "sd35m", "sd35l", "sd3m", "sdxl").')
    backbone_options: dict[str, Any] = knob(default_factory=dict,
                                            doc="backbone constructor settings beyond those below (e.g. a weights path).")
    anchor_k: int = knob(10, doc="K, teacher steps to the anchor (1..teacher_steps).", role=NEEDS_ANCHOR, label="K",
                         range=Range(1, "teacher_steps", text="K must be an integer in 1..teacher_steps (= {teacher_steps})"))
    lambda_div: float = knob(0.05, doc="weight of L_div (>= 0); 0 is vanilla DMD.", vanilla=0.0, label="λ",
                             range=Range(0, text="it must be >= 0 (0 is vanilla DMD)"))
    stop_grad: bool = knob(True, doc="the stop-gradient after the first student step (False: the paper's ablation).")
    teacher_steps: int = knob(30, doc="the teacher's Euler / DDIM steps.", range=Range(1))
    student_steps: int = knob(4, doc="the student's steps (NFE).",
                              range=Range(2, text="it must be >= 2 (the first step is anchored, the rest refine)"))
    cfg_scale: float | None = knob(None, range=Range(0, optional=True, text="it must be >= 0, or null for the backbone's default"),
                                   doc="the teacher's CFG weight w; None = the backbone's default (3.5 for SD3.5-M as "
                                       "the reference; digits-flow 2.0 and digits-eps 3.5, measured: see README).")
    fake_updates: int = knob(5, doc="fake-score updates per student update (two-time-scale rule).", range=Range(0))
    lr: float | None = knob(None, range=Range(0, low_open=True, optional=True),
                            doc="AdamW learning rate of the student; None = the backbone's default (1e-5 for SD "
                                "backbones as the reference, 1e-4 for the built-in digits).")
    lr_fake: float | None = knob(None, doc="the fake score's learning rate; None = the same as lr.",
                                 range=Range(0, low_open=True, optional=True))
    weight_decay: float = knob(0.0, doc="AdamW weight decay of both networks.", range=Range(0))
    beta1: float = knob(0.9, doc="AdamW's first-moment decay (both networks).", range=Range(0, 1, high_open=True))
    beta2: float = knob(0.999, doc="AdamW's second-moment decay (both networks).", range=Range(0, 1, high_open=True))
    grad_clip: float = knob(1.0, doc="gradient-norm clip for both networks.", range=Range(0, low_open=True))
    batch_size: int = knob(8, doc="prompts per iteration (reference: 4 per GPU; ours: 8, the digits are cheap).",
                           range=Range(1))
    iterations: int = knob(600, doc="training iterations (student + fake).", range=Range(1))
    seed: int = knob(0, doc="seeds the iteration stream (prompts, x1 and DMD noise of iteration i: seed + i).",
                     range=Range(0))
    prompts: list[str] = knob(default_factory=list, doc="training prompts; empty = the backbone's default prompts.")
    device: str = knob("auto", doc='"auto" (cuda if available), "cpu", "cuda", "cuda:N".')
    mixed_precision: str = knob("no", doc='"no" or "bf16".')
    optimizer: str = knob("adamw", doc='"adamw" (torch AdamW, fused on a GPU), "adamw8bit" (torchao, 8-bit moments: '
                                       '6 bytes less per trained parameter on the GPU) or "adamw_offload" (torchao, '
                                       'moments and step on the host; CUDA only). Peaks and times: bench/README_gpu.md.')
    compile: bool = knob(False, doc="torch.compile each repeated block of the three networks (regional compilation, "
                                    "`dpdmd.parallel.acceleration`), with one compile cache under $DPDMD_CACHE/compile shared "
                                    "by all trials of a machine; measured on SD3.5-M at 1024 px, batch 4: the DP-DMD cycle "
                                    "1.7x faster; compiling takes 70-79 s (full fine-tuning; LoRA 92 s) the first time on "
                                    "an H100 and 12-16 s from the cache (bench/README_gpu.md). Off by default: it only "
                                    "pays on a GPU.")
    attention_backend: str = knob("sdpa", doc='the attention kernel: "sdpa" (PyTorch\'s choice: cuDNN\'s on an H100/H200) '
                                              'or "fa4" (FlashAttention-4 as SDPA\'s flash kernel; needs the flash-attn-4 '
                                              'package, a GPU of compute capability 9.x or 10.x and mixed_precision bf16; '
                                              '`dpdmd.parallel.attention_impl`). Measured: bench/README_gpu.md section 5.')
    fp8: str = knob("none", doc='FP8 matrix products for the student\'s and fake score\'s linear layers in the '
                                'transformer blocks (torchao float8 training, `dpdmd.parallel.fp8`): "none", "tensorwise" or '
                                '"rowwise" (scales per tensor or per row); needs torchao and a GPU of compute '
                                'capability >= 8.9. Measured: bench/README_gpu.md section 5.')
    fp8_teacher: bool = knob(False, doc="run the frozen teacher's linear layers in the transformer blocks as FP8 "
                                        "inference (torchao, per-row scales; `dpdmd.parallel.fp8`); needs what fp8 needs.")
    eval: EvalConfig = knob(default_factory=EvalConfig, doc="evaluation settings.")

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        """Every out-of-range value, as 'key: value is not allowed; what is allowed' messages."""
        out = _check_ranges(self) + [f"eval.{p}" for p in _check_ranges(self.eval)]
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            out.append(f"device: {self.device!r} is not allowed; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.mixed_precision not in ("no", "bf16"):
            out.append(f"mixed_precision: {self.mixed_precision!r} is not allowed; use 'no' or 'bf16'")
        if self.optimizer not in OPTIMIZERS:
            out.append(f"optimizer: {self.optimizer!r} is not allowed; use one of {', '.join(OPTIMIZERS)}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            out.append(f"attention_backend: {self.attention_backend!r} is not allowed; use one of "
                       f"{', '.join(ATTENTION_BACKENDS)}")
        elif self.attention_backend == "fa4" and self.mixed_precision != "bf16":
            out.append(f"attention_backend: 'fa4' runs bf16 attention only, and mixed_precision is "
                       f"{self.mixed_precision!r}; set mixed_precision 'bf16' or use attention_backend 'sdpa'")
        if self.fp8 not in FP8_MODES:
            out.append(f"fp8: {self.fp8!r} is not allowed; use one of {', '.join(FP8_MODES)}")
        if len(self.eval.prompts) > MAX_EVAL_PROMPTS:
            out.append(f"eval.prompts: {len(self.eval.prompts)} prompts are not allowed; at most {MAX_EVAL_PROMPTS} "
                       "(every image of an evaluation is held in memory at once)")
        return out

    @property
    def is_vanilla_dmd(self) -> bool:
        """DP-DMD with its diversity term off: vanilla DMD, which needs no teacher anchor."""
        return all(getattr(self, name) == value for name, value in vanilla_dmd().items())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def vanilla_dmd() -> dict[str, Any]:
    """The settings that turn DP-DMD into vanilla DMD (``{"lambda_div": 0.0}``), from the fields'
    ``vanilla`` metadata: the search's baseline trials and the plots' "vanilla DMD" marker."""
    return {f.name: f.metadata["vanilla"] for f in dataclasses.fields(TrainConfig) if f.metadata.get("vanilla") is not None}


def knobs_with_role(role: str) -> list[str]:
    """The names of the TrainConfig fields that play ``role`` (e.g. `NEEDS_ANCHOR`)."""
    return [f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("role") == role]


def labelled_knobs() -> list[tuple[str, str]]:
    """``(field, short label)`` of the knobs that name a run on plots: [("anchor_k", "K"), ("lambda_div", "λ")]."""
    return [(f.name, f.metadata["label"]) for f in dataclasses.fields(TrainConfig) if f.metadata.get("label")]


def run_label(config: TrainConfig) -> str:
    """The backbone and the labelled knobs' values, e.g. "digits-flow K=10 λ=0.05" (progress bars)."""
    return " ".join([config.backbone, *(f"{label}={getattr(config, name):g}" for name, label in labelled_knobs())])


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
        if not math.isfinite(value):  # .inf / .nan: every float setting is a finite number
            problems.append(f"{key}: {value!r} is not allowed; give a finite number")
            return None
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
    except ConfigError as err:  # out of range: the dataclass checks its own ranges
        problems.extend(prefix + p for p in err.problems)
    except TypeError as err:  # a wrong type (already reported) met by a range check
        if not problems:
            problems.append(f"{prefix.rstrip('.') or cls.__name__}: {err}")
    return cls()


def from_mapping(data: dict, *, source: str | None = None) -> TrainConfig:
    """A validated `TrainConfig` from a plain dict; raises `ConfigError` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping of training settings, got {type(data).__name__}"], source)
    problems: list[str] = []
    config = build_dataclass(TrainConfig, data, problems)
    if problems:
        raise ConfigError(problems, source)
    return config


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing, unreadable, oversized, non-UTF-8 or unparsable file, a
    duplicate key or an alias bomb is a `ConfigError` naming the file (`dpdmd.data.yaml_files`)."""
    from .data.yaml_files import read_yaml_mapping

    path = Path(path)
    try:
        data = read_yaml_mapping(path)
    except OSError as err:
        raise ConfigError([f"cannot read the file: {err.strerror}"], str(path)) from None
    except ValueError as err:
        raise ConfigError([str(err)], str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping at the top level, got {type(data).__name__}"], str(path))
    return data


_ENV_REFERENCE = re.compile(r"\$(\w+|\{(\w+)\})")


def unset_variables(text: str) -> list[str]:
    """Names of the ``$VAR`` / ``${VAR}`` in ``text`` that the environment does not set
    (`os.path.expandvars` leaves them in place, and the path then names a folder nobody meant)."""
    names = [m.group(2) or m.group(1) for m in _ENV_REFERENCE.finditer(text)]
    return [n for n in dict.fromkeys(names) if n not in os.environ]


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """`TrainConfig` from a YAML file, with ``overrides`` (e.g. command-line flags) applied on top."""
    data = load_yaml(path)
    for key, value in (overrides or {}).items():
        if key == "eval" and isinstance(value, dict):
            data.setdefault("eval", {}).update(value)
        else:
            data[key] = value
    return from_mapping(data, source=str(path))
