"""The evaluator of the real (diffusers) backbones: DINOv2 / DINOv3 / CLIP diversity, PickScore /
CLIP-score quality (method.md, "Evaluation"), every model loaded from a local directory.

`make_real_evaluator` builds a `RealEvaluator` from ``eval.evaluator_options`` (their schema and
checks: `dpdmd.evaluation.real_options`).

`RealEvaluator.score` reports ``diversity_<encoder>`` for each encoder, ``diversity`` (the first),
each quality model's mean score under its name (with ``<name>_unparsable``, the count of images a
no-reference model gave no score: VisualQuality-R1's unparsable answers), ``teacher_precision``,
``spectral``, ``fidelity`` and ``quality``. Besides PickScore and CLIP score, the quality models
of `dpdmd.evaluation.quality_models` (ImageReward, HPSv2.1, VisualQuality-R1 in the final
protocol only, pyiqa's MANIQA / MUSIQ) are loaded by their own loaders.

**Fidelity against the teacher.** A preference score alone need not fall with pixel noise, blur or
a lost prompt mode (nothing measured that it does), and no real images exist for free-text
prompts; the student's target is the teacher's distribution. So ``quality`` = ``fidelity`` =
the ``quality_metric``'s preference score x ``teacher_precision`` x ``spectral``, "preferred, on
the teacher's manifold, with the teacher's sharpness". ``teacher_precision``: per prompt, the k-NN precision (``precision_k``, default 3) of the student's features
(the first diversity encoder's) against the teacher's own samples of that prompt, seed n judged
against the teacher's other seeds (`dpdmd.evaluation.feature_stats.seed_excluded_precision`), so the
teacher's own score is leave-one-out and a student identical to the teacher scores exactly it.
``spectral``: per prompt, the match of the samples' mean high-frequency power with the teacher's
(`dpdmd.evaluation.spectrum.spectral_match`, pixel space, the top half of the spectrum), with the
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
transformers 5) is applied with torch alone (`dpdmd.evaluation.image_ops.TorchImageProcessor`, equal
to it where torchvision is installed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from PIL import Image

from ..config import ConfigError
from .base import Evaluator, check_grid
from .clip import ClipFeatures
from .dino import DinoFeatures
from .feature_stats import seed_excluded_precision
from .image_ops import TorchImageProcessor
from .quality_models import QUALITY_MODELS
from .real_options import (DTYPES, REAL_EVALUATORS, SCORERS, ModelPaths, _image_processor_dict, check_evaluator_paths,
                           parse_options)
from .spectrum import band_power, match_per_prompt


class ImageEncoder(Protocol):
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor: ...  # (B, D)


class ImageTextScorer(ImageEncoder, Protocol):
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor: ...  # (T, D)

    def scores(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor: ...  # (P, N)


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
            "pickscore" when present, else the first scorer whose score is positive (not ImageReward).
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
