"""Generate docs/reference/search-space.md from the schema, so the page cannot drift from the code.

    python docs/gen_reference.py           # rewrite the page
    python docs/gen_reference.py --check   # exit 1 if the page differs from what the code gives

What comes from the code: every section and key (the schema classes' fields, in order), its type
and default, the ranges and meanings `dpdmd.config.knob` declares on `TrainConfig` and
`EvalConfig`, which keys a space may search (`SEARCHABLE`), the allowed methods, distributions and
schedulers, each backbone's constructor options and their defaults, the real evaluator's options.
What is written here: one sentence for each key of the space's own sections (which carry no
metadata yet). The generator refuses a field without a sentence and a sentence without a field,
so a key added to or removed from the schema fails `tests/test_docs.py` until this file follows.

The schema is read by one function, `schema_fields`, over `dataclasses.fields`; when the schema
becomes pydantic models, that function is the one to switch (``model_fields``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "search-space.md"

# Where the schema lives; the first module that has a name wins (the package is being split).
SPACE_MODULES = ("tune.space.schema", "tune.space")
REAL_OPTION_MODULES = ("dpdmd.evaluation.real_options", "dpdmd.evaluation.real", "dpdmd.metrics.real")


class Key(NamedTuple):
    name: str
    type: str
    default: str  # as YAML would write it; "" when required
    allowed: str
    doc: str


def _find(name: str, modules: tuple[str, ...]) -> Any:
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    raise LookupError(f"{name} is in none of {', '.join(modules)}: point docs/gen_reference.py at its new module")


def _yaml(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return "(the section below)"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else f"{value:g}"


def _range_text(valid) -> str:
    """A `dpdmd.config.Range` as text; another field named in it stays a name."""
    if valid is None:
        return ""
    low = "" if valid.low is None else f"{valid.low:g}"
    high = "" if valid.high is None else (f"`{valid.high}`" if isinstance(valid.high, str) else f"{valid.high:g}")
    if low and high:
        text = f"{'(' if valid.low_open else '['}{low}, {high}{')' if valid.high_open else ']'}"
    elif low:
        text = f"{'>' if valid.low_open else '>='} {low}"
    else:
        text = f"{'<' if valid.high_open else '<='} {high}"
    return text + (", or null" if valid.optional else "")


def schema_fields(cls, docs: dict[str, str] | None = None) -> list[Key]:
    """Every field of a schema class: name, type, default, what is allowed, its meaning.

    The meaning is the field's ``doc`` metadata (`dpdmd.config.knob`) or ``docs[Class.field]``;
    a field with neither is an error, as is an entry of ``docs`` naming no field. This is the one
    function that reads the schema (`dataclasses.fields` today).
    """
    docs = docs or {}
    keys, seen = [], set()
    for f in dataclasses.fields(cls):
        qualified = f"{cls.__name__}.{f.name}"
        if qualified in INTERNAL:
            continue
        seen.add(qualified)
        if f.default is not dataclasses.MISSING:
            default = _yaml(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _yaml(f.default_factory())
        else:
            default = ""
        meta = f.metadata or {}
        doc = meta.get("doc") or docs.get(qualified)
        if not doc:
            raise LookupError(f"{qualified} has no documentation: add a `doc` to its knob or a line to "
                              "DOCS in docs/gen_reference.py")
        allowed = _range_text(meta.get("range")) or ALLOWED.get(qualified, "")
        notes = []
        if meta.get("role"):
            notes.append(f"*{meta['role']}*")
        if meta.get("vanilla") is not None:
            notes.append(f"*{_yaml(meta['vanilla'])} is vanilla DMD*")
        type_text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        keys.append(Key(f.name, type_text, default, allowed, " ".join([doc, *notes])))
    stale = [k for k in (*docs, *ALLOWED) if k.startswith(f"{cls.__name__}.") and k not in seen]
    if stale:
        raise LookupError(f"docs/gen_reference.py documents fields that no longer exist: {stale}")
    return keys


# --- the sentences the space's own sections do not carry yet ----------------------------------

INTERNAL = {"SearchSpace.path", "Param.name"}  # set by the loader, not keys of the file

DOCS = {
    "SearchSpace.name": "the experiment's name: the folder `STORAGE/NAME/` (`--name` overrides it); default: the file's stem. One folder name.",
    "SearchSpace.method": "how trials are chosen: every grid point, or a sampler (Optuna's random, TPE, NSGA-II).",
    "SearchSpace.seed": "the sampler's seed and every trial's training seed.",
    "SearchSpace.num_samples": "grid: repeats of the grid; samplers: the number of sampled trials (`--num-samples` overrides it).",
    "SearchSpace.max_concurrent": "trials at once; 0: as many as the resources allow.",
    "SearchSpace.backbones": "each backbone a trial may use, by registry name, with its settings (below). Required.",
    "SearchSpace.parameters": "the searched keys, each a parameter (below); every other setting is fixed.",
    "SearchSpace.train": "fixed training settings: keys of `TrainConfig` (below), except `backbone`.",
    "SearchSpace.eval": "evaluation settings: keys of `EvalConfig` (below).",
    "SearchSpace.objective": "the combined objective J, the fidelity floor and the front (below).",
    "SearchSpace.scheduler": "early stopping (below).",
    "SearchSpace.wandb": "Weights & Biases (below).",
    "SearchSpace.checkpoint": "what each trial saves besides its best student (below).",
    "SearchSpace.baseline": "add one vanilla-DMD trial (lambda_div = 0) per backbone, the reference every result is compared with, unless the space already has lambda_div 0.",
    "BackboneSpec.resources": "what one trial asks for (below).",
    "BackboneSpec.options": "the backbone's constructor settings, e.g. `path: ${DPDMD_WEIGHTS}/sd35m` ([Backbone options](#backbone-options)).",
    "BackboneSpec.train": "training settings for this backbone only: keys of `TrainConfig`, over the space's `train`.",
    "Param.value": "a fixed value, part of every trial.",
    "Param.values": "a list: a grid axis under `method: grid`, a categorical choice otherwise.",
    "Param.distribution": "a distribution to sample from (samplers only, with `min` and `max`).",
    "Param.min": "the distribution's lower end.",
    "Param.max": "the distribution's upper end.",
    "ObjectiveSpec.diversity_weight": "w in J = w diversity_score + (1 - w) min(quality_score, 1).",
    "ObjectiveSpec.min_quality": "the fidelity floor: the front keeps only trials with quality_score >= this (a fraction of the teacher's quality; 0: no floor).",
    "ObjectiveSpec.min_student_updates": "student updates before which no report is a trial's kept checkpoint or its point on the front (earlier students are transients).",
    "SchedulerSpec.type": "`asha`: Ray's ASHA on J; `moasha`: multi-objective ASHA on (diversity_score, quality_score); `fifo`: no early stopping.",
    "SchedulerSpec.max_t": "the last rung, in student updates; null: the student updates of `train.iterations`.",
    "SchedulerSpec.grace_period": "the first rung, in student updates (rungs at grace_period x reduction_factor^k below max_t).",
    "SchedulerSpec.reduction_factor": "the fraction of trials a rung keeps is 1 / reduction_factor.",
    "SchedulerSpec.brackets": "ASHA brackets.",
    "WandbSpec.enabled": "write the W&B summary run (offline when no API key is configured).",
    "WandbSpec.project": "the W&B project.",
    "WandbSpec.entity": "the W&B entity; null: your default.",
    "WandbSpec.per_trial": "a W&B run per trial too (Ray's WandbLoggerCallback; slower).",
    "WandbSpec.mode": "null: online with an API key, else offline.",
    "WandbSpec.upload_students": "the front's students, logged as W&B model artifacts, are uploaded (true) or "
                                 "referenced where the search stored them (false: nothing copied).",
    "CheckpointSpec.state_every_minutes": "minutes of a trial's training between its full resumable states (the student, the fake score and both optimisers, into the trial's storage folder: ~54 GB for SD3.5-M full fine-tuning); 0: at every report. A restarted or resumed trial continues from the last one ([exporting students](../guide/export.md)).",
    "RealEvaluatorOptions.diversity_encoders": "feature encoders for diversity, in order (the first gives `diversity`): `dinov2`, `dinov3` or `clip`, each a folder or `{model: DIR, processor: DIR}`. At least one.",
    "RealEvaluatorOptions.quality_models": "quality models, each reported under its name: `pickscore` (`{processor: DIR, model: DIR}`), `clip_score` (a folder), `hpsv21`, `imagereward`, `maniqa` / `maniqa_kadid` / `maniqa_pipal` / `musiq` (the `iqa` extra) or `visualquality_r1` (final protocol only); see [Evaluation metrics](../evaluation-metrics.md). At least one; `eval.quality_metric` picks `quality` (a positive score: not `imagereward`).",
    "RealEvaluatorOptions.batch_size": "images per forward pass.",
    "RealEvaluatorOptions.dtype": "the models' dtype.",
    "RealEvaluatorOptions.precision_k": "k of the k-NN precision against the teacher's samples; needs seeds_per_prompt >= precision_k + 2.",
}

ALLOWED = {
    "SearchSpace.method": "one of {METHODS}",
    "SearchSpace.seed": "an integer in 0..2147483647",
    "SearchSpace.num_samples": "an integer in 1..10000",
    "SearchSpace.max_concurrent": "an integer in 0..2147483647",
    "SearchSpace.backbones": "names from {BACKBONES}",
    "SearchSpace.parameters": "`backbone` or a searchable `train` key (marked below)",
    "Param.distribution": "one of {DISTRIBUTIONS}; not under `method: grid`",
    "Param.min": "a number below max; > 0 for log_uniform_values; an integer for int_uniform",
    "Param.max": "a number above min",
    "ObjectiveSpec.diversity_weight": "[0, 1]",
    "ObjectiveSpec.min_quality": "[0, 2]",
    "ObjectiveSpec.min_student_updates": ">= 0",
    "SchedulerSpec.type": "one of {SCHEDULERS}",
    "SchedulerSpec.grace_period": ">= 1",
    "SchedulerSpec.reduction_factor": "> 1",
    "SchedulerSpec.brackets": ">= 1",
    "WandbSpec.mode": "online, offline, disabled, or null",
    "CheckpointSpec.state_every_minutes": ">= 0",
    "TrainConfig.device": "auto, cpu, cuda, cuda:N",
    "TrainConfig.mixed_precision": "no, bf16",
    "TrainConfig.optimizer": "one of {OPTIMIZERS}",
    "RealEvaluatorOptions.dtype": "float32, bfloat16, float16",
    "RealEvaluatorOptions.batch_size": ">= 1",
    "RealEvaluatorOptions.precision_k": ">= 1",
}

RESOURCES = [
    Key("cpu", "float", "1", ">= 0", "CPUs per trial (per worker when workers > 1)."),
    Key("gpu", "float", "0", ">= 0", "GPUs per trial (per worker when workers > 1); fractions let trials share a GPU."),
    Key("workers", "int", "1", ">= 1", "> 1 trains the trial data-parallel over that many workers, in one placement group."),
    Key("shard", "bool", "true", "true, false", "with workers > 1: FSDP2 shards the student, the fake score and their optimiser states over the workers; false keeps replicas."),
]

BACKBONE_OPTION_DOCS = {
    "path": "a local diffusers pipeline folder (or a hub id where a network exists); null: the name's hub id.",
    "resolution": "image side in pixels; a multiple of 8 x the patch size.",
    "shift": "the sigma shift of the flow grids; null (diffusers backbones): the folder's scheduler config.",
    "weights_dtype": "the frozen teacher's, the text encoders' and LoRA bases' dtype: bf16, fp16 or fp32; trainable weights stay fp32.",
    "train_mode": "`full` (full fine-tuning, as the reference) or `lora`.",
    "lora_rank": "LoRA rank.",
    "lora_alpha": "LoRA alpha; null: the rank (scale 1).",
    "lora_target_modules": "module names that get adapters; null: the attention projections.",
    "gradient_checkpointing": "recompute blocks in the backward pass (needed at 1024 px).",
    "max_sequence_length": "T5 tokens (1..512).",
    "embedding_cache": "keep prompt embeddings on disk across processes.",
}

DIGITS_EVALUATOR_OPTIONS = [
    Key("k", "int", "3", ">= 1, below seeds_per_prompt", "the neighbour of k-NN precision, recall and coverage against the real digits."),
]


def _fill(text: str, constants: dict[str, str]) -> str:
    for name, value in constants.items():
        text = text.replace("{" + name + "}", value)
    return text


def _table(keys: list[Key], searchable: set[str] | None = None) -> list[str]:
    head = "| key | type | default | allowed | meaning |"
    if searchable is not None:
        head = "| key | type | default | allowed | searchable | meaning |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for k in keys:
        cells = [f"`{k.name}`", f"`{k.type}`", f"`{k.default}`" if k.default else "required", k.allowed or "-"]
        if searchable is not None:
            cells.append("yes" if k.name in searchable else "")
        cells.append(k.doc)
        out.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return out


def _backbone_options(train_keys: set[str]) -> list[str]:
    from dpdmd.backbones.registry import backbone_class, backbone_options, shipped_backbones

    rows: dict[str, dict[str, Any]] = {}
    for name in shipped_backbones():
        cls, _ = backbone_class(name)
        params = inspect.signature(cls.__init__).parameters
        for option in backbone_options(name):
            if option in train_keys:  # set through train:, refused under options:
                continue
            rows.setdefault(option, {})[name] = params[option].default
    missing = sorted(set(rows) - set(BACKBONE_OPTION_DOCS))
    stale = sorted(set(BACKBONE_OPTION_DOCS) - set(rows))
    if missing or stale:
        raise LookupError(f"backbone options without a sentence in docs/gen_reference.py: {missing}; "
                          f"sentences for options no backbone has: {stale}")
    names = shipped_backbones()
    out = ["| option | " + " | ".join(f"`{n}`" for n in names) + " | meaning |",
           "|" + "---|" * (len(names) + 2)]
    for option, defaults in rows.items():
        cells = [f"`{_yaml(defaults[n])}`" if n in defaults else "-" for n in names]
        out.append(f"| `{option}` | " + " | ".join(cells) + f" | {BACKBONE_OPTION_DOCS[option]} |")
    return out


def render() -> str:
    from dpdmd.config import EvalConfig, TrainConfig

    space_class = {n: _find(n, SPACE_MODULES) for n in
                   ("SearchSpace", "BackboneSpec", "Param", "ObjectiveSpec", "SchedulerSpec", "WandbSpec",
                    "CheckpointSpec")}
    constants = {n: ", ".join(f"`{v}`" for v in _find(n, SPACE_MODULES))
                 for n in ("METHODS", "DISTRIBUTIONS", "SCHEDULERS")}
    from dpdmd.backbones.registry import shipped_backbones

    constants["BACKBONES"] = ", ".join(f"`{b}`" for b in shipped_backbones())
    optimizers = _find("OPTIMIZERS", ("dpdmd.parallel.optimizers", "dpdmd.optimizers"))
    constants["OPTIMIZERS"] = ", ".join(f"`{o}`" for o in optimizers)
    searchable = set(_find("SEARCHABLE", SPACE_MODULES))
    real_options = _find("RealEvaluatorOptions", REAL_OPTION_MODULES)

    def section(cls, searchable_keys=None):
        keys = [k._replace(allowed=_fill(k.allowed, constants)) for k in schema_fields(cls, DOCS)]
        return _table(keys, searchable_keys)

    documented = {key.split(".")[0] for key in (*DOCS, *ALLOWED)}
    rendered = {c.__name__ for c in (*space_class.values(), real_options, TrainConfig, EvalConfig)}
    if documented - rendered:
        raise LookupError(f"docs/gen_reference.py documents classes the schema no longer has: {documented - rendered}")
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    lines = [
        "# Search-space file reference",
        "",
        "<!-- Generated by docs/gen_reference.py from dpdmd/config.py and tune/space: do not edit by hand;",
        "     run `python docs/gen_reference.py` (tests/test_docs.py checks it is up to date). -->",
        "",
        "Every key a search-space file may hold, with its default and what it allows, read from the code.",
        "An unknown key, a wrong type or a value outside what is allowed is refused before anything",
        "starts, every problem at once, as `FILE: KEY: what is wrong; what is allowed` (exit status 2).",
        "How the pieces fit: [Search-space files](../guide/spaces.md). The same `train` and `eval` keys",
        "are the flags and the `--config` YAML of `python -m dpdmd.train`.",
        "",
        "## Top level",
        "",
        *section(space_class["SearchSpace"]),
        "",
        "## backbones.NAME",
        "",
        "One entry per backbone a trial may use (`NAME` from " + constants["BACKBONES"] + ").",
        "",
        *section(space_class["BackboneSpec"]),
        "",
        "### backbones.NAME.resources",
        "",
        *_table(RESOURCES),
        "",
        "### Backbone options",
        "",
        "`backbones.NAME.options`: the constructor settings of each backbone, with their defaults",
        "(- : the backbone has no such option). `cfg_scale`, `teacher_steps`, `student_steps` and",
        "`device` are constructor settings too, set through `train` (below).",
        "",
        *_backbone_options(train_keys),
        "",
        "## parameters.NAME",
        "",
        "Exactly one of `value`, `values` or `distribution` (with `min` and `max`). `NAME` is `backbone`",
        "or a searchable key of `train` (the column *searchable* below).",
        "",
        *section(space_class["Param"]),
        "",
        "## train (TrainConfig)",
        "",
        "`dpdmd.TrainConfig` (`dpdmd/config.py`): every hyperparameter of [the method](../method.md).",
        "`null` means the backbone's default where the meaning says so.",
        "",
        *section(TrainConfig, searchable),
        "",
        "## eval (EvalConfig)",
        "",
        *section(EvalConfig),
        "",
        "### eval.evaluator_options (real evaluator)",
        "",
        "For `evaluator: real` (the diffusers backbones); ~ and ${VARS} in paths are expanded.",
        "",
        *section(real_options),
        "",
        "### eval.evaluator_options (digits evaluator)",
        "",
        *_table(DIGITS_EVALUATOR_OPTIONS),
        "",
        "## objective",
        "",
        *section(space_class["ObjectiveSpec"]),
        "",
        "## scheduler",
        "",
        *section(space_class["SchedulerSpec"]),
        "",
        "## wandb",
        "",
        *section(space_class["WandbSpec"]),
        "",
        "## checkpoint",
        "",
        *section(space_class["CheckpointSpec"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is not up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is not what the code gives: run python docs/gen_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
