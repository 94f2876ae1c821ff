"""dpdmd: Diversity-Preserved Distribution Matching Distillation (DP-DMD), readable and callable.

    from dpdmd import TrainConfig, train
    metrics = train(TrainConfig(backbone="digits-flow", anchor_k=10, lambda_div=0.05), out_dir="runs/a")

    from dpdmd import load_student                 # a saved student: a run's, a search's, an export
    images = load_student("runs/a").sample(["seven"], seeds=8)

The algorithm is `dpdmd.method` (step for step as method.md), with its noise schedules
(`schedules`), losses (`losses`), iteration stream (`stream`), teacher anchors (`anchors`) and
config (`config`) beside it. The rooms: `dpdmd.training` (one run: the loop, checkpoints, the
output folder), `dpdmd.backbones`, `dpdmd.evaluation` (the protocol and the metrics),
`dpdmd.parallel` (data parallelism, sharding, compilation, optimisers, GPU memory), `dpdmd.data`
(the digits, prompt embeddings, the disk cache and its keys, atomic files, YAML) and `dpdmd.cli`
(``python -m dpdmd.train`` / ``evaluate`` / ``pretrain``).
"""

from .anchors import AnchorProvider, LocalAnchors, teacher_anchors
from .backbones import Backbone, available_backbones, get_backbone
from .config import ConfigError, EvalConfig, TrainConfig, from_mapping, load_config
from .method import DPDMD
from .stream import Batch, is_student_iteration, iteration_batch
from .student import Student, load_student, save_student
from .training.loop import train

__all__ = ["AnchorProvider", "Backbone", "Batch", "ConfigError", "DPDMD", "EvalConfig", "LocalAnchors",
           "TrainConfig", "available_backbones", "from_mapping", "get_backbone", "is_student_iteration",
           "iteration_batch", "load_config", "load_student", "save_student", "Student", "teacher_anchors", "train"]
