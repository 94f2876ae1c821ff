"""The built-in teachers against the real digits: accuracy and diversity at several CFG scales.

    python bench/teachers.py                    # 10 prompts x 16 seeds, 30 steps, CFG 1 / 2 / 3.5

The table in docs/results/digits-teachers.md is this script's output. The target: at least 90% of
30-step CFG samples classified as the prompted digit, at a diversity close to the real digits'.
"""

from __future__ import annotations

import argparse
import sys

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 2.0, 3.5])
    args = parser.parse_args()

    from dpdmd import EvalConfig, TrainConfig
    from dpdmd.evaluation import eval_prompts, generate, make_evaluator, score, teacher_sampler
    from dpdmd.evaluation import DigitsEvaluator
    from dpdmd.data.prompt_cache import PromptEmbeddingCache
    from dpdmd.training.build import build_backbone

    cols = ("diversity", "class_prob", "accuracy", "precision", "recall", "fid")
    print("| samples | CFG | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    real = DigitsEvaluator().reference_scores(args.seeds)
    print(f"| real digits ({args.seeds} per class) | - | " + " | ".join(f"{real[c]:.4g}" for c in cols) + " |")
    for backbone_name in ("digits-flow", "digits-eps"):
        for cfg in args.cfg:
            config = TrainConfig(backbone=backbone_name, cfg_scale=cfg, device="cpu",
                                 eval=EvalConfig(seeds_per_prompt=args.seeds))
            backbone = build_backbone(config)
            teacher = backbone.build_networks()[0]
            prompts = eval_prompts(config, backbone)
            with torch.no_grad():
                images = generate(backbone, teacher_sampler(backbone, teacher), prompts, args.seeds,
                                  PromptEmbeddingCache(backbone))
            m = score(make_evaluator(config.eval, backbone), images, prompts)
            default = " (default)" if cfg == backbone.__class__.DEFAULT_CFG[backbone.kind] else ""
            print(f"| {backbone_name} teacher, 30 steps | {cfg:g}{default} | " + " | ".join(f"{m[c]:.4g}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
