"""Does an optimiser option change what DP-DMD learns? (issue 11, section 1)

Trains the built-in digits-flow backbone (default settings: K 10, lambda_div 0.05, 600
iterations) with each ``--optimizers`` entry for each ``--seeds`` seed, one process a run, and
prints diversity, quality and FD of the last evaluation: per run, and mean +- std over seeds.
The option does not change what DP-DMD learns when its means sit within the seed spread of
``adamw``'s (|mean difference| <= the larger of the two std).

    python bench/optimizer_check.py --optimizers adamw,adamw8bit --seeds 0,1,2 --jobs 6 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRICS = ("diversity", "quality", "fid")  # fid: the digits evaluator's Frechet distance (FD)


def one_run(job: tuple[str, int, int, int, str]) -> dict:
    optimizer, seed, iterations, threads, device = job
    import torch

    torch.set_num_threads(threads)
    from dpdmd.config import TrainConfig
    from dpdmd.training.loop import train

    config = TrainConfig(backbone="digits-flow", optimizer=optimizer, seed=seed, iterations=iterations, device=device)
    metrics = train(config, progress=False)
    return {"optimizer": optimizer, "seed": seed, **{k: float(metrics[k]) for k in METRICS if k in metrics}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--optimizers", default="adamw,adamw8bit")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = ap.parse_args(argv)
    jobs = [(o, int(s), args.iterations, args.threads, args.device)
            for o in args.optimizers.split(",") for s in args.seeds.split(",")]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(one_run, jobs))
    lines = ["| optimizer | seed | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    lines += [f"| {r['optimizer']} | {r['seed']} | " + " | ".join(f"{r.get(k, float('nan')):.4f}" for k in METRICS) + " |"
              for r in runs]
    for opt in args.optimizers.split(","):
        rs = [r for r in runs if r["optimizer"] == opt]
        cells = [f"{statistics.mean(r[k] for r in rs):.4f} +- {statistics.stdev(r[k] for r in rs):.4f}"
                 if len(rs) > 1 and k in rs[0] else "-" for k in METRICS]
        lines.append(f"| **{opt}** | mean +- std | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "optimizer_check.json").write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
