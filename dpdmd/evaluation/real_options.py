"""The options of the real evaluator (`dpdmd.evaluation.real`), parsed and checked without loading
any model.

`parse_options` reads ``eval.evaluator_options`` into a `RealEvaluatorOptions`;
`check_evaluator_paths` lists what is wrong with those options (unknown keys, missing or
incomplete directories, a checkpoint of the wrong model type) without loading any model, so a
search can refuse a bad config before training. The options:

.. code-block:: yaml

    eval:
      evaluator: real
      quality_metric: pickscore      # "auto": pickscore when configured, else the first quality model
      evaluator_options:
        diversity_encoders:          # feature spaces of diversity, in order: the first gives "diversity"
          dinov2: /weights/dinov2-base                # model + preprocessor_config.json in one dir
          clip: /weights/clip-vit-large-patch14
        quality_models:              # each reported under its name; quality_metric picks "quality"
          pickscore:
            processor: /weights/CLIP-ViT-H-14-laion2B-s32B-b79K   # image processor + tokenizer
            model: /weights/PickScore_v1
          clip_score: /weights/clip-vit-large-patch14
        batch_size: 32               # images per forward pass (default 32)
        precision_k: 3               # k of the k-NN precision against the teacher (default 3)
        dtype: float32               # float32 (default) | bfloat16 | float16

Names: ``diversity_encoders`` takes ``dinov2``, ``dinov3`` and ``clip``; ``quality_models`` takes
``pickscore`` and ``clip_score`` (and the reference protocol's other models, below); at least one of each. Every model entry is either one directory
holding the model and its processor files (``save_pretrained`` / ``huggingface-cli download``
layout) or a mapping ``{model: DIR, processor: DIR}``. ``~`` and ``$VARS`` in paths are expanded,
so ``${WEIGHTS}/dinov2-base`` keeps machine paths out of shipped files. A directory used twice
(``clip`` and ``clip_score`` above) is loaded once.

**The reference protocol's other quality models** (`dpdmd.evaluation.quality_models`), each under its
name in ``quality_models``:

.. code-block:: yaml

        quality_models:
          imagereward:               # THUDM/ImageReward + google-bert/bert-base-uncased's tokenizer
            model: /weights/ImageReward              # ImageReward.pt + med_config.json
            processor: /weights/bert-base-uncased
          hpsv21:                    # xswu/HPSv2 + the CLIP-H folder (architecture, tokenizer)
            model: /weights/HPSv2/HPS_v2.1_compressed.pt
            processor: /weights/CLIP-ViT-H-14-laion2B-s32B-b79K
          maniqa: /weights/IQA-PyTorch-Weights/ckpt_koniq10k.pt   # pyiqa (the iqa extra)
          visualquality_r1: /weights/VisualQuality-R1-7B          # final protocol only

``maniqa_kadid``, ``maniqa_pipal`` and ``musiq`` take their pyiqa weight files the same way.
ImageReward's score is normalised to mean 0 and can be negative, so it is reported but cannot be
``quality_metric`` (the fidelity product needs a positive preference score). VisualQuality-R1 is
refused here in a training run's evaluator (``final=False``): it generates text for every image;
the final protocol (`dpdmd.evaluation.final_protocol`) runs it. A no-reference model that gives no score
for an image (VisualQuality-R1's unparsable answer) reports the mean over the scored images and
``<name>_unparsable``, the count of the others (`dpdmd.evaluation.real.RealEvaluator`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .clip import FEATURE_MODEL_TYPES, IMAGE_TEXT_MODEL_TYPES, ClipScore
from .dino import DINOV3_MIN_TRANSFORMERS, MODEL_TYPES as DINO_MODEL_TYPES
from .image_ops import TorchImageProcessor
from .pickscore import PickScore
from .quality_models import QUALITY_MODELS

REAL_EVALUATORS = ("real",)
ENCODER_MODEL_TYPES = {**DINO_MODEL_TYPES, "clip": FEATURE_MODEL_TYPES}
SCORERS = {"pickscore": PickScore, "clip_score": ClipScore}
QUALITY_NAMES = (*SCORERS, *QUALITY_MODELS)  # PickScore / CLIP score: transformers CLIP dirs; the rest: quality_models.py
# where each transformers directory comes from, for the "does not exist" messages
HUB_IDS = {"dinov2": "facebook/dinov2-base", "dinov3": "facebook/dinov3-vitl16-pretrain-lvd1689m",
           "clip": "openai/clip-vit-large-patch14", "clip_score": "openai/clip-vit-large-patch14",
           "pickscore.model": "yuvalkirstain/PickScore_v1",
           "pickscore.processor": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
           "pickscore": "yuvalkirstain/PickScore_v1 (model) and laion/CLIP-ViT-H-14-laion2B-s32B-b79K (processor)"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_OPTION_KEYS = ("diversity_encoders", "quality_models", "batch_size", "dtype", "precision_k")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ModelPaths:
    """One model entry: its directories (expanded) and the option keys that name them."""

    model: str
    processor: str
    model_key: str
    processor_key: str


@dataclass(frozen=True, kw_only=True)
class RealEvaluatorOptions:
    """``eval.evaluator_options`` of the real evaluator (see the module docstring)."""

    diversity_encoders: dict[str, ModelPaths]
    quality_models: dict[str, ModelPaths]
    batch_size: int = 32
    dtype: str = "float32"
    precision_k: int = 3


def parse_options(options: Mapping[str, Any], *, prefix: str = "evaluator_options"
                  ) -> tuple[RealEvaluatorOptions, list[str]]:
    """The options as a `RealEvaluatorOptions` and every problem of their shape.

    The result holds what did parse (bad entries left out, a bad batch_size or dtype at its
    default), so the paths of the good entries can still be checked; use it only when the
    problems are [].
    """
    if not isinstance(options, Mapping):
        problem = f"{prefix}: expected a mapping with keys {', '.join(_OPTION_KEYS)}, got {options!r}"
        return RealEvaluatorOptions(diversity_encoders={}, quality_models={}), [problem]
    problems = [f"{prefix}.{key}: unknown option; allowed: {', '.join(_OPTION_KEYS)}"
                for key in options if key not in _OPTION_KEYS]
    encoders = _parse_models(options.get("diversity_encoders"), f"{prefix}.diversity_encoders",
                             tuple(ENCODER_MODEL_TYPES), "feature encoder for diversity", problems)
    scorers = _parse_models(options.get("quality_models"), f"{prefix}.quality_models",
                            QUALITY_NAMES, "quality model", problems)
    batch_size = options.get("batch_size", RealEvaluatorOptions.batch_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"{prefix}.batch_size: must be a positive integer, got {batch_size!r}")
        batch_size = RealEvaluatorOptions.batch_size
    precision_k = options.get("precision_k", RealEvaluatorOptions.precision_k)
    if isinstance(precision_k, bool) or not isinstance(precision_k, int) or precision_k < 1:
        problems.append(f"{prefix}.precision_k: must be a positive integer (the k-NN neighbour of the "
                        f"precision against the teacher), got {precision_k!r}")
        precision_k = RealEvaluatorOptions.precision_k
    dtype = options.get("dtype", RealEvaluatorOptions.dtype)
    if not isinstance(dtype, str) or dtype not in DTYPES:
        problems.append(f"{prefix}.dtype: {dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
        dtype = RealEvaluatorOptions.dtype
    parsed = RealEvaluatorOptions(diversity_encoders=encoders, quality_models=scorers,
                                  batch_size=batch_size, dtype=dtype, precision_k=precision_k)
    return parsed, problems


def _parse_models(section: Any, key: str, names: tuple[str, ...], what: str,
                  problems: list[str]) -> dict[str, ModelPaths]:
    example = f"{{{names[0]}: /weights/{names[0]}}}"
    if not isinstance(section, Mapping) or not section:
        problems.append(f"{key}: give at least one {what} as a mapping such as {example}, got "
                        f"{section!r}; allowed names: {', '.join(names)}")
        return {}
    parsed = {}
    for name, entry in section.items():
        entry_key = f"{key}.{name}"
        if name not in names:
            problems.append(f"{entry_key}: unknown name; allowed: {', '.join(names)}")
        elif isinstance(entry, (str, os.PathLike)):
            path = _expand(entry)
            parsed[name] = ModelPaths(path, path, entry_key, entry_key)
        elif isinstance(entry, Mapping) and set(entry) == {"model", "processor"} and all(
                isinstance(v, (str, os.PathLike)) for v in entry.values()):
            parsed[name] = ModelPaths(_expand(entry["model"]), _expand(entry["processor"]),
                                      f"{entry_key}.model", f"{entry_key}.processor")
        else:
            problems.append(f"{entry_key}: expected a directory path, or a mapping "
                            f"{{model: DIR, processor: DIR}}, got {entry!r}")
    return parsed


def _expand(path: str | os.PathLike) -> str:
    return os.path.expanduser(os.path.expandvars(os.fspath(path)))


def _quality_problem(quality_metric: str | None, configured: Sequence[str], prefix: str) -> str | None:
    if quality_metric in (None, "auto") or quality_metric in configured:
        return None
    if quality_metric in QUALITY_NAMES:
        return (f"quality_metric {quality_metric!r} needs {prefix}.quality_models."
                f"{quality_metric}; configured quality models: {', '.join(configured) or 'none'}")
    return (f"unknown quality_metric {quality_metric!r} for the real evaluator; allowed: "
            f"{', '.join(QUALITY_NAMES)} (configured: {', '.join(configured) or 'none'})")


def _positive_problem(quality_metric: str | None) -> str | None:
    model = QUALITY_MODELS.get(quality_metric or "")
    if model is None or model.positive:
        return None
    return (f"quality_metric {quality_metric!r}: its score can be negative (ImageReward is normalised to mean 0), "
            "and the real evaluator's quality multiplies the preference score by the fidelity factors, which "
            "only orders sets for a positive score; use pickscore, hpsv21 or clip_score as quality_metric and "
            f"keep {quality_metric} in quality_models, where it is reported")


# --- path checks (no model is loaded) ---
def check_evaluator_paths(options: Mapping[str, Any], *, quality_metric: str | None = None,
                          prefix: str = "evaluator_options", seeds_per_prompt: int | None = None,
                          final: bool = False) -> list[str]:
    """Every problem of the real evaluator's options, one message each naming the option key.

    Checks the shape of the options, then each directory: it exists, holds ``config.json`` of an
    accepted ``model_type`` and weights; the processor directory holds ``preprocessor_config.json``
    and, for quality models, a tokenizer; DINOv3 needs a recent transformers (its image
    processor is applied with torch alone, `dpdmd.evaluation.image_ops.TorchImageProcessor`). Reads only small JSON files. ``quality_metric``, when given, must
    name a configured quality model; ``seeds_per_prompt``, when given, must be enough for the
    precision against the teacher (precision_k + 2). The models of `dpdmd.evaluation.quality_models`
    are checked by their own rules; ``final`` False (a training run's evaluator, run at every rung)
    refuses the final-only ones (VisualQuality-R1). Returns [] when all is well.
    """
    parsed, problems = parse_options(options, prefix=prefix)
    for name, paths in parsed.diversity_encoders.items():
        problems += _check_model_dir(paths, ENCODER_MODEL_TYPES[name], HUB_IDS.get(name))
        problems += _check_processor_dir(paths, tokenizer=False)
    for name, paths in parsed.quality_models.items():
        if name in QUALITY_MODELS:
            if QUALITY_MODELS[name].final_only and not final:
                problems.append(f"{paths.model_key}: {name} is a final evaluation (a 7 B model generating text for "
                                "every image), not for every rung of a search; list it in the final protocol "
                                "(python -m dpdmd.evaluate --protocol reference) and remove it here")
            problems += QUALITY_MODELS[name].check(paths)
            continue
        hub = HUB_IDS.get(f"{name}.model", HUB_IDS.get(name))
        problems += _check_model_dir(paths, IMAGE_TEXT_MODEL_TYPES, hub)
        problems += _check_processor_dir(paths, tokenizer=True, hub_id=HUB_IDS.get(f"{name}.processor", hub))
    quality_problem = _quality_problem(quality_metric, list(parsed.quality_models), prefix)
    quality_problem = quality_problem or _positive_problem(quality_metric)
    problems += [quality_problem] if quality_problem else []
    if seeds_per_prompt is not None and seeds_per_prompt < parsed.precision_k + 2:
        problems.append(f"eval.seeds_per_prompt: {seeds_per_prompt} seeds per prompt, but the real evaluator's "
                        f"teacher_precision with {prefix}.precision_k={parsed.precision_k} needs at least "
                        f"{parsed.precision_k + 2} (k neighbours among the teacher's other seeds); raise "
                        "eval.seeds_per_prompt or lower precision_k")
    return problems


def _check_dir(key: str, path: str, what: str, hub_id: str | None = None) -> str | None:
    from ..config import unset_variables

    unset = unset_variables(path)
    if unset:
        return (f"{key}: {path} does not exist: it uses ${{{unset[0]}}}, which is not set in the environment; "
                f"export {unset[0]}=... ({what})")
    if not os.path.exists(path):
        fetch = f"; download it from {hub_id}" if hub_id else ""
        return f"{key}: {path} does not exist ({what}){fetch}"
    if not os.path.isdir(path):
        return f"{key}: {path} is not a directory ({what})"
    return None


def _check_model_dir(paths: ModelPaths, model_types: Sequence[str], hub_id: str | None = None) -> list[str]:
    key, path = paths.model_key, paths.model
    missing = _check_dir(key, path, "a local transformers directory with config.json", hub_id)
    if missing:
        return [missing]
    problems = []
    config_file = os.path.join(path, "config.json")
    try:
        with open(config_file) as f:
            model_type = json.load(f).get("model_type")
    except FileNotFoundError:
        return [f"{key}: {path} has no config.json; point it at a directory saved by save_pretrained "
                "or downloaded with `huggingface-cli download`"]
    except (OSError, ValueError, AttributeError) as err:
        return [f"{key}: cannot read {config_file} as a JSON object ({err})"]
    if model_type not in model_types:
        problems.append(f"{key}: {config_file} has model_type {model_type!r}, expected one of "
                        f"{', '.join(model_types)}; is this the right checkpoint?")
    elif model_type.startswith("dinov3") and not _importable(f"transformers.models.{model_type}"):
        problems.append(f"{key}: {path} is a DINOv3 checkpoint, which needs transformers >= "
                        f"{DINOV3_MIN_TRANSFORMERS} (installed: {_transformers_version()}); "
                        "upgrade transformers or use a dinov2 encoder")
    if not any(os.path.exists(os.path.join(path, name)) for name in _WEIGHT_FILES):
        problems.append(f"{key}: {path} has no weights (one of {', '.join(_WEIGHT_FILES)})")
    return problems


def _check_processor_dir(paths: ModelPaths, *, tokenizer: bool, hub_id: str | None = None) -> list[str]:
    key, path = paths.processor_key, paths.processor
    if key != paths.model_key:  # {model, processor}: a directory of its own
        missing = _check_dir(key, path, "a local directory with preprocessor_config.json", hub_id)
        if missing:
            return [missing]
    elif not os.path.isdir(path):
        return []  # the model's directory: already reported
    problems = []
    processor, error = _image_processor_dict(path)
    if processor is None:
        problems.append(f"{key}: {path} has no loadable image processor config (preprocessor_config.json, or "
                        f"processor_config.json with an image_processor entry as transformers 5 saves it): {error}")
    else:
        processor_type = str(processor.get("image_processor_type", ""))
        if processor_type.startswith("DINOv3"):  # applied by TorchImageProcessor: no torchvision needed
            try:
                TorchImageProcessor(processor)
            except ValueError as err:
                problems.append(f"{key}: {path}: {err}")
    if tokenizer and not (os.path.exists(os.path.join(path, "tokenizer.json")) or all(
            os.path.exists(os.path.join(path, name)) for name in ("vocab.json", "merges.txt"))):
        problems.append(f"{key}: {path} has no tokenizer (tokenizer.json, or vocab.json and merges.txt)")
    return problems


def _image_processor_dict(path: str) -> tuple[dict | None, str]:
    """The image processor settings as ``AutoImageProcessor.from_pretrained(path)`` finds them
    (transformers' own lookup: the nested ``image_processor`` of processor_config.json first, then
    preprocessor_config.json), read from local files only; (None, why) when there are none."""
    try:
        from transformers.image_processing_base import ImageProcessingMixin
    except ImportError:  # no transformers: the legacy file is what any version reads
        config_file = os.path.join(path, "preprocessor_config.json")
        try:
            with open(config_file) as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            return None, str(err)
        return (data, "") if isinstance(data, dict) else (None, f"{config_file} is not a JSON object")
    try:
        data, _ = ImageProcessingMixin.get_image_processor_dict(path, local_files_only=True)
    except (OSError, ValueError) as err:
        return None, str(err).splitlines()[0]
    return (data, "") if isinstance(data, dict) else (None, "not a JSON object")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _transformers_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return "not installed"
