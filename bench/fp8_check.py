"""Does FP8 change what DP-DMD learns? (issue 25; the pattern of ``bench/optimizer_check.py``)

Trains the built-in digits-flow backbone (a small `SD3Transformer2DModel`: its block linear layers
are 64 and 256 wide, multiples of 16 as FP8 GEMMs need) with the default config (K 10,
lambda_div 0.05, 600 iterations) under bf16 autocast (``mixed_precision: bf16``), once per
``--modes`` entry and ``--seeds`` seed, one process a run:

- ``bf16``: ``fp8: none`` (the reference);
- ``tensorwise`` / ``rowwise``: ``fp8`` = that (`dpdmd.parallel.fp8`: student and fake score);
- ``rowwise+teacher``: ``fp8: rowwise`` and ``fp8_teacher: true``.

It prints diversity, quality and FD of the last evaluation and the mean of each loss over the run
(per run and mean +- std over seeds), and writes the student's last samples of every run into one
PNG (``fp8_check_samples.png``: a block per mode, a column block per seed) and the losses of every
evaluation into ``fp8_check.json``. A mode does not change what DP-DMD learns when its means sit
within the seed spread of ``bf16``'s (|mean difference| <= the larger of the two std).

    python bench/fp8_check.py --modes bf16,tensorwise,rowwise --seeds 0,1,2 --jobs 9 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRICS = ("diversity", "quality", "fid")
LOSSES = ("loss_dmd", "loss_div", "loss_fake")
MODES = {"bf16": ("none", False), "tensorwise": ("tensorwise", False), "rowwise": ("rowwise", False),
         "rowwise+teacher": ("rowwise", True)}


def one_run(job: tuple[str, int, int, int, str, str]) -> dict:
    mode, seed, iterations, threads, device, workdir = job
    import torch

    torch.set_num_threads(threads)
    from dpdmd.config import TrainConfig
    from dpdmd.training.loop import train

    fp8, teacher = MODES[mode]
    config = TrainConfig(backbone="digits-flow", seed=seed, iterations=iterations, device=device,
                         mixed_precision="bf16", fp8=fp8, fp8_teacher=teacher)
    evals: list[dict] = []
    out = Path(workdir) / f"{mode}_{seed}"
    metrics = train(config, progress=False, out_dir=out,
                    report=lambda m, ckpt: evals.append({k: float(v) for k, v in m.items()
                                                         if isinstance(v, (int, float))}))
    row = {"mode": mode, "seed": seed, **{k: float(metrics[k]) for k in METRICS if k in metrics}, "evals": evals,
           "samples": str(out / "samples" / "student_latest.png")}
    for k in LOSSES:  # the loss averaged over the whole run (each evaluation averages since the last)
        values = [e[k] for e in evals if k in e]
        if values:
            row[k] = statistics.mean(values)
    return row


def samples_grid(runs: list[dict], modes: list[str], seeds: list[int], path: Path) -> None:
    """One PNG: a row per mode (labelled), a column per seed, each cell a run's last sample grid."""
    from PIL import Image, ImageDraw

    cells = {(r["mode"], r["seed"]): Image.open(r["samples"]).convert("RGB") for r in runs}
    w = max(c.width for c in cells.values())
    h = max(c.height for c in cells.values())
    label, pad = 18, 6
    canvas = Image.new("RGB", (len(seeds) * (w + pad) + pad, len(modes) * (h + label + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, mode in enumerate(modes):
        top = pad + i * (h + label + pad)
        for j, seed in enumerate(seeds):
            left = pad + j * (w + pad)
            draw.text((left, top + 2), f"{mode}  seed {seed}", fill="black")
            if (mode, seed) in cells:
                canvas.paste(cells[(mode, seed)], (left, top + label))
    canvas.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modes", default="bf16,tensorwise,rowwise")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = ap.parse_args(argv)
    modes, seeds = args.modes.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {unknown}; use {', '.join(MODES)}")
    work = tempfile.mkdtemp(prefix="fp8check_")
    jobs = [(m, s, args.iterations, args.threads, args.device, work) for m in modes for s in seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(one_run, jobs))
    cols = METRICS + LOSSES
    lines = ["| mode | seed | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    lines += [f"| {r['mode']} | {r['seed']} | " + " | ".join(f"{r.get(k, float('nan')):.4f}" for k in cols) + " |"
              for r in runs]
    for mode in modes:
        rs = [r for r in runs if r["mode"] == mode]
        cells = [f"{statistics.mean(r[k] for r in rs):.4f} +- {statistics.stdev(r[k] for r in rs):.4f}"
                 if len(rs) > 1 and k in rs[0] else "-" for k in cols]
        lines.append(f"| **{mode}** | mean +- std | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples_grid(runs, modes, seeds, out / "fp8_check_samples.png")
    (out / "fp8_check.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
