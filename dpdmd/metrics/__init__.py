"""Evaluation: diversity and quality of generated images (method.md, "Evaluation").

`Evaluator` is the interface every evaluator implements; `DigitsEvaluator` (with its
`DigitsClassifier` encoder) serves the built-in digits backbones. The metric functions work on any
encoder's features.
"""

from .base import Evaluator
from .digits_classifier import DigitsClassifier, DigitsClassifierConfig, DigitsEvaluator
from .diversity import pairwise_diversity
from .feature_stats import frechet_distance, knn_precision_recall_coverage

__all__ = [
    "DigitsClassifier",
    "DigitsClassifierConfig",
    "DigitsEvaluator",
    "Evaluator",
    "frechet_distance",
    "knn_precision_recall_coverage",
    "pairwise_diversity",
]

# The real (diffusers) backbones' evaluator: DINOv2 / DINOv3 / CLIP diversity, PickScore / CLIP
# score quality, models from local directories (transformers is imported only when loading).
from .clip import ClipFeatures, ClipScore
from .dino import DinoFeatures
from .pickscore import PickScore
from .real import RealEvaluator, check_evaluator_paths, make_real_evaluator

__all__ += [
    "ClipFeatures",
    "ClipScore",
    "DinoFeatures",
    "PickScore",
    "RealEvaluator",
    "check_evaluator_paths",
    "make_real_evaluator",
]

# The reference protocol's other models (ImageReward, HPSv2.1, VisualQuality-R1, pyiqa's MANIQA),
# selectable in quality_models, and the final protocol over any image generators.
from .hps import HpsScore, load_hps
from .imagereward import ImageReward, load_imagereward
from .protocol import ProtocolConfig, load_protocol, protocol_problems, run_protocol
from .visualquality_r1 import VisualQualityR1, load_visualquality_r1

__all__ += [
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
