"""The machinery of the project's one schema: pydantic models that refuse unknown keys and wrong
types, and their errors as the sentences the command lines print.

`Schema` is the base of every settings model (`dpdmd.TrainConfig`, `dpdmd.EvalConfig`, the search
space's sections in `tune.space.schema`): strict types (no "5" for 5, no true for 1), finite
numbers, ``extra="forbid"``. `knob` declares a field with its documentation, its range and what
the rest of the project reads from it (its role in the method, its vanilla-DMD value, its plot
label), kept in the field's ``json_schema_extra``. `problems_of` turns a pydantic
``ValidationError`` into one line per problem, ``KEY: what is wrong; what is allowed``, the key a
dotted path of the file (``backbones.sd35m.train.lr``, ``eval.prompts[1]``); `fail` raises such
problems from a validator, and `allowed_text` says what a field allows (the messages and the
generated reference page, `docs/gen_reference.py`, share it).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticUndefined

#: The error type of the problems the validators raise (`fail`): the message is the whole sentence.
PROBLEM = "problem"
_CONSTRAINTS = ("ge", "gt", "le", "lt")


class ConfigError(ValueError):
    """Bad configuration. ``problems`` holds one message per bad key."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + ("\n  " if len(problems) > 1 else "") + "\n  ".join(problems))


