"""Signal and noise of the digits evaluator's fidelity terms: the teacher's samples of seeds
0..N-1 are the reference (as in a search), and those of seeds N..(SETS+1)*N-1, split into SETS
disjoint sets of N seeds, are each scored clean and degraded (pixel noise, blur, a lost class);
prints the mean and the std between sets of class_prob, precision, spectral, fidelity and FD for
each backbone.

    python bench/spectral_check.py [--seeds 8] [--sets 4] [--backbones digits-flow digits-eps]

The tables in docs/results/objective-checks.md ("Why the spectral match") are this script's output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/X.py` from the root
from bench.objective_check import teacher_grid  # noqa: E402
from dpdmd.evaluation import DigitsEvaluator
from dpdmd.evaluation.corruptions import blur, drop_mode, gaussian_noise

METRICS = ("class_prob", "precision", "spectral", "fidelity", "fid")


def corrupted(images: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"clean": images, **{f"noise {s:g}": gaussian_noise(images, s) for s in (0.05, 0.1, 0.2)},
            "blur 0.5 px": blur(images, 0.5), "blur 1 px": blur(images, 1.0),
            "drop class 3": drop_mode(images, 3, 8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds per prompt in each set")
    parser.add_argument("--sets", type=int, default=4, help="disjoint seed sets")
    parser.add_argument("--backbones", nargs="+", default=["digits-flow", "digits-eps"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    evaluator = DigitsEvaluator()
    for name in args.backbones:
        images, prompts = teacher_grid(name, args.seeds * (args.sets + 1))
        evaluator.set_teacher_reference(evaluator.teacher_reference_state(images[:, :args.seeds], prompts))
        rows: dict[str, list[dict]] = {}
        for s in range(1, args.sets + 1):
            for set_name, x in corrupted(images[:, s * args.seeds:(s + 1) * args.seeds]).items():
                rows.setdefault(set_name, []).append(evaluator.score(x, prompts))
        print(f"\n{name}: {args.sets} disjoint sets of {args.seeds} seeds, mean (std between sets)")
        print(f"| {name} | " + " | ".join(rows) + " |")
        print("|---|" + "---|" * len(rows))
        for key in METRICS:
            cells = [f"{np.mean([m[key] for m in ms]):.3f} ({np.std([m[key] for m in ms], ddof=1):.3f})"
                     for ms in rows.values()]
            print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
