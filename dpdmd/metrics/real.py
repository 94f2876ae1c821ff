"""The evaluator of the real (diffusers) backbones: DINOv2 / DINOv3 / CLIP diversity, PickScore /
CLIP-score quality (method.md, "Evaluation"), every model loaded from a local directory.

`make_real_evaluator` builds a `RealEvaluator` from ``eval.evaluator_options``;
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

`RealEvaluator.score` reports ``diversity_<encoder>`` for each encoder, ``diversity`` (the first),
each quality model's mean score under its name, ``teacher_precision``, ``spectral``,
``fidelity`` and ``quality``.

**Fidelity against the teacher.** A preference score alone need not fall with pixel noise, blur or
a lost prompt mode (nothing measured that it does), and no real images exist for free-text
prompts; the student's target is the teacher's distribution. So ``quality`` = ``fidelity`` =
the ``quality_metric``'s preference score x ``teacher_precision`` x ``spectral``, "preferred, on
the teacher's manifold, with the teacher's sharpness". ``teacher_precision``: per prompt, the k-NN precision (``precision_k``, default 3) of the student's features
(the first diversity encoder's) against the teacher's own samples of that prompt, seed n judged
against the teacher's other seeds (`dpdmd.metrics.feature_stats.seed_excluded_precision`), so the
teacher's own score is leave-one-out and a student identical to the teacher scores exactly it.
``spectral``: per prompt, the match of the samples' mean high-frequency power with the teacher's
(`dpdmd.metrics.spectrum.spectral_match`, pixel space, the top half of the spectrum), with the
teacher's own sampling noise (2 standard errors of its N seeds) free, so the teacher and a student
identical to it score exactly 1 and an independent set of the teacher's samples 1 unless it
differs by more than that noise; it registers the pixel noise and blur the encoder's features
hardly move with (README, "Evaluation"). The teacher's features and band powers come from `RealEvaluator.teacher_reference_state`, cached with the
teacher's scores (`dpdmd.evaluation.teacher_reference`); `score` refuses to run without them.
It needs N >= precision_k + 2 seeds per prompt. The preference score must be positive for the
product to order sets (CLIP score is clamped at 0; PickScore of real images is about 0.8).

Images arrive as float tensors in [0, 1] and are converted to 8-bit RGB PIL images (grey repeated
to RGB) before the models' own image processors see them: that is exactly what a saved PNG holds,
so scores match the reference's scripts run on saved samples, and the processors behave the same
with transformers' PIL and torchvision backends. DINOv3's image processor (torchvision-only in
transformers 5) is applied with torch alone (`dpdmd.metrics.image_ops.TorchImageProcessor`, equal
to it where torchvision is installed).

**The reference protocol's other quality models** (`dpdmd.metrics.quality_models`), each under its
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
the final protocol (`dpdmd.metrics.protocol`) runs it. A no-reference model that gives no score
for an image (VisualQuality-R1's unparsable answer) reports the mean over the scored images and
``<name>_unparsable``, the count of the others.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from ..config import ConfigError
from .base import Evaluator, check_grid
from .clip import FEATURE_MODEL_TYPES, IMAGE_TEXT_MODEL_TYPES, ClipFeatures, ClipScore
from .dino import DINOV3_MIN_TRANSFORMERS, MODEL_TYPES as DINO_MODEL_TYPES, DinoFeatures
from .feature_stats import seed_excluded_precision
from .spectrum import band_power, match_per_prompt
from .pickscore import PickScore
from .image_ops import TorchImageProcessor
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


class ImageEncoder(Protocol):
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor: ...  # (B, D)


class ImageTextScorer(ImageEncoder, Protocol):
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor: ...  # (T, D)

    def scores(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor: ...  # (P, N)


# --- options ---
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
    and, for quality models, a tokenizer; DINOv3 needs a recent transformers (and torchvision for
    its own image processor). Reads only small JSON files. ``quality_metric``, when given, must
    name a configured quality model; ``seeds_per_prompt``, when given, must be enough for the
    precision against the teacher (precision_k + 2). The models of `dpdmd.metrics.quality_models`
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


# --- loading ---
class _Loader:
    """Loads models and processors once per directory, onto one device and dtype."""

    def __init__(self, device: torch.device | str, dtype: torch.dtype):
        self.device, self.dtype = torch.device(device), dtype
        self._cache: dict[tuple[str, str], Any] = {}

    def _once(self, path: str, kind: str, build):
        key = (os.path.realpath(path), kind)
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def model(self, paths: ModelPaths):
        import transformers

        with open(os.path.join(paths.model, "config.json")) as f:
            model_type = json.load(f)["model_type"]
        cls = {"clip": transformers.CLIPModel,
               "clip_vision_model": transformers.CLIPVisionModelWithProjection}.get(model_type, transformers.AutoModel)

        def build():
            model, info = cls.from_pretrained(paths.model, output_loading_info=True)
            missing = sorted(info.get("missing_keys", ()))
            if missing:  # a wrong checkpoint would otherwise score with random weights
                raise ValueError(
                    f"{paths.model_key}: {paths.model} lacks {len(missing)} weights of "
                    f"{type(model).__name__} (e.g. {', '.join(missing[:3])}); is it the right checkpoint?")
            return model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)

        return self._once(paths.model, cls.__name__, build)

    def image_processor(self, paths: ModelPaths):
        from transformers import AutoImageProcessor

        def build():
            processor, _ = _image_processor_dict(paths.processor)
            if processor and str(processor.get("image_processor_type", "")).startswith("DINOv3"):
                return TorchImageProcessor(processor)  # the same pixels as DINOv3's torchvision processor
            try:
                return AutoImageProcessor.from_pretrained(paths.processor)
            except ImportError as err:
                raise ImportError(f"{paths.processor_key}: the image processor of {paths.processor} "
                                  f"cannot load: {err}") from err

        return self._once(paths.processor, "image_processor", build)

    def tokenizer(self, paths: ModelPaths):
        from transformers import AutoTokenizer

        return self._once(paths.processor, "tokenizer", lambda: AutoTokenizer.from_pretrained(paths.processor))


def make_real_evaluator(name: str, *, device: torch.device | str, quality_metric: str | None = None,
                        final: bool = False, **options: Any) -> RealEvaluator:
    """The `RealEvaluator` that ``options`` (``eval.evaluator_options``) describe, on ``device``.

    Raises:
        ValueError: an unknown ``name``; `dpdmd.ConfigError` (a ValueError) listing every problem
            `check_evaluator_paths` finds, including an unknown or unconfigured ``quality_metric``.
    """
    if name not in REAL_EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; allowed: digits, {', '.join(REAL_EVALUATORS)}")
    quality_metric = None if quality_metric == "auto" else quality_metric
    problems = check_evaluator_paths(options, quality_metric=quality_metric, final=final)
    if problems:
        raise ConfigError(problems)
    parsed, _ = parse_options(options)  # no problems: check_evaluator_paths found none
    load = _Loader(device, DTYPES[parsed.dtype])
    encoders = {}
    for enc_name, paths in parsed.diversity_encoders.items():
        wrapper = ClipFeatures if enc_name == "clip" else DinoFeatures
        encoders[enc_name] = wrapper(load.model(paths), load.image_processor(paths))
    scorers = {score_name: QUALITY_MODELS[score_name].load(paths, load.device, load.dtype)
               if score_name in QUALITY_MODELS else
               SCORERS[score_name](load.model(paths), load.image_processor(paths), load.tokenizer(paths))
               for score_name, paths in parsed.quality_models.items()}
    return RealEvaluator(encoders=encoders, scorers=scorers, quality_metric=quality_metric,
                         batch_size=parsed.batch_size, precision_k=parsed.precision_k)


# --- the evaluator ---
class RealEvaluator(Evaluator):
    """Diversity in one or more feature spaces; quality = a preference score x fidelity to the teacher.

    `score` returns ``diversity_<encoder>`` for every encoder (`Evaluator.diversity` of its
    features), ``diversity`` (a copy of the first encoder's), the mean over all P * N images of
    every scorer's per-image score under its name, ``teacher_precision`` (the mean over prompts of
    the seed-excluded k-NN precision of the first encoder's features against the teacher's, see
    the module docstring), ``spectral`` (the mean over prompts of the high-frequency power's match
    with the teacher's), ``fidelity`` = the ``quality_metric``'s score x ``teacher_precision`` x
    ``spectral``, and ``quality`` (a copy of ``fidelity``). It needs the teacher's reference first:
    ``set_teacher_reference(teacher_reference_state(teacher_images, prompts))``.

    Args:
        encoders: name -> image encoder (`DinoFeatures`, `ClipFeatures`), in order; non-empty.
        scorers: name -> image-text scorer (`PickScore`, `ClipScore`); non-empty.
        quality_metric: the scorer whose score is the preference factor of ``quality``; None:
            "pickscore" when present, else the first scorer.
        batch_size: images per forward pass.
        precision_k: the k-NN neighbour of ``teacher_precision``; N >= k + 2 seeds are needed.
    """

    uses_teacher_reference = True

    def __init__(self, *, encoders: Mapping[str, ImageEncoder], scorers: Mapping[str, ImageTextScorer],
                 quality_metric: str | None = None, batch_size: int = 32, precision_k: int = 3):
        if not encoders or not scorers:
            raise ValueError("RealEvaluator needs at least one encoder (diversity) and one scorer (quality), "
                             f"got encoders {list(encoders)} and scorers {list(scorers)}")
        if quality_metric is None:
            positive = [name for name in scorers if name not in QUALITY_MODELS or QUALITY_MODELS[name].positive]
            quality_metric = "pickscore" if "pickscore" in scorers else next(iter(positive or scorers))
        if quality_metric not in scorers:
            raise ValueError(f"unknown quality_metric {quality_metric!r} for this RealEvaluator; "
                             f"allowed: {', '.join(scorers)}")
        for name, value in (("batch_size", batch_size), ("precision_k", precision_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.encoders, self.scorers = dict(encoders), dict(scorers)
        self.preference_key = quality_metric
        self.quality_key = "fidelity"
        self.batch_size = batch_size
        self.precision_k = precision_k
        self._reference: dict | None = None

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The first encoder's features (B, D) float32 of images (B, C, H, W) in [0, 1], C = 1 or 3."""
        return self._embed(next(iter(self.encoders.values())), to_pil_images(images))

    def teacher_reference_state(self, images: torch.Tensor, prompts: Sequence[str]) -> dict:
        """``{"encoder", "prompts", "features", "band_power"}``: the first encoder's name and its
        features (P, N, D) float32 of the teacher's images (P, N, C, H, W), the prompts in order,
        and the images' `band_power` (P, N) float64 (the pixel-level reference of ``spectral``)."""
        p, n = check_grid(images, prompts)
        return {"encoder": next(iter(self.encoders)), "prompts": list(prompts),
                "features": self.grid_features(images, prompts).contiguous(),
                "band_power": band_power(images.reshape(p * n, *images.shape[2:])).reshape(p, n)}

    def set_teacher_reference(self, state: dict | None) -> None:
        """Read later students against ``state`` (from `teacher_reference_state`)."""
        encoder = next(iter(self.encoders))
        if not isinstance(state, Mapping) or not {"encoder", "prompts", "features", "band_power"} <= set(state):
            held = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"a teacher reference is a dict with encoder, prompts, features and band_power "
                             f"(RealEvaluator.teacher_reference_state), got {held}; recompute it (delete "
                             "the cached teacher-metrics entry of an older version)")
        if state["encoder"] != encoder:
            raise ValueError(f"the teacher reference holds {state['encoder']!r} features but this "
                             f"evaluator's first diversity encoder is {encoder!r}; recompute the reference")
        self._reference = dict(state)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, float]:
        """Metrics of images (P, N, C, H, W) in [0, 1], N seeds for each of the P prompts."""
        p, n = check_grid(images, prompts)
        reference = self._checked_reference(prompts, n)
        pil = to_pil_images(images.reshape(p * n, *images.shape[2:]))  # row-major: prompt, then seed
        metrics, first = {}, None
        for name, encoder in self.encoders.items():
            feats = self._embed(encoder, pil).reshape(p, n, -1)
            first = feats if first is None else first
            metrics[f"diversity_{name}"] = self.diversity(feats)
        metrics = {"diversity": metrics[f"diversity_{next(iter(self.encoders))}"], **metrics}
        for name, scorer in self.scorers.items():
            scores = self._scores(scorer, pil, list(prompts), n)  # (P, N); NaN: no score (an unparsable answer)
            unscored = int(torch.isnan(scores).sum())
            metrics[name] = float(scores.nanmean()) if unscored < scores.numel() else float("nan")
            if getattr(scorer, "name", None) == "visualquality_r1" or unscored:
                metrics[f"{name}_unparsable"] = float(unscored)
        metrics["teacher_precision"] = sum(seed_excluded_precision(reference[i], first[i], k=self.precision_k)
                                           for i in range(p)) / p
        metrics["spectral"] = match_per_prompt(self._reference["band_power"], images)
        metrics["fidelity"] = metrics[self.preference_key] * metrics["teacher_precision"] * metrics["spectral"]
        return self.with_quality(metrics)

    def _checked_reference(self, prompts: Sequence[str], n: int) -> torch.Tensor:
        """The teacher's features (P, N, D) for exactly these prompts and N, or a teaching error."""
        if self._reference is None:
            raise ValueError("RealEvaluator.score needs the teacher's reference (quality is fidelity to "
                             "the teacher's samples): call set_teacher_reference(teacher_reference_state("
                             "teacher_images, prompts)); dpdmd.evaluation.teacher_reference does it from the cache")
        if list(prompts) != list(self._reference["prompts"]):
            raise ValueError(f"the teacher reference was computed on prompts {self._reference['prompts']}, "
                             f"not {list(prompts)}; score the evaluation prompts it was computed on")
        features = self._reference["features"]
        if features.shape[1] != n:
            raise ValueError(f"the teacher reference has {features.shape[1]} seeds per prompt, the images {n}; "
                             "score the same seeds 0..N-1 as the teacher")
        if n < self.precision_k + 2:
            raise ValueError(f"teacher_precision with precision_k={self.precision_k} needs at least "
                             f"{self.precision_k + 2} seeds per prompt (k neighbours among the other "
                             f"seeds), got {n}; raise eval.seeds_per_prompt or lower precision_k")
        return features

    def _scores(self, scorer, pil: list[Image.Image], prompts: list[str], n: int) -> torch.Tensor:
        """Per-image scores (P, N) float64 of the P * N images (row-major) with their prompts."""
        per_image = [prompt for prompt in prompts for _ in range(n)]
        b = self.batch_size
        if hasattr(scorer, "score_pairs"):  # ImageReward: the prompt attends to the image
            flat = torch.cat([scorer.score_pairs(pil[i:i + b], per_image[i:i + b]) for i in range(0, len(pil), b)])
        elif hasattr(scorer, "score_images"):  # no-reference quality
            flat = torch.cat([scorer.score_images(pil[i:i + b]) for i in range(0, len(pil), b)])
        else:  # embeddings and a score of their cosine (PickScore, CLIP score, HPSv2.1)
            embeds = self._embed(scorer, pil).reshape(len(prompts), n, -1)
            return scorer.scores(embeds, scorer.embed_texts(prompts)).double()
        return flat.double().reshape(len(prompts), n)

    def _embed(self, encoder: ImageEncoder, images: list[Image.Image]) -> torch.Tensor:
        chunks = [encoder.embed_images(images[i:i + self.batch_size])
                  for i in range(0, len(images), self.batch_size)]
        return torch.cat(chunks)


def to_pil_images(images: torch.Tensor) -> list[Image.Image]:
    """Images (B, C, H, W) float in [0, 1], C = 1 or 3, as B 8-bit RGB PIL images (as saved PNGs)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"expected images (B, C, H, W) with C = 1 or 3 channels, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}; divide uint8 by 255")
    pixels = images.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu()
    pixels = pixels.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()
    return [Image.fromarray(image) for image in pixels]
