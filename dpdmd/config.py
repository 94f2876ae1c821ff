"""The training config: every hyperparameter of method.md in one place, with its default and unit.

`TrainConfig` is what `dpdmd.train` (flags or ``--config FILE.yaml``) and the search's trials
build, and what ``train(config)`` takes. It is a pydantic model (`dpdmd.schema.Schema`): each
field is declared with `knob`, its default, its documentation (the flag's help), its valid range
and its *role* in the method, so that the search (`tune/`) reads what a knob means from here
instead of naming fields (`knobs_with_role`, `vanilla_dmd`, `labelled_knobs`). A `TrainConfig` is
checked when it is built: unknown keys, wrong types, values out of range and the rules between
two fields (K <= teacher_steps; fa4 attention needs bf16) are a `ConfigError` listing *all*
problems at once, each naming the key and what is allowed. `from_mapping` builds one from a plain dict (a YAML file).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError, model_validator

from .parallel.attention_impl import ATTENTION_BACKENDS
from .parallel.fp8 import FP8_MODES
from .parallel.optimizers import OPTIMIZERS
from .schema import ConfigError, Schema, field_extra, knob, line_errors, problem, problems_of

__all__ = ["MAX_EVAL_PROMPTS", "MAX_SEEDS_PER_PROMPT", "NEEDS_ANCHOR", "ConfigError", "EvalConfig", "TrainConfig",
           "from_mapping", "knobs_with_role", "labelled_knobs", "load_config", "load_yaml", "run_label",
           "unset_variables", "vanilla_dmd"]

#: Role of the knob that picks the teacher anchor (K): a trial with it needs the teacher's anchor
#: latents, and a search's anchor cache computes every value it may take in one teacher pass.
NEEDS_ANCHOR = "needs the teacher anchor"

# An evaluation holds all its images in memory at once (P prompts x N seeds): bounded so that a
# typo (seeds_per_prompt: 100000) is refused up front instead of ending in MemoryError.
MAX_SEEDS_PER_PROMPT = 1024
MAX_EVAL_PROMPTS = 1024


class EvalConfig(Schema):
    """How a run is evaluated (method.md, "Evaluation")."""

    prompts: list[str] = knob(default_factory=list, doc="evaluation prompts; empty = the backbone's default prompts.",
                              max_length=MAX_EVAL_PROMPTS, allowed=f"at most {MAX_EVAL_PROMPTS} prompts (every image "
                              "of an evaluation is held in memory at once), each one the evaluator can score")
    seeds_per_prompt: int = knob(8, doc="N images per prompt, from seeds 0..N-1 (the reference: 16; 9 in training).",
                                 ge=2, le=MAX_SEEDS_PER_PROMPT, allowed="diversity needs >= 2 seeds per prompt, and "
                                 f"at most {MAX_SEEDS_PER_PROMPT} are generated (every image of an evaluation is held "
                                 "in memory at once)")
    every: int = knob(25, doc="evaluate every this many student updates (and always at the end); 0 = only at the end.",
                      ge=0, allowed="it must be >= 0 (0: evaluate only at the end)")
    evaluator: str = knob("auto", doc='which evaluator scores the images; "auto" = the backbone\'s (digits: "digits").')
    quality_metric: str = knob("auto", doc='the evaluator\'s metric used as "quality"; "auto" = the evaluator\'s default.')
    evaluator_options: dict[str, Any] = knob(default_factory=dict,
                                             doc="settings of the evaluator (real evaluators: model paths).")


class TrainConfig(Schema):
    """One DP-DMD run. Defaults are the reference's (method.md) unless the doc says otherwise."""

    backbone: str = knob("digits-flow", doc='registry name ("digits-flow", "digits-eps", "sd35m", "sd35l", "sd3m", "sdxl").')
    backbone_options: dict[str, Any] = knob(default_factory=dict,
                                            doc="backbone constructor settings beyond those below (e.g. a weights path).")
    anchor_k: int = knob(10, doc="K, teacher steps to the anchor (1..teacher_steps).", role=NEEDS_ANCHOR, label="K",
                         ge=1, allowed="K must be an integer in 1..teacher_steps")
    lambda_div: float = knob(0.05, doc="weight of L_div (>= 0); 0 is vanilla DMD.", vanilla=0.0, label="λ",
                             ge=0, allowed="it must be >= 0 (0 is vanilla DMD)")
    stop_grad: bool = knob(True, doc="the stop-gradient after the first student step (False: the paper's ablation).")
    teacher_steps: int = knob(30, doc="the teacher's Euler / DDIM steps.", ge=1)
    student_steps: int = knob(4, doc="the student's steps (NFE).",
                              ge=2, allowed="it must be >= 2 (the first step is anchored, the rest refine)")
    cfg_scale: float | None = knob(None, ge=0, allowed="it must be >= 0, or null for the backbone's default",
                                   doc="the teacher's CFG weight w; None = the backbone's default (3.5 for SD3.5-M as "
                                       "the reference; digits-flow 2.0 and digits-eps 3.5, measured: see README).")
    fake_updates: int = knob(5, doc="fake-score updates per student update (two-time-scale rule).", ge=0)
    lr: float | None = knob(None, gt=0, doc="AdamW learning rate of the student; None = the backbone's default (1e-5 "
                                            "for SD backbones as the reference, 1e-4 for the built-in digits).")
    lr_fake: float | None = knob(None, doc="the fake score's learning rate; None = the same as lr.", gt=0)
    weight_decay: float = knob(0.0, doc="AdamW weight decay of both networks.", ge=0)
    beta1: float = knob(0.9, doc="AdamW's first-moment decay (both networks).", ge=0, lt=1)
    beta2: float = knob(0.999, doc="AdamW's second-moment decay (both networks).", ge=0, lt=1)
    grad_clip: float = knob(1.0, doc="gradient-norm clip for both networks.", gt=0)
    batch_size: int = knob(8, doc="prompts per iteration (reference: 4 per GPU; ours: 8, the digits are cheap).", ge=1)
    iterations: int = knob(600, doc="training iterations (student + fake).", ge=1)
    seed: int = knob(0, doc="seeds the iteration stream (prompts, x1 and DMD noise of iteration i: seed + i).", ge=0)
    prompts: list[str] = knob(default_factory=list, doc="training prompts; empty = the backbone's default prompts.")
    device: str = knob("auto", doc='"auto" (cuda if available), "cpu", "cuda", "cuda:N".', pattern=r"^(auto$|cpu$|cuda)",
                       allowed="use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    mixed_precision: Literal["no", "bf16"] = knob("no", doc='"no" or "bf16".')
    optimizer: Literal[tuple(OPTIMIZERS)] = knob(  # type: ignore[valid-type]
        "adamw", doc='"adamw" (torch AdamW, fused on a GPU), "adamw8bit" (torchao, 8-bit moments: 6 bytes less per '
                     'trained parameter on the GPU) or "adamw_offload" (torchao, moments and step on the host; CUDA '
                     'only). Peaks and times: bench/README_gpu.md.')
    compile: bool = knob(False, doc="torch.compile each repeated block of the three networks (regional compilation, "
                                    "`dpdmd.parallel.acceleration`), with one compile cache under $DPDMD_CACHE/compile shared "
                                    "by all trials of a machine; measured on SD3.5-M at 1024 px, batch 4: the DP-DMD cycle "
                                    "1.7x faster; compiling takes 70-79 s (full fine-tuning; LoRA 92 s) the first time on "
                                    "an H100 and 12-16 s from the cache (bench/README_gpu.md). Off by default: it only "
                                    "pays on a GPU.")
    attention_backend: Literal[ATTENTION_BACKENDS] = knob(  # type: ignore[valid-type]
        "sdpa", doc='the attention kernel: "sdpa" (PyTorch\'s choice: cuDNN\'s on an H100/H200) or "fa4" '
                    '(FlashAttention-4 as SDPA\'s flash kernel; needs the flash-attn-4 package, a GPU of compute '
                    'capability 9.x or 10.x and mixed_precision bf16; `dpdmd.parallel.attention_impl`). Measured: '
                    'bench/README_gpu.md section 5.')
    fp8: Literal[FP8_MODES] = knob(  # type: ignore[valid-type]
        "none", doc='FP8 matrix products for the student\'s and fake score\'s linear layers in the transformer blocks '
                    '(torchao float8 training, `dpdmd.parallel.fp8`): "none", "tensorwise" or "rowwise" (scales per '
                    'tensor or per row); needs torchao and a GPU of compute capability >= 8.9. Measured: '
                    'bench/README_gpu.md section 5.')
    fp8_teacher: bool = knob(False, doc="run the frozen teacher's linear layers in the transformer blocks as FP8 "
                                        "inference (torchao, per-row scales; `dpdmd.parallel.fp8`); needs what fp8 needs.")
    eval: EvalConfig = knob(default_factory=EvalConfig, doc="evaluation settings.")

    @model_validator(mode="wrap")
    @classmethod
    def _rules_across_fields(cls, data: Any, handler):
        """The rules between two fields (`_across_fields`), checked here only and reported with the
        fields' own problems (a search checks them at its corners by building TrainConfigs)."""
        try:
            config, errors = handler(data), []
        except ValidationError as err:
            config, errors = None, line_errors(err)
        refused = {e["loc"][0] for e in errors if e["loc"]}
        given = vars(config) if config is not None else data if isinstance(data, dict) else {}
        values = {name: given.get(name, cls.model_fields[name].default) for name in _ACROSS if name not in refused}
        errors += [problem((key,), message, values[key]) for key, message in _across_fields(values)]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return config

    def problems(self) -> list[str]:
        """Every problem of the config as it is now (its fields may have been changed since it was
        built), as 'key: value is not allowed; what is allowed' messages."""
        try:
            type(self).model_validate(self.to_dict())
        except ValidationError as err:
            return problems_of(err, type(self))
        return []

    @property
    def is_vanilla_dmd(self) -> bool:
        """DP-DMD with its diversity term off: vanilla DMD, which needs no teacher anchor."""
        return all(getattr(self, name) == value for name, value in vanilla_dmd().items())

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (what config.json and a checkpoint hold)."""
        return self.model_dump()

    def replace(self, **changes) -> "TrainConfig":
        """A new config with ``changes``, checked whole (as the one it comes from is now)."""
        return type(self)(**{**self.to_dict(), **changes})


_ACROSS = ("anchor_k", "teacher_steps", "attention_backend", "mixed_precision")


def _across_fields(values: dict) -> list[tuple[str, str]]:
    """``(key, what is wrong; what is allowed)`` for each rule between two fields that ``values``
    (the fields of `_ACROSS` that passed their own checks) breaks."""
    out = []
    k, steps = values.get("anchor_k"), values.get("teacher_steps")
    if type(k) is int and type(steps) is int and 1 <= steps < k:
        out.append(("anchor_k", f"{k} is not allowed; K must be an integer in 1..teacher_steps (= {steps})"))
    precision = values.get("mixed_precision")
    if values.get("attention_backend") == "fa4" and "mixed_precision" in values and precision != "bf16":
        out.append(("attention_backend", f"'fa4' runs bf16 attention only, and mixed_precision is {precision!r}; "
                                         "set mixed_precision 'bf16' or use attention_backend 'sdpa'"))
    return out


def vanilla_dmd() -> dict[str, Any]:
    """The settings that turn DP-DMD into vanilla DMD (``{"lambda_div": 0.0}``), from the fields'
    ``vanilla`` metadata: the search's baseline trials and the plots' "vanilla DMD" marker."""
    return {name: field_extra(f)["vanilla"] for name, f in TrainConfig.model_fields.items()
            if "vanilla" in field_extra(f)}


def knobs_with_role(role: str) -> list[str]:
    """The names of the TrainConfig fields that play ``role`` (e.g. `NEEDS_ANCHOR`)."""
    return [name for name, f in TrainConfig.model_fields.items() if field_extra(f).get("role") == role]


def labelled_knobs() -> list[tuple[str, str]]:
    """``(field, short label)`` of the knobs that name a run on plots: [("anchor_k", "K"), ("lambda_div", "λ")]."""
    return [(name, field_extra(f)["label"]) for name, f in TrainConfig.model_fields.items() if field_extra(f).get("label")]


def run_label(config: TrainConfig) -> str:
    """The backbone and the labelled knobs' values, e.g. "digits-flow K=10 λ=0.05" (progress bars)."""
    return " ".join([config.backbone, *(f"{label}={getattr(config, name):g}" for name, label in labelled_knobs())])


def from_mapping(data: dict, *, source: str | None = None) -> TrainConfig:
    """A validated `TrainConfig` from a plain dict; raises `ConfigError` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping of training settings, got {type(data).__name__}"], source)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(problems_of(err, TrainConfig), source) from None


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
