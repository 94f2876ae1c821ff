"""Command-line flags generated from `TrainConfig`, so every hyperparameter has a flag with the
same name, type and documentation (the field's ``doc``) as the config key (``anchor_k`` <-> ``--anchor-k``)."""

from __future__ import annotations

import argparse
import typing

from ..config import EvalConfig, TrainConfig

_SKIP = {"eval", "backbone_options", "evaluator_options"}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of TrainConfig and of its EvalConfig (prefixed ``--eval-``)."""
    for cls, prefix in ((TrainConfig, ""), (EvalConfig, "eval_")):
        group = parser.add_argument_group("training" if not prefix else "evaluation")
        for name, f in cls.model_fields.items():
            if name in _SKIP:
                continue
            flag = "--" + (prefix + name).replace("_", "-")
            tp = f.annotation
            args = typing.get_args(tp)
            base = next((a for a in args if a is not type(None)), tp) if args else tp
            if typing.get_origin(tp) is typing.Literal:  # the schema says what is allowed
                base = str
            help_text = f"{f.description} (default: {f.get_default(call_default_factory=True)})".replace("%", "%%")
            kwargs = {"dest": prefix + name, "default": None, "help": help_text}
            if tp is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            elif typing.get_origin(tp) is list:
                group.add_argument(flag, nargs="+", metavar="PROMPT", **kwargs)
            else:
                group.add_argument(flag, type=base, **kwargs)


def flag_of(key: str) -> str:
    """The flag of a config key: ``"eval.prompts"`` -> ``"--eval-prompts"``."""
    return "--" + key.replace(".", "-").replace("_", "-")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The flags the user gave, as a config mapping (``eval_x`` -> ``{"eval": {"x": ...}}``)."""
    out: dict = {}
    for key, value in vars(args).items():
        if value is None:
            continue
        if key.startswith("eval_") and key[5:] in EvalConfig.model_fields:
            out.setdefault("eval", {})[key[5:]] = value
        elif key in TrainConfig.model_fields:
            out[key] = value
    return out
