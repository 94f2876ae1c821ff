"""Record a tabulated DP-DMD benchmark: every learning curve of a grid, once, as Parquet.

Each grid point (backbone x K x lambda_div x training seed) is one `dpdmd.train` run, evaluated
every ``--eval-every`` student updates (every rung a scheduler could use). Every report becomes a
row: the configuration, every metric the evaluator returns (diversity, quality, fidelity,
class_prob, accuracy, fid, precision, recall, coverage, spectral, ...), the losses, the seconds of each phase (the
trainer's ``seconds_*``), the anchor's teacher calls, the wall seconds since the run started
(evaluation included) and the teacher's reference metrics (``teacher_*``), so any objective can be
recomputed from the table (`tune.simulate` does). lambda_div = 0 (vanilla DMD) does not depend on
K: it is recorded once per backbone and seed, with ``k_independent`` = True.

    # a small table (2 cores, ~25 min):
    python bench/tabular.py --name small --backbones digits-eps --ks 5 20 --lambdas 0 0.05 0.5 \
        --seeds 0 1000 --iterations 240 --eval-every 5 --workers 2
    # the full grid (342 runs; one run per core on a 16-core machine):
    python bench/tabular.py --name full --workers 16

Runs go one per process, one thread each (as `bench/paper_claim.py --workers`). Resumable: a
run whose Parquet file exists is skipped, so an interrupted recording continues where it
stopped; a run file whose ``reference_version`` is not `dpdmd.data.cache_keys.REFERENCE_VERSION` was
scored under an older evaluator definition (e.g. the digits spectral match against the real
digits rather than the teacher) and is trained again. Writes ``OUT/NAME/runs/*.parquet`` (one per run), ``OUT/NAME/table.parquet`` (all of
them) and ``OUT/NAME/meta.json`` (the command, the grid, the wall time, the cost per run).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from dpdmd.data.atomic import atomic_path
from dpdmd.data.cache_keys import REFERENCE_VERSION

FULL_KS = (1, 3, 5, 10, 15, 20, 25, 30)
FULL_LAMBDAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# Seeds far apart: iteration i is seeded seed + i, so seeds 0 and 1 would see the same batches
# shifted by one iteration (docs/guide/limitations.md).
FULL_SEEDS = (0, 1000, 2000)
CONFIG_COLUMNS = ("backbone", "anchor_k", "lambda_div", "seed", "k_independent", "iterations", "batch_size",
                  "teacher_steps", "lr", "eval_seeds_per_prompt", "eval_every")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="full", help="table name: the folder under --out")
    p.add_argument("--backbones", nargs="+", default=["digits-flow", "digits-eps"])
    p.add_argument("--ks", type=int, nargs="+", default=list(FULL_KS))
    p.add_argument("--lambdas", type=float, nargs="+", default=list(FULL_LAMBDAS))
    p.add_argument("--seeds", type=int, nargs="+", default=list(FULL_SEEDS))
    p.add_argument("--iterations", type=int, default=1200, help="per run (6 per student update)")
    p.add_argument("--eval-every", type=int, default=10, help="student updates between evaluations (the rungs)")
    p.add_argument("--seeds-per-prompt", type=int, default=8, help="evaluation seeds per prompt")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--teacher-steps", type=int, default=30)
    p.add_argument("--lr", nargs="+", default=[], metavar="BACKBONE=LR",
                   help="the student's learning rate for a backbone (default: the backbone's own), e.g. "
                        "digits-eps=3e-5 as search_spaces/quickstart.yaml trains it")
    p.add_argument("--workers", type=int, default=2, help="runs at once, one process and one thread each")
    p.add_argument("--out", type=Path, default=Path("bench/results/tabular"))
    p.add_argument("--work", type=Path, default=Path("runs/tabular"),
                   help="scratch folder for each run's checkpoints and samples (not kept in git)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and the estimate; train nothing")
    return p.parse_args(argv)


def learning_rates(args) -> dict[str, float]:
    """``--lr`` as {backbone: lr}; a backbone outside ``--backbones`` or a bad number is refused."""
    out = {}
    for item in args.lr:
        backbone, _, value = item.partition("=")
        try:
            out[backbone] = float(value)
        except ValueError:
            raise SystemExit(f"--lr {item!r}: expected BACKBONE=LR, e.g. digits-eps=3e-5")
        if backbone not in args.backbones:
            raise SystemExit(f"--lr {item!r}: {backbone!r} is not one of --backbones {' '.join(args.backbones)}")
    return out


def grid_jobs(args) -> list[dict]:
    """One job per run; lambda_div 0 once per backbone and seed (it does not use K)."""
    jobs, lrs = [], learning_rates(args)
    for backbone in args.backbones:
        for seed in args.seeds:
            for lam in args.lambdas:
                for k in ([min(args.ks)] if lam == 0 else args.ks):
                    jobs.append({"backbone": backbone, "anchor_k": k, "lambda_div": float(lam), "seed": seed,
                                 "k_independent": lam == 0, "lr": lrs.get(backbone)})
    return jobs


def run_name(job: dict) -> str:
    k = "any" if job["k_independent"] else job["anchor_k"]
    lr = "" if job.get("lr") is None else f"_lr{job['lr']:g}"  # a run at another lr is another run
    return f"{job['backbone']}_K{k}_lam{job['lambda_div']:g}_seed{job['seed']}{lr}"


def train_config(job: dict, args):
    from dpdmd import EvalConfig, TrainConfig

    return TrainConfig(backbone=job["backbone"], anchor_k=job["anchor_k"], lambda_div=job["lambda_div"],
                       seed=job["seed"], iterations=args.iterations, batch_size=args.batch_size,
                       teacher_steps=args.teacher_steps, device="cpu", lr=job.get("lr"),
                       eval=EvalConfig(every=args.eval_every, seeds_per_prompt=args.seeds_per_prompt))


def record_run(job: dict, args, path: Path) -> float:
    """Train one grid point, write its curve to ``path`` (atomically); returns its wall seconds."""
    import torch

    from dpdmd import train

    torch.set_num_threads(1)
    config = train_config(job, args)
    work = args.work / args.name / run_name(job)
    rows = []
    started = time.perf_counter()

    def report(metrics: dict, checkpoint_dir) -> None:
        rows.append(dict(metrics, wall_seconds=time.perf_counter() - started))

    train(config, report=report, out_dir=work, progress=False)
    teacher = json.loads((work / "teacher_metrics.json").read_text())
    frame = pd.DataFrame(rows)
    for key, value in teacher.items():
        frame[f"teacher_{key}"] = value
    for key, value in {**job, "iterations": args.iterations, "batch_size": args.batch_size,
                       "teacher_steps": args.teacher_steps, "lr": config.lr if config.lr is not None else float("nan"),
                       "eval_seeds_per_prompt": args.seeds_per_prompt, "eval_every": args.eval_every}.items():
        frame[key] = value
    frame["run"] = run_name(job)
    frame["reference_version"] = REFERENCE_VERSION  # what the evaluator's metrics mean (dpdmd.data.cache_keys)
    frame = frame[[*CONFIG_COLUMNS, "run", *[c for c in frame.columns if c not in (*CONFIG_COLUMNS, "run")]]]
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return time.perf_counter() - started


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def record(args) -> dict:
    """Run every missing job; returns {run name: wall seconds} of the runs trained now."""
    jobs = grid_jobs(args)
    runs_dir = args.out / args.name / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    stale = [j for j in jobs if (runs_dir / f"{run_name(j)}.parquet").exists()
             and not is_current(runs_dir / f"{run_name(j)}.parquet")]
    todo = [j for j in jobs if not (runs_dir / f"{run_name(j)}.parquet").exists()] + stale
    print(f"{len(jobs)} runs in the grid, {len(jobs) - len(todo)} already recorded, {len(todo)} to train "
          f"({len(stale)} of them recorded before the current quality definition) with {args.workers} worker(s)",
          flush=True)
    seconds = {}
    if not todo:
        return seconds
    # One thread per process: set before the workers import torch.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
        futures = {pool.submit(record_run, j, args, runs_dir / f"{run_name(j)}.parquet"): j for j in todo}
        for n, future in enumerate(as_completed(futures), 1):
            name = run_name(futures[future])
            seconds[name] = future.result()
            print(f"[{n}/{len(todo)}] {name}: {seconds[name]:.0f} s", flush=True)
    return seconds


def is_current(path: Path) -> bool:
    """Whether a run file was scored under the current evaluator definition (its
    ``reference_version`` is `dpdmd.data.cache_keys.REFERENCE_VERSION`)."""
    import pyarrow.parquet as pq

    if "reference_version" not in pq.read_schema(path).names:
        return False
    return set(pd.read_parquet(path, columns=["reference_version"])["reference_version"]) == {REFERENCE_VERSION}


def combine(args) -> pd.DataFrame:
    """All recorded runs of this grid as one table (``table.parquet``)."""
    names = {run_name(j) for j in grid_jobs(args)}
    parts = [pd.read_parquet(p) for p in sorted((args.out / args.name / "runs").glob("*.parquet")) if p.stem in names]
    table = pd.concat(parts, ignore_index=True)
    table.to_parquet(args.out / args.name / "table.parquet", index=False)
    return table


def estimate(table: pd.DataFrame, args, jobs: list[dict]) -> dict:
    """Seconds per run measured here, and what the whole grid costs at ``--workers``."""
    last = table.sort_values("student_updates").groupby("run").tail(1)
    per_update = (last["wall_seconds"] / last["student_updates"]).median()
    return {"runs": len(jobs), "median_run_seconds": float(last["wall_seconds"].median()),
            "median_seconds_per_student_update": float(per_update),
            "grid_core_hours": float(last["wall_seconds"].sum() / 3600)}


def main(argv=None) -> int:
    args = parse_args(argv)
    learning_rates(args)  # refuse a bad --lr before training anything
    jobs = grid_jobs(args)
    if args.dry_run:
        for j in jobs:
            print(run_name(j))
        print(f"{len(jobs)} runs of {args.iterations} iterations")
        return 0
    started = time.time()
    trained = record(args)
    table = combine(args)
    meta = {"command": "python bench/tabular.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
            "grid": {"backbones": args.backbones, "ks": args.ks, "lambdas": args.lambdas, "seeds": args.seeds,
                     "iterations": args.iterations, "eval_every": args.eval_every,
                     "seeds_per_prompt": args.seeds_per_prompt, "batch_size": args.batch_size,
                     "lr": learning_rates(args)},
            "workers": args.workers, "wall_seconds_this_call": round(time.time() - started, 1),
            "runs_trained_this_call": len(trained), "rows": len(table), **estimate(table, args, jobs)}
    (args.out / args.name / "meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta, indent=1))
    print(f"wrote {args.out / args.name / 'table.parquet'} ({len(table)} rows, {table['run'].nunique()} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
