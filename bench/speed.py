"""Speed of one DP-DMD run on the CPU (issue: "600 iterations within 2 minutes on 2 cores").

    python bench/speed.py                       # digits-flow, 600 iterations, K=10, lambda 0.05
    python bench/speed.py --backbone digits-eps --iterations 300

Prints iterations per second (training only: the evaluation at the end is excluded) and the share
of time spent in each phase: the teacher anchor (which the search's shared cache removes), the
student rollout, DMD scoring, the student's backward and step, and the fake-score updates.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="digits-flow")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--anchor-k", type=int, default=10)
    parser.add_argument("--lambda-div", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dpdmd import EvalConfig, TrainConfig, train

    config = TrainConfig(backbone=args.backbone, anchor_k=args.anchor_k, lambda_div=args.lambda_div,
                         iterations=args.iterations, device="cpu", eval=EvalConfig(every=0))
    with tempfile.TemporaryDirectory() as out:
        metrics = train(config, out_dir=out)
    seconds = metrics["seconds"]
    phases = {k[len("seconds_"):]: v for k, v in metrics.items() if k.startswith("seconds_")}
    print(f"\n{args.backbone}: {args.iterations} iterations ({metrics['student_updates']} student updates) "
          f"in {seconds:.1f} s on {args.threads} thread(s): {args.iterations / seconds:.2f} it/s")
    other = seconds - sum(phases.values())
    for name, value in sorted(phases.items(), key=lambda kv: -kv[1]) + [("other (stream, prompts, loop)", other)]:
        print(f"  {name:30s} {value:7.2f} s  {100 * value / seconds:5.1f} %")
    print(f"goal: 600 iterations within 120 s on 2 cores -> {'met' if seconds * 600 / args.iterations <= 120 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
