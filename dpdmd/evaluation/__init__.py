"""Evaluation: diversity and quality of generated images (method.md, "Evaluation").

The protocol (`protocol`): for each evaluation prompt, N images from seeds 0..N-1, scored by an
`Evaluator`; the teacher's scores on the same set, cached on disk, are the reference every run is
read against. `evaluators` picks the evaluator a config names and lists what it refuses.

`Evaluator` is the interface every evaluator implements; `DigitsEvaluator` (with its
`DigitsClassifier` encoder) serves the built-in digits backbones, `RealEvaluator` (DINOv2 / DINOv3 /
CLIP diversity, PickScore / CLIP score quality, models from local directories; transformers is
imported only when loading) the diffusers backbones. The metric functions work on any encoder's
features.
"""

from .base import Evaluator
from .clip import ClipFeatures, ClipScore
from .digits import DigitsEvaluator
from .digits_classifier import DigitsClassifier, DigitsClassifierConfig
from .dino import DinoFeatures
from .diversity import pairwise_diversity
from .evaluators import evaluator_problems, make_evaluator
from .feature_stats import frechet_distance, knn_precision_recall_coverage
from .pickscore import PickScore
from .protocol import (eval_noise, eval_prompts, generate, save_grid, score, student_sampler, teacher_reference,
                       teacher_sampler)
from .real import RealEvaluator, make_real_evaluator
from .real_options import check_evaluator_paths

__all__ = [
    "ClipFeatures",
    "ClipScore",
    "DigitsClassifier",
    "DigitsClassifierConfig",
    "DigitsEvaluator",
    "DinoFeatures",
    "Evaluator",
    "PickScore",
    "RealEvaluator",
    "check_evaluator_paths",
    "eval_noise",
    "eval_prompts",
    "evaluator_problems",
    "frechet_distance",
    "generate",
    "knn_precision_recall_coverage",
    "make_evaluator",
    "make_real_evaluator",
    "pairwise_diversity",
    "save_grid",
    "score",
    "teacher_reference",
    "student_sampler", "teacher_sampler",
]
