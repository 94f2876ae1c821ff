"""Evaluation: diversity and quality of generated images (method.md, "Evaluation").

The protocol (`protocol`): for each evaluation prompt, N images from seeds 0..N-1, scored by an
`Evaluator`; the teacher's scores on the same set, cached on disk, are the reference every run is
read against. `evaluators` picks the evaluator a config names and lists what it refuses.

`Evaluator` is the interface every evaluator implements; `DigitsEvaluator` (with its
`DigitsClassifier` encoder) serves the built-in digits backbones, `RealEvaluator` (DINOv2 / DINOv3 /
CLIP diversity, PickScore / CLIP score quality, models from local directories; transformers is
imported only when loading) the diffusers backbones. The metric functions work on any encoder's
features.

The reference protocol's other models (`hps`: HPSv2.1, `imagereward`: ImageReward,
`visualquality_r1`: VisualQuality-R1, `iqa`: pyiqa's MANIQA / MUSIQ; `quality_models` names them
for ``quality_models``) and the final protocol over any image generators (`final_protocol`:
``python -m dpdmd.evaluate --protocol reference``).
"""

from .base import Evaluator
from .clip import ClipFeatures, ClipScore
from .digits import DigitsEvaluator
from .digits_classifier import DigitsClassifier, DigitsClassifierConfig
from .dino import DinoFeatures
from .diversity import pairwise_diversity
from .evaluators import evaluator_problems, make_evaluator
from .feature_stats import frechet_distance, knn_precision_recall_coverage
from .final_protocol import ProtocolConfig, load_protocol, protocol_problems, run_protocol
from .hps import HpsScore, load_hps
from .imagereward import ImageReward, load_imagereward
from .pickscore import PickScore
from .protocol import (eval_noise, eval_prompts, generate, save_grid, score, student_sampler, teacher_reference,
                       teacher_sampler)
from .real import RealEvaluator, make_real_evaluator
from .real_options import check_evaluator_paths
from .visualquality_r1 import VisualQualityR1, load_visualquality_r1

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
    # the reference protocol's other models and the final protocol
    "HpsScore",
    "ImageReward",
    "ProtocolConfig",
    "VisualQualityR1",
    "load_hps",
    "load_imagereward",
    "load_protocol",
    "load_visualquality_r1",
    "protocol_problems",
    "run_protocol",
]
