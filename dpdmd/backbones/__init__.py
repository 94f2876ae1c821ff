"""Backbones by name. ``get_backbone("digits-flow", cfg_scale=3.5)`` builds one.

Built in (CPU, no downloads): ``digits-flow`` (rectified flow, an SD3-style transformer) and
``digits-eps`` (eps prediction, an SDXL-style UNet). The diffusers backbones ``sd35m``,
``sd35l``, ``sd3m`` (flow) and ``sdxl`` (eps) load from a local diffusers directory.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from .base import Backbone, Embeddings, cat_embeddings, repeat_embeddings

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


try:  # the diffusers backbones register themselves when their module exists
    importlib.import_module("dpdmd.backbones.registry_real")
except ModuleNotFoundError as err:
    if err.name != "dpdmd.backbones.registry_real":
        raise

__all__ = ["Backbone", "Embeddings", "available_backbones", "backbone_options", "cat_embeddings",
           "get_backbone", "register_backbone", "repeat_embeddings"]
