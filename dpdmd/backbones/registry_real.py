"""The diffusers backbones: their names, what each name fixes, and whether their weights are there.

Importing this module registers (without importing diffusers models or loading anything):

========  ===============================================  ==========  =====  ==========================
name      weights (default ``path``: the hub id)           kind        CFG w  notes
========  ===============================================  ==========  =====  ==========================
sd35m     stabilityai/stable-diffusion-3.5-medium          flow (SD3)  3.5    the DP-DMD reference
                                                                              (2.24 B MMDiT-X, 1024 px);
                                                                              its model card samples at
                                                                              w = 4.5, 40 steps
sd35l     stabilityai/stable-diffusion-3.5-large           flow (SD3)  3.5    8.06 B; model card: w = 3.5,
                                                                              28 steps
sd3m      stabilityai/stable-diffusion-3-medium-diffusers  flow (SD3)  7.0    2.03 B; model card: w = 7.0,
                                                                              28 steps
sdxl      stabilityai/stable-diffusion-xl-base-1.0         eps (SDXL)  5.0    2.57 B UNet; diffusers'
                                                                              SDXL default w
========  ===============================================  ==========  =====  ==========================

All four ship a flow / Euler scheduler whose settings (SD3: ``shift`` 3.0; SDXL: the scaled-linear
betas 0.00085..0.012) the backbones read from the weights folder; the table's shift is only the
fallback. The CFG column is the backbone's ``cfg_scale`` when none is given: the trainer passes
``TrainConfig.cfg_scale`` only when it is set (its default, null, keeps the column's value).

`check_weights_dir(path, kind)` says, before anything is loaded, whether a folder holds a
complete diffusers pipeline of the right kind; the backbones call it first and the search-space
validator calls it on every path a search names.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .registry import register_backbone

NO_WEIGHTS_HINT = ("Without weights, `search_spaces/quickstart.yaml` (the built-in `digits-flow` backbone) "
                   "runs on the CPU with nothing to download.")


@dataclass(frozen=True)
class Variant:
    """What a registry name fixes. ``kind``: "sd3" (flow) or "sdxl" (eps)."""

    name: str
    kind: str
    hub_id: str
    cfg_scale: float
    shift: float = 3.0  # flow only: fallback when the scheduler config names none


VARIANTS: dict[str, Variant] = {
    "sd35m": Variant("sd35m", "sd3", "stabilityai/stable-diffusion-3.5-medium", cfg_scale=3.5),
    "sd35l": Variant("sd35l", "sd3", "stabilityai/stable-diffusion-3.5-large", cfg_scale=3.5),
    "sd3m": Variant("sd3m", "sd3", "stabilityai/stable-diffusion-3-medium-diffusers", cfg_scale=7.0),
    "sdxl": Variant("sdxl", "sdxl", "stabilityai/stable-diffusion-xl-base-1.0", cfg_scale=5.0),
}

# kind -> (pipeline class, {subfolder: what it is})
LAYOUTS: dict[str, tuple[str, dict[str, str]]] = {
    "sd3": ("StableDiffusion3Pipeline", {
        "transformer": "the MMDiT transformer", "vae": "the VAE", "scheduler": "the scheduler config",
        "text_encoder": "CLIP-L text encoder", "text_encoder_2": "CLIP-G text encoder",
        "text_encoder_3": "T5-XXL text encoder", "tokenizer": "CLIP-L tokenizer",
        "tokenizer_2": "CLIP-G tokenizer", "tokenizer_3": "T5 tokenizer",
    }),
    "sdxl": ("StableDiffusionXLPipeline", {
        "unet": "the UNet", "vae": "the VAE", "scheduler": "the scheduler config",
        "text_encoder": "CLIP-L text encoder", "text_encoder_2": "CLIP-G text encoder",
        "tokenizer": "CLIP-L tokenizer", "tokenizer_2": "CLIP-G tokenizer",
    }),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model")


def _variant_and_kind(kind: str) -> tuple[Variant | None, str]:
    if kind in VARIANTS:
        return VARIANTS[kind], VARIANTS[kind].kind
    if kind in LAYOUTS:
        return None, kind
    raise ValueError(f"unknown weights kind {kind!r}; use 'sd3', 'sdxl' or one of {', '.join(VARIANTS)}")


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now, or as huggingface_hub read it at import."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _cached_snapshot(repo_id: str) -> Path | None:
    """The Hugging Face cache's snapshot of ``repo_id``, or None; never downloads."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None


