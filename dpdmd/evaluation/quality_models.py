"""The quality models of the reference protocol that are not plain transformers CLIP directories:
ImageReward, HPSv2.1, VisualQuality-R1 and pyiqa's no-reference models (MANIQA, MUSIQ).

Each `QualityModel` says how its entry in ``eval.evaluator_options.quality_models`` is checked
(small files only, before any model loads: a missing path is named with the hub id to fetch it
from) and loaded, what kind of scorer it gives, and whether it may run at every rung of a search:

- ``pairs``: `score_pairs(images, prompts)` (ImageReward: the text cross-attends to the image);
- ``image_text``: image and text embeddings and a score from their cosine (HPSv2.1, like PickScore);
- ``images``: `score_images(images)`, no prompt (VisualQuality-R1, pyiqa's models); NaN = no score.

``final_only`` models (VisualQuality-R1: a 7 B model generating text per image) are refused in a
training run's evaluator and accepted by the final protocol (`dpdmd.evaluation.final_protocol`).
``positive``: the score is > 0 for any image, so it can be the preference factor of the real
evaluator's ``fidelity`` product (ImageReward, normalised to mean 0, is not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import hps, imagereward, iqa, visualquality_r1


@dataclass(frozen=True)
class QualityModel:
    """One quality model: its entry's form, checks, loader and properties (see the module docstring)."""

    kind: str  # "pairs" | "image_text" | "images"
    hub_id: str
    entry: str  # the form of its entry in quality_models, for error messages and docs
    check: Callable[[Any], list[str]]  # ModelPaths -> problems
    load: Callable[[Any, torch.device, torch.dtype], Any]  # (ModelPaths, device, dtype) -> scorer
    extra: str | None = None  # the pyproject extra that installs what it needs
    final_only: bool = False
    positive: bool = True


def _iqa(name: str) -> QualityModel:
    return QualityModel(
        kind="images", hub_id=f"{iqa.WEIGHTS_HUB_ID} ({iqa.PYIQA_MODELS[name][1]})", entry="FILE (the weights)",
        check=lambda p: iqa.check_pyiqa_weights(name, p.model, p.model_key),
        load=lambda p, device, dtype: iqa.load_pyiqa(name, p.model, device=device), extra="iqa")


QUALITY_MODELS: dict[str, QualityModel] = {
    "imagereward": QualityModel(
        kind="pairs", hub_id=f"{imagereward.HUB_ID} + {imagereward.TOKENIZER_HUB_ID}",
        entry="{model: DIR with ImageReward.pt and med_config.json, processor: BERT tokenizer DIR}",
        check=lambda p: imagereward.check_imagereward_dirs(p.model, p.processor, p.model_key, p.processor_key),
        load=lambda p, device, dtype: imagereward.load_imagereward(p.model, p.processor, device=device, dtype=dtype),
        positive=False),
    "hpsv21": QualityModel(
        kind="image_text", hub_id=f"{hps.HUB_ID} ({hps.CHECKPOINT_FILE}) + {hps.PROCESSOR_HUB_ID}",
        entry="{model: HPS_v2.1_compressed.pt, processor: CLIP-ViT-H-14 DIR}",
        check=lambda p: hps.check_hps_paths(p.model, p.processor, p.model_key, p.processor_key),
        load=lambda p, device, dtype: hps.load_hps(p.model, p.processor, device=device, dtype=dtype)),
    "visualquality_r1": QualityModel(
        kind="images", hub_id=visualquality_r1.HUB_ID, entry="DIR (the model folder)",
        check=lambda p: _check_vq_dir(p.model, p.model_key),
        load=lambda p, device, dtype: visualquality_r1.load_visualquality_r1(p.model, device=device, dtype=dtype),
        final_only=True),
    **{name: _iqa(name) for name in iqa.PYIQA_MODELS},
}


def _check_vq_dir(path: str, key: str) -> list[str]:
    import json
    import os

    fetch = f"download {visualquality_r1.HUB_ID} (`huggingface-cli download {visualquality_r1.HUB_ID} --local-dir DIR`)"
    if not os.path.isdir(path):
        return [f"{key}: {path} is not a directory; {fetch}"]
    try:
        with open(os.path.join(path, "config.json")) as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        return [f"{key}: {path} has no readable config.json ({err}); {fetch}"]
    problems = []
    if model_type != "qwen2_5_vl":
        problems.append(f"{key}: {path}/config.json has model_type {model_type!r}, expected 'qwen2_5_vl' "
                        f"({visualquality_r1.HUB_ID})")
    for name in ("preprocessor_config.json",):
        if not os.path.isfile(os.path.join(path, name)):
            problems.append(f"{key}: {path} has no {name} ({visualquality_r1.HUB_ID})")
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        problems.append(f"{key}: {path} has no tokenizer.json ({visualquality_r1.HUB_ID})")
    if not any(os.path.isfile(os.path.join(path, n)) for n in ("model.safetensors", "model.safetensors.index.json")):
        problems.append(f"{key}: {path} has no weights (model.safetensors or its index; {visualquality_r1.HUB_ID})")
    from importlib.metadata import version

    if int(version("transformers").split(".")[0]) < 5:  # the mm_token_type_ids of transformers 5's Qwen2.5-VL
        problems.append(f"{key}: VisualQuality-R1 here needs transformers >= 5 (installed: {version('transformers')})")
    return problems