class Schema(BaseModel):
    """A settings model: strict types, finite numbers, unknown keys refused. Built with keyword
    arguments, a bad value is a `ConfigError` listing every problem (``model_validate`` raises
    pydantic's ``ValidationError``: `problems_of` words it)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, /, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(problems_of(err, type(self))) from None

    # pydantic's own mark (RootModel sets it too): without it pydantic would call this __init__ to
    # validate a nested section, and its ConfigError would hide the section's keys.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


def knob(default: Any = PydanticUndefined, *, doc: str, default_factory=None, allowed: str | None = None,
         role: str | None = None, vanilla: Any = None, label: str | None = None, **constraints) -> Any:
    """A field with what the project needs to know about it.

    Args:
        doc: one sentence, with the unit: the flag's help, the reference page's meaning.
        allowed: what is allowed, in words, where the constraints alone say too little
            (e.g. "it must be >= 0 (0 is vanilla DMD)").
        role: what the knob does in the method (e.g. `dpdmd.config.NEEDS_ANCHOR`).
        vanilla: the value at which DP-DMD is vanilla DMD (the search's baseline trials use it).
        label: its short name on plots ("K", "λ").
        constraints: pydantic's ``ge``, ``gt``, ``le``, ``lt``, ``pattern``, ``max_length``.
    """
    extra = {key: value for key, value in (("allowed", allowed), ("role", role), ("vanilla", vanilla),
                                           ("label", label)) if value is not None}
    if default_factory is not None:
        return Field(default_factory=default_factory, description=doc, json_schema_extra=extra or None, **constraints)
    return Field(default, description=doc, json_schema_extra=extra or None, **constraints)


def field_extra(field: FieldInfo) -> dict:
    """The `knob` metadata of a field ({} for a plain one)."""
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def problem(loc: tuple, message: str, value: Any = None) -> InitErrorDetails:
    """One problem at ``loc`` (relative to the model validating), ``message`` the sentence after the key."""
    return InitErrorDetails(type=PydanticCustomError(PROBLEM, "{message}", {"message": message}), loc=loc, input=value)


def fail(problems: Iterable[tuple[tuple, str]], title: str = "settings") -> None:
    """Raise every ``(loc, message)`` at once (nothing when there is none)."""
    details = [problem(loc, message) for loc, message in problems]
    if details:
        raise ValidationError.from_exception_data(title, details)


def line_errors(err: ValidationError) -> list[InitErrorDetails]:
    """``err``'s errors as they can be raised again with more (a model validator adding its own)."""
    return [InitErrorDetails(type=PydanticCustomError(e["type"], "{_msg}", {**(e.get("ctx") or {}), "_msg": e["msg"]}),
                             loc=e["loc"], input=e["input"]) for e in err.errors()]


# --- the sentences -----------------------------------------------------------------------------

def key_of(loc: Iterable) -> str:
    """``("eval", "prompts", 1)`` -> ``"eval.prompts[1]"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _inner(annotation):
    """The type a field holds, without ``| None`` and ``Annotated``."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _inner(args[0])
    return annotation


def _field_at(model: type[BaseModel], loc: tuple) -> tuple[type[BaseModel] | None, str | None]:
    """The model holding the field that ``loc`` ends in, and the field's name (None, None where
    ``loc`` leaves the models: a key of a plain mapping)."""
    current, holder, name = model, None, None
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                return current, None
            holder, name, current = current, part, _inner(current.model_fields[part].annotation)
        elif typing.get_origin(current) in (dict, list):
            holder, name, current = None, None, _inner(typing.get_args(current)[-1])
        else:
            return None, None
    return holder, name


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc``."""
    current = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                return None
            current = _inner(current.model_fields[part].annotation)
        elif typing.get_origin(current) in (dict, list):
            current = _inner(typing.get_args(current)[-1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def public_fields(model: type[BaseModel]) -> list[str]:
    """The keys a file may give for ``model`` (fields excluded from dumps are set by the loader)."""
    return [name for name, f in model.model_fields.items() if not f.exclude]


def allowed_text(model: type[BaseModel], name: str) -> str:
    """What field ``name`` of ``model`` allows, in words: its `knob` ``allowed``, else its
    constraints ("it must be in [0, 1)", "an integer in 1..10000", "one of: a, b"); "" if nothing."""
    field = model.model_fields[name]
    extra = field_extra(field)
    if extra.get("allowed"):
        return extra["allowed"]
    bounds = {kind: getattr(m, kind) for m in field.metadata for kind in _CONSTRAINTS if hasattr(m, kind)}
    inner, optional = _inner(field.annotation), type(None) in typing.get_args(field.annotation)
    text = ""
    if typing.get_origin(inner) is typing.Literal:
        text = "one of: " + ", ".join(map(str, typing.get_args(inner)))
    elif inner is int and "ge" in bounds and "le" in bounds:
        text = f"it must be an integer in {bounds['ge']}..{bounds['le']}"
    elif bounds:
        low = [(f"{bounds[k]:g}", k) for k in ("ge", "gt") if k in bounds]
        high = [(f"{bounds[k]:g}", k) for k in ("le", "lt") if k in bounds]
        if low and high:
            text = f"it must be in {'[' if low[0][1] == 'ge' else '('}{low[0][0]}, {high[0][0]}{']' if high[0][1] == 'le' else ')'}"
        else:
            (value, kind), = low or high
            text = f"it must be {dict(ge='>=', gt='>', le='<=', lt='<')[kind]} {value}"
    return text + (", or null" if text and optional else "")


_TYPES = {"int_type": "int", "int_parsing": "int", "int_from_float": "int", "float_type": "float",
          "float_parsing": "float", "bool_type": "bool", "bool_parsing": "bool", "string_type": "str"}


def _sentence(error: dict, model: type[BaseModel]) -> str:
    """One error of ``model``'s validation as ``what is wrong; what is allowed``."""
    kind, loc, value, ctx = error["type"], tuple(error["loc"]), error["input"], error.get("ctx") or {}
    holder, name = _field_at(model, loc)
    allowed = allowed_text(holder, name) if holder is not None and name is not None else ""
    if kind == PROBLEM:
        return ctx["message"]
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        keys = ", ".join(public_fields(parent)) if parent is not None else "none"
        return f"unknown key; allowed keys are {keys}"
    if kind == "missing":
        return "required" + (f"; {allowed}" if allowed else "")
    if kind in _TYPES:
        return f"expected {_TYPES[kind]}, got {value!r} ({type(value).__name__})"
    if kind == "list_type":
        return f"expected a list, got {value!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        what = f" of {ctx['class_name']} settings" if "class_name" in ctx else ""
        return f"expected a mapping{what}, got {value!r}"
    if kind == "finite_number":
        return f"{value!r} is not allowed; give a finite number"
    if kind == "literal_error":
        return f"{value!r} is unknown; allowed: " + ", ".join(ctx["expected"].replace("'", "").replace(" or ", ", ").split(", "))
    if kind == "too_long":
        return f"{ctx['actual_length']} given; " + (allowed or f"at most {ctx['max_length']}")
    return f"{value!r} is not allowed; {allowed or error['msg']}"


def problems_of(err: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> list[str]:
    """Every problem of ``err`` (from validating ``model``) as ``KEY: sentence``, in order, once each.
    ``prefix``: where ``model`` sits in the file (its keys are named from there)."""
    out = []
    for error in err.errors():
        loc = tuple(error["loc"])
        key = key_of(prefix + loc)
        text = _sentence(error, model)
        out.append(f"{key}: {text}" if key else text)
    return list(dict.fromkeys(out))
