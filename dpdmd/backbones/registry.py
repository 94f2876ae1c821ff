"""The registry of backbones: name -> the class that builds it and the settings the name fixes."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from .base import Backbone

# name -> "module:factory" (imported lazily: the diffusers backbones pull in large modules)
_REGISTRY: dict[str, tuple[str, dict]] = {
    "digits-flow": ("dpdmd.backbones.digits:DigitsBackbone", {"kind": "flow"}),
    "digits-eps": ("dpdmd.backbones.digits:DigitsBackbone", {"kind": "eps"}),
}


def register_backbone(name: str, target: str, **fixed) -> None:
    """Register ``name`` -> ``"package.module:Class"`` with fixed constructor arguments."""
    _REGISTRY[name] = (target, fixed)


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def shipped_backbones() -> list[str]:
    """The backbones this package ships (its own classes), not those a user or a test registered."""
    return sorted(name for name, (target, _) in _REGISTRY.items() if target.startswith("dpdmd."))


def backbone_class(name: str) -> tuple[Callable[..., Backbone], dict]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    target, fixed = _REGISTRY[name]
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr), fixed


def backbone_options(name: str) -> list[str]:
    """The constructor settings a backbone accepts (those fixed by its name excluded)."""
    cls, fixed = backbone_class(name)
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", *fixed)]


def get_backbone(name: str, **options) -> Backbone:
    """Build backbone ``name``; unknown options are a ValueError listing the accepted ones."""
    cls, fixed = backbone_class(name)
    allowed = backbone_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"backbone {name!r} does not take {', '.join(unknown)}; it accepts: {', '.join(allowed)}")
    return cls(**fixed, **options)
