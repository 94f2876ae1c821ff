"""Can the search's objective be raised by degrading samples, with the real evaluator? Prints,
for tiny random-weight encoders (tests/dpdmd/tiny_encoders.py, DINOv2 first, then CLIP; PickScore
and CLIP score), the teacher stand-in samples and degraded copies scored against the teacher's own
features: raw metrics, the teacher-normalised scores, J and whether the clean set dominates.

    python bench/real_objective_check.py [--sd3]

Samples: `tests/dpdmd/stand_in_samples.shape_grid` (4 prompts, each a distinct coloured shape, x
8 seeds); with ``--sd3`` also the teacher samples of the tiny random SD3 pipeline
(tests/dpdmd/tiny_pipelines.py, 6 steps, 32 px), which are noise-like textures that hardly depend
on the prompt. Tiny random encoders are not DINO or PickScore: these numbers check the mechanism,
not what the real models measure. The table in
docs/results/objective-checks.md ("The real evaluator on tiny encoders") is this script's output.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/X.py` from the root
from bench.markdown_table import markdown  # noqa: E402
from dpdmd.evaluation import make_real_evaluator
from dpdmd.evaluation.corruptions import blur, drop_mode, gaussian_noise
from tests.dpdmd import stand_in_samples, tiny_encoders
from tune.trial.objective import objective_metrics


def corruptions(images: torch.Tensor) -> dict[str, torch.Tensor]:
    sets = {"clean (teacher)": images}
    sets.update({f"noise {s:g}": gaussian_noise(images, s) for s in (0.05, 0.1, 0.2, 0.4)})
    sets.update({f"blur {s:g}": blur(images, s) for s in (0.5, 1.0, 2.0)})
    sets["drop 1 -> 0"] = drop_mode(images, 1, 0)
    return sets


def real_objective_table(evaluator, images: torch.Tensor, prompts: list[str]) -> pd.DataFrame:
    """One row per set: raw metrics, scores against the teacher's (LOO) own, J, dominated by clean."""
    evaluator.set_teacher_reference(evaluator.teacher_reference_state(images, prompts))
    raw = {name: evaluator.score(x, prompts) for name, x in corruptions(images).items()}
    ref = raw["clean (teacher)"]
    rows = []
    for name, m in raw.items():
        scores = objective_metrics(m["diversity"], m["quality"], teacher_diversity=ref["diversity"],
                                   teacher_quality=ref["quality"], diversity_weight=0.5)
        rows.append({"set": name, "diversity": m["diversity"], evaluator.preference_key: m[evaluator.preference_key],
                     "teacher_precision": m["teacher_precision"], "spectral": m["spectral"], **scores})
    table = pd.DataFrame(rows)
    clean = table.iloc[0]
    table["dominated by clean"] = [
        bool(clean.diversity_score >= r.diversity_score and clean.quality_score >= r.quality_score
             and (clean.diversity_score > r.diversity_score or clean.quality_score > r.quality_score))
        for r in table.itertuples()]
    return table


def tiny_sd3_teacher_samples(root: Path, prompts: list[str], seeds: int) -> torch.Tensor:
    from dpdmd.config import TrainConfig
    from dpdmd.evaluation import generate, teacher_sampler
    from dpdmd.data.prompt_cache import PromptEmbeddingCache
    from dpdmd.training.build import build_backbone
    from tests.dpdmd.tiny_pipelines import make_tiny_sd3

    config = TrainConfig(backbone="sd35m", backbone_options={
        "path": str(make_tiny_sd3(root / "sd3")), "resolution": 32, "weights_dtype": "fp32",
        "max_sequence_length": 16}, teacher_steps=6, anchor_k=2, device="cpu")
    backbone = build_backbone(config)
    sampler = teacher_sampler(backbone, backbone.load_teacher())
    return generate(backbone, sampler, prompts, seeds, PromptEmbeddingCache(backbone))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd3", action="store_true", help="also the tiny SD3 pipeline's teacher samples")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prompts = list(stand_in_samples.PROMPTS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        options = {"diversity_encoders": {"dinov2": str(tiny_encoders.save_tiny_dinov2(root / "dinov2")),
                                          "clip": str(tiny_encoders.save_tiny_clip(root / "clip"))},
                   "quality_models": {"pickscore": tiny_encoders.save_tiny_pickscore(root / "pickscore"),
                                      "clip_score": str(root / "clip")}}
        samples = {"shape grid (4 prompts x 8 seeds)": stand_in_samples.shape_grid(8)}
        if args.sd3:
            samples["tiny SD3 teacher (4 prompts x 8 seeds)"] = tiny_sd3_teacher_samples(root, prompts, 8)
        for quality_metric in ("pickscore", "clip_score"):
            evaluator = make_real_evaluator("real", device="cpu", quality_metric=quality_metric, **options)
            for name, images in samples.items():
                print(f"\n{name}; quality = {quality_metric} x teacher_precision (k = 3, dinov2 features) x spectral")
                print(markdown(real_objective_table(evaluator, images, prompts)))


if __name__ == "__main__":
    main()