def _missing_parts(root: Path, kind: str, *, require_weights: bool) -> list[str]:
    """What a diffusers folder of ``kind`` lacks, one readable item per gap."""
    _, parts = LAYOUTS[kind]
    missing = [] if (root / "model_index.json").is_file() else ["model_index.json"]
    for sub, what in parts.items():
        folder = root / sub
        if not folder.is_dir():
            missing.append(f"{sub}/ ({what})")
        elif sub.startswith("tokenizer"):
            if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
                missing.append(f"{sub}/ has no tokenizer files ({what})")
        elif sub == "scheduler":
            if not (folder / "scheduler_config.json").is_file():
                missing.append("scheduler/scheduler_config.json")
        else:
            if not (folder / "config.json").is_file():
                missing.append(f"{sub}/config.json ({what})")
            if require_weights and not any(f.name.endswith(_WEIGHT_SUFFIXES) for f in folder.iterdir()):
                missing.append(f"{sub}/ weights (*.safetensors or *.bin; {what})")
    return missing


def _check_folder(root: Path, kind: str, label: str, variant: Variant | None, *, require_weights: bool) -> None:
    pipeline, parts = LAYOUTS[kind]
    who = f"backbone {variant.name!r}" if variant else f"a {kind} backbone"
    index = root / "model_index.json"
    found = json.loads(index.read_text()).get("_class_name") if index.is_file() else pipeline
    if found != pipeline:  # checked first: another pipeline's folder lacks our parts, which says less
        raise ValueError(f"{label} holds a {found} (model_index.json), but {who} needs a {pipeline}; "
                         f"point path= at {pipeline} weights or pick the backbone that matches them. "
                         f"{NO_WEIGHTS_HINT}")
    missing = _missing_parts(root, kind, require_weights=require_weights)
    if missing:
        get = (f"`huggingface-cli download {variant.hub_id} --local-dir DIR`" if variant
               else "`huggingface-cli download <repo> --local-dir DIR`")
        raise FileNotFoundError(
            f"{label} is not a complete diffusers {pipeline} folder, which {who} needs; missing: "
            f"{'; '.join(missing)}. It needs model_index.json and the subfolders {', '.join(parts)} "
            f"(get them with {get}, then pass path=DIR). {NO_WEIGHTS_HINT}")


def check_weights_dir(path: str | os.PathLike, kind: str) -> Path | str:
    """Check, without loading anything, that ``path`` holds a complete diffusers pipeline.

    Args:
        path: a local diffusers folder, or a Hugging Face hub id (``"org/name"``).
        kind: "sd3", "sdxl", or a backbone name ("sd35m", "sd35l", "sd3m", "sdxl").
    Returns:
        The local folder to load from (resolved; a hub id gives its Hugging Face cache snapshot when
        that is complete), or the hub id itself when it is not (completely) cached and downloads
        are allowed: ``from_pretrained`` fetches it then.
    Raises:
        FileNotFoundError: the folder does not exist, or lacks model_index.json, a component
            subfolder, a config or weights file (each named in the message); a hub id that is not
            (completely) cached while ``HF_HUB_OFFLINE`` is set.
        ValueError: the folder holds another pipeline class than ``kind`` needs.
    """
    variant, kind = _variant_and_kind(kind)
    text = str(path)
    from ..config import unset_variables

    unset = unset_variables(text)
    if unset:
        raise FileNotFoundError(f"weights path {text} uses ${{{unset[0]}}}, which is not set in the environment; "
                                f"export {unset[0]}=/path/to/weights. {NO_WEIGHTS_HINT}")
    local = Path(os.path.expandvars(text)).expanduser()
    if local.exists():
        if not local.is_dir():
            raise FileNotFoundError(f"weights path {text} is a file; it must be a diffusers pipeline folder "
                                    f"(model_index.json and one subfolder per component). {NO_WEIGHTS_HINT}")
        _check_folder(local, kind, f"weights folder {text}", variant, require_weights=True)
        return local.resolve()
    if _HUB_ID.match(text):
        snapshot = _cached_snapshot(text)
        if snapshot is not None:
            label = f"the cached hub snapshot of {text} ({snapshot})"
            try:  # complete: load from it, no network needed
                _check_folder(snapshot, kind, label, variant, require_weights=True)
                return snapshot
            except FileNotFoundError:
                if _offline():
                    raise
                _check_folder(snapshot, kind, label, variant, require_weights=False)  # from_pretrained completes it
                return text
        if _offline():
            raise FileNotFoundError(
                f"weights {text!r}: no such local folder, and not in the Hugging Face cache while "
                f"HF_HUB_OFFLINE is set, so it cannot be downloaded. Pass path= a local diffusers folder "
                f"(e.g. made by `huggingface-cli download {text} --local-dir DIR` where a network exists). "
                f"{NO_WEIGHTS_HINT}")
        return text
    raise FileNotFoundError(f"weights folder {text} does not exist; pass path= a local diffusers "
                            f"{LAYOUTS[kind][0]} folder or a hub id. {NO_WEIGHTS_HINT}")


for _name, _variant in VARIANTS.items():
    _module = "sd3:SD3Backbone" if _variant.kind == "sd3" else "sdxl:SDXLBackbone"
    register_backbone(_name, f"dpdmd.backbones.{_module}", variant=_name)

__all__ = ["LAYOUTS", "VARIANTS", "Variant", "check_weights_dir"]
