"""Generate docs/reference/search-space.md from the schema, so the page cannot drift from the code.

    python docs/gen_reference.py           # rewrite the page
    python docs/gen_reference.py --check   # exit 1 if the page differs from what the code gives

What comes from the code: every section and key (the pydantic models' fields, in order), its type
and default, its meaning (the field's description, `dpdmd.schema.knob`'s ``doc``) and what it
allows (`dpdmd.schema.allowed_text`, the words the errors use), which keys a space may search
(`SEARCHABLE`), each backbone's constructor options and their defaults, the real evaluator's
options. What is written here: one sentence for each backbone option and each of the real
evaluator's options (a dataclass of its own parser, `dpdmd.evaluation.real_options`). The generator
refuses a field without a sentence and a sentence without a field, so a key added to or removed
from the schema fails `tests/test_docs.py` until it is documented.

The schema is read by one function, `schema_fields` (``model_fields``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import sys
import types
import typing
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
    if dataclasses.is_dataclass(value) or hasattr(type(value), "model_fields"):
        return "(the section below)"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else f"{value:g}"


def _type_text(tp) -> str:
    """A field's type as a reader writes it: ``float | None``, ``dict[str, BackboneSpec]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin is typing.Literal:
        return type(args[0]).__name__
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in args)}]"
    if tp is type(None):
        return "None"
    return "Any" if tp is Any else getattr(tp, "__name__", str(tp))


def schema_fields(cls, docs: dict[str, str] | None = None) -> list[Key]:
    """Every field of a schema class: name, type, default, what is allowed, its meaning.

    A pydantic model (the schema): the meaning is the field's description, what it allows
    `dpdmd.schema.allowed_text`, its role and vanilla value its `dpdmd.schema.knob` metadata. A
    dataclass (the real evaluator's options): ``docs[Class.field]`` and ``ALLOWED``. A field with no
    meaning is an error, as is an entry of ``docs`` naming no field. This is the one function that
    reads the schema.
    """
    from dpdmd.schema import allowed_text, field_extra

    docs = docs or {}
    keys, seen = [], set()
    if hasattr(cls, "model_fields"):
        for name, f in cls.model_fields.items():
            default = f.get_default(call_default_factory=True)
            if not f.description:
                raise LookupError(f"{cls.__name__}.{name} has no documentation: give it a `doc` (dpdmd.schema.knob)")
            extra = field_extra(f)
            notes = [f"*{extra['role']}*"] if extra.get("role") else []
            notes += [f"*{_yaml(extra['vanilla'])} is vanilla DMD*"] if "vanilla" in extra else []
            keys.append(Key(name, _type_text(f.annotation), "" if f.is_required() else _yaml(default),
                            allowed_text(cls, name), " ".join([f.description, *notes])))
        return keys
    for f in dataclasses.fields(cls):
        qualified = f"{cls.__name__}.{f.name}"
        seen.add(qualified)
        if f.default is not dataclasses.MISSING:
            default = _yaml(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _yaml(f.default_factory())
        else:
            default = ""
        if not docs.get(qualified):
            raise LookupError(f"{qualified} has no documentation: add a line to DOCS in docs/gen_reference.py")
        type_text = f.type if isinstance(f.type, str) else _type_text(f.type)
        keys.append(Key(f.name, type_text, default, ALLOWED.get(qualified, ""), docs[qualified]))
    stale = [k for k in (*docs, *ALLOWED) if k.startswith(f"{cls.__name__}.") and k not in seen]
    if stale:
        raise LookupError(f"docs/gen_reference.py documents fields that no longer exist: {stale}")
    return keys


# --- the sentences the code does not carry ------------------------------------------------------

DOCS = {  # the real evaluator's options: a dataclass of its own parser, without field metadata
    "RealEvaluatorOptions.diversity_encoders": "feature encoders for diversity, in order (the first gives `diversity`): `dinov2`, `dinov3` or `clip`, each a folder or `{model: DIR, processor: DIR}`. At least one.",
    "RealEvaluatorOptions.quality_models": "quality models, each reported under its name: `pickscore` (`{processor: DIR, model: DIR}`), `clip_score` (a folder), `hpsv21`, `imagereward`, `maniqa` / `maniqa_kadid` / `maniqa_pipal` / `musiq` (the `iqa` extra) or `visualquality_r1` (final protocol only); see [Evaluation metrics](../evaluation-metrics.md). At least one; `eval.quality_metric` picks `quality` (a positive score: not `imagereward`).",
    "RealEvaluatorOptions.batch_size": "images per forward pass.",
    "RealEvaluatorOptions.dtype": "the models' dtype.",
    "RealEvaluatorOptions.precision_k": "k of the k-NN precision against the teacher's samples; needs seeds_per_prompt >= precision_k + 2.",
}

ALLOWED = {
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


def _table(keys: list[Key], searchable: set[str] | None = None) -> list[str]:
    head = "| key | type | default | allowed | meaning |"
    if searchable is not None:
        head = "| key | type | default | allowed | searchable | meaning |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for k in keys:
        allowed = k.allowed.removeprefix("it must be ")  # the errors' words, shorter in a column
        cells = [f"`{k.name}`", f"`{k.type}`", f"`{k.default}`" if k.default else "required", allowed or "-"]
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

    from dpdmd.backbones.registry import shipped_backbones

    space_class = {n: _find(n, SPACE_MODULES) for n in ("SearchSpace", "BackboneSpec", "Param", "ObjectiveSpec",
                                                        "SchedulerSpec", "WandbSpec", "CheckpointSpec")}
    backbones = ", ".join(f"`{b}`" for b in shipped_backbones())
    searchable = set(_find("SEARCHABLE", SPACE_MODULES))
    real_options = _find("RealEvaluatorOptions", REAL_OPTION_MODULES)

    def section(cls, searchable_keys=None):
        return _table(schema_fields(cls, DOCS), searchable_keys)

    documented = {key.split(".")[0] for key in (*DOCS, *ALLOWED)}
    if documented - {real_options.__name__}:
        raise LookupError(f"docs/gen_reference.py documents classes the schema no longer has: "
                          f"{documented - {real_options.__name__}}")
    train_keys = set(TrainConfig.model_fields)
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
        "One entry per backbone a trial may use (`NAME` from " + backbones + ").",
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
