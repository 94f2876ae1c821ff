"""Does the paper's claim hold on the built-in digits-flow backbone?

Same budget and seeds for: vanilla DMD (lambda_div = 0), DP-DMD at K in {5, 10, 20} with
lambda_div 0.05 and a larger one, and the stop-gradient ablation; against the teacher (30 steps,
CFG). The paper expects DMD to lose diversity against the teacher, DP-DMD to keep more of it at
similar quality, and larger K to give more diversity.

    python bench/paper_claim.py --seeds 0 1 2 --workers 2 --out bench/results/paper_claim
    python bench/paper_claim.py --early-state runs/dmd     # a vanilla-DMD run of dpdmd.train

Each run is `python -m dpdmd.train` in its own process (one thread each). Prints a table of the
mean and spread (std over seeds) of diversity and quality metrics, and writes table.md, runs.csv,
claim.png (diversity vs quality) and grids.png (the seed-0 samples of every setting).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import torch

METRICS = ("diversity", "class_prob", "accuracy", "precision", "recall", "coverage", "fid")


def settings(large_lambda: float) -> list[tuple[str, list[str]]]:
    runs = [("DMD (lambda 0)", ["--lambda-div", "0"])]
    for lam in (0.05, large_lambda):
        for k in (5, 10, 20):
            runs.append((f"DP-DMD K={k} lambda={lam:g}", ["--anchor-k", str(k), "--lambda-div", str(lam)]))
    runs.append(("DP-DMD K=10 lambda=0.05 no stop-grad", ["--anchor-k", "10", "--lambda-div", "0.05", "--no-stop-grad"]))
    return runs


def backbone_is_flow(name: str) -> bool:
    return name in ("digits-flow", "sd35m", "sd35l", "sd3m")


def run_one(name: str, flags: list[str], seed: int, args) -> dict:
    out = args.out / "runs" / f"{name.replace(' ', '_').replace('=', '')}_seed{seed}"
    if not (out / "metrics.csv").exists() or args.rerun:
        cmd = [sys.executable, "-m", "dpdmd.train", "--backbone", args.backbone, "--seed", str(seed),
               "--iterations", str(args.iterations), "--lr", str(args.lr), "--out", str(out), "--no-progress",
               "--eval-every", str(args.eval_every), "--eval-seeds-per-prompt", str(args.seeds_per_prompt), *flags]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} seed {seed} failed:\n{proc.stderr[-3000:]}")
        print(f"done: {name} seed {seed}", flush=True)
    last = pd.read_csv(out / "metrics.csv").iloc[-1].to_dict()
    teacher = json.loads((out / "teacher_metrics.json").read_text())
    return {"setting": name, "seed": seed, "dir": str(out), **{m: last[m] for m in METRICS},
            **{f"teacher_{m}": teacher[m] for m in METRICS}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="digits-flow")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--large-lambda", type=float, default=0.5)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seeds-per-prompt", type=int, default=16, help="evaluation seeds per prompt")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/paper_claim"))
    parser.add_argument("--rerun", action="store_true")
    parser.add_argument("--early-state", type=Path, metavar="RUN_DIR",
                        help="only the early-state measurement, on an existing `dpdmd.train --out` directory")
    args = parser.parse_args()
    if args.early_state:
        for label, untrained in (("the run's student", False), ("the untrained student", True)):
            print(f"Early state, {label} (diversity):")
            for k, v in early_state(args.early_state, untrained=untrained).items():
                print(f"- {k}: {v:.4f}")
        return 0

    jobs = [(name, flags, seed) for name, flags in settings(args.large_lambda) for seed in args.seeds]
    # The teacher reference is cached on disk under a lock: compute it once before the pool starts.
    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(lambda job: run_one(*job, args), jobs))
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "runs.csv", index=False)

    teacher = {m: df[f"teacher_{m}"].iloc[0] for m in METRICS}
    lines = [f"backbone {args.backbone}, {args.iterations} iterations ({args.iterations // 6} student updates), "
             f"lr {args.lr}, seeds {args.seeds}; mean ± std over seeds", "",
             "| setting | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|",
             "| teacher (30 steps, CFG) | " + " | ".join(f"{teacher[m]:.4g}" for m in METRICS) + " |"]
    order = [name for name, _ in settings(args.large_lambda)]
    summary = df.groupby("setting")[list(METRICS)].agg(["mean", "std"])
    for name in order:
        cells = [f"{summary.loc[name, (m, 'mean')]:.4g} ± {summary.loc[name, (m, 'std')]:.2g}" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    if backbone_is_flow(args.backbone):
        dmd_dir = Path(df[(df.setting == order[0]) & (df.seed == args.seeds[0])]["dir"].iloc[0])
        lines = ["", f"Early state (the seed-{args.seeds[0]} vanilla-DMD student, diversity):"]
        lines += [f"- {k}: {v:.4f}" for k, v in early_state(dmd_dir).items()]
        lines += ["", "Early state (the untrained student: the teacher's weights in 4 steps, diversity):"]
        lines += [f"- {k}: {v:.4f}" for k, v in early_state(dmd_dir, untrained=True).items()]
        print("\n".join(lines))
        with open(args.out / "table.md", "a") as f:
            f.write("\n".join(lines) + "\n")
    plot(df, teacher, order, args.out / "claim.png")
    grids(df, order, args.out / "grids.png")
    print(f"\nwrote {args.out}/table.md, runs.csv, claim.png, grids.png")
    return 0


@torch.no_grad()
def early_state(run_dir: Path, *, untrained: bool = False) -> dict[str, float]:
    """Does the state after the student's first step matter? Finish, with a distilled student's
    steps 2..4, (a) its own first step from pure noise and (b) the teacher's own state at the same
    level s_1 (the teacher integrated from the same x1 to s_1): if (b) keeps more diversity, the
    early state carries sample-specific structure the first step can preserve. ``untrained``:
    the same with the student before training (the teacher's weights, 4 steps)."""
    from dpdmd.config import from_mapping
    from dpdmd.evaluation import eval_noise, eval_prompts, make_evaluator, score
    from dpdmd.data.prompt_cache import PromptEmbeddingCache
    from dpdmd.training.build import build_backbone, build_method

    state = torch.load(run_dir / "checkpoint" / "state.pt", map_location="cpu", weights_only=False)
    config = from_mapping(state["config"])
    backbone = build_backbone(config)
    method = build_method(config, backbone)
    if not untrained:
        method.load_state_dict(state["method"])
    schedule, embed = backbone.schedule, PromptEmbeddingCache(backbone)
    s = schedule.student_levels
    prompts = eval_prompts(config, backbone)
    x1 = eval_noise(config.eval.seeds_per_prompt, backbone.latent_shape).to(backbone.device)

    def finish(x, cond):  # student steps 2..n from level s_1
        for j in range(1, len(s) - 1):
            x = schedule.step(x, backbone.predict(method.student, x, s[j], cond), s[j], s[j + 1])
        return x

    def teacher_to(x, cond, target):  # the teacher's guided Euler steps from level 1 down to `target`
        levels = [lv for lv in schedule.teacher_levels if lv > target] + [target]
        uncond = backbone.unconditional(x.shape[0])
        for a, b in zip(levels[:-1], levels[1:]):
            x = schedule.step(x, backbone.guided(method.teacher, x, a, cond, uncond), a, b)
        return x

    from dpdmd.anchors import teacher_anchors

    rows = {"student from noise": [], "teacher's state at s_1, finished by the student": [],
            "x1 moved along the K=20 target to s_1 (DP-DMD's aim), finished by the student": []}
    for prompt in prompts:
        cond = embed([prompt] * len(x1))
        own = schedule.step(x1, backbone.predict(method.student, x1, s[0], cond), s[0], s[1])
        rows["student from noise"].append(backbone.decode(finish(own, cond)).cpu())
        rows["teacher's state at s_1, finished by the student"].append(
            backbone.decode(finish(teacher_to(x1, cond, s[1]), cond)).cpu())
        target = teacher_anchors(backbone, method.teacher, x1, cond, backbone.unconditional(len(x1)), [20])[20]
        rows["x1 moved along the K=20 target to s_1 (DP-DMD's aim), finished by the student"].append(
            backbone.decode(finish(schedule.step(x1, target, s[0], s[1]), cond)).cpu())
    evaluator = make_evaluator(config.eval, backbone)
    return {k: score(evaluator, torch.stack(v), prompts)["diversity"] for k, v in rows.items()}


def plot(df, teacher, order, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name in order:
        g = df[df.setting == name]
        ax.errorbar(g.diversity.mean(), g.class_prob.mean(), xerr=g.diversity.std(), yerr=g.class_prob.std(),
                    fmt="o", capsize=3, label=name)
    ax.plot([teacher["diversity"]], [teacher["class_prob"]], "k*", markersize=14, label="teacher")
    ax.set_xlabel("diversity (1 - mean pairwise cosine, classifier features)")
    ax.set_ylabel("quality (probability of the prompted digit)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def grids(df, order, path):
    from PIL import Image, ImageDraw

    tiles = []
    first = df[df.seed == df.seed.min()].set_index("setting")
    teacher_png = Path(first.iloc[0]["dir"]) / "samples" / "teacher.png"
    for label, png in [("teacher", teacher_png)] + [(n, Path(first.loc[n, "dir"]) / "samples" / "student_latest.png")
                                                      for n in order]:
        img = Image.open(png).convert("RGB")
        canvas = Image.new("RGB", (img.width, img.height + 20), "white")
        canvas.paste(img, (0, 20))
        ImageDraw.Draw(canvas).text((4, 4), label, fill="black")
        tiles.append(canvas)
    cols = 5
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, ((len(tiles) + cols - 1) // cols) * h), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
    sheet.save(path)


if __name__ == "__main__":
    sys.exit(main())
