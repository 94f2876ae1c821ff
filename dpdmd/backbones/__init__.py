"""Backbones by name. ``get_backbone("digits-flow", cfg_scale=3.5)`` builds one.

Built in (CPU, no downloads): ``digits-flow`` (rectified flow, an SD3-style transformer) and
``digits-eps`` (eps prediction, an SDXL-style UNet). The diffusers backbones ``sd35m``,
``sd35l``, ``sd3m`` (flow) and ``sdxl`` (eps) load from a local diffusers directory.
"""

from __future__ import annotations

from .base import Backbone, Embeddings, cat_embeddings, repeat_embeddings
from .registry import available_backbones, backbone_class, backbone_options, get_backbone, register_backbone

try:  # the diffusers backbones register themselves when their module exists
    from . import registry_real  # noqa: F401
except ModuleNotFoundError as err:
    if err.name != "dpdmd.backbones.registry_real":
        raise

__all__ = ["Backbone", "Embeddings", "available_backbones", "backbone_class", "backbone_options", "cat_embeddings",
           "get_backbone", "register_backbone", "repeat_embeddings"]
