"""Search efficiency on a tabulated benchmark: the front each strategy finds for the compute it spends.

Every strategy is the real search (`tune.simulate`: Ray's grid / random generator or Optuna
through Ray's `OptunaSearch`, with FIFO, Ray's ASHA on J or the project's MO-ASHA) replayed on
the recorded curves, for many seeds and for 2 and 8 workers. For each run:

- **hypervolume fraction**: the front the search would show (`tune.simulate.replay.shown_front`: each
  trial's best report so far by J, the one whose checkpoint the search keeps, scored as the search
  scores it, quality_score >= objective.min_quality, non-dominated; the same functions as
  ``tune.search``'s outputs) is judged by the *true* scores of those students: each chosen
  (configuration, budget) by its mean over the table's training seeds, not by the replayed seed's
  value it was chosen for (a maximum over a noisy curve is biased up: the optimizer's curse). Its
  hypervolume is divided by the true front's (`tune.simulate.table.ground_truth`: every configuration at
  every budget, seed means); averaged over backbones. A search shows one point per trial, the
  true front may hold several budgets of one configuration: even the full grid stays below 1;
- **compute**: seconds of recorded trial time without the anchor, plus the shared anchor passes
  (`tune.simulate`), as a fraction of the full grid's (grid + FIFO, same seed and workers);
- **compute to 95%**: the first compute at which the fraction reaches 0.95; **of the full grid's
  front**: at which it reaches 0.95 x the full grid's final fraction (same seed and workers);
- **regret**: the best true J of the table (any configuration, any budget) minus the true J of
  the recommended trial's shown report (`tune.outputs.front.recommended`: the highest J on the front
  shown).

    python bench/search_efficiency.py --table bench/results/tabular/medium/table.parquet --seeds 20 \
        --workers 2 8 --jobs 2 --out bench/results/search_efficiency_medium

Prints the table (median and spread over seeds), the default strategy (grid + MO-ASHA) against
each other one at every budget (``--budgets``), and writes ``--out`` .png (the hypervolume
fraction of the front shown when the compute reaches each budget: median and IQR over seeds),
.md and .csv (one row per strategy, workers and seed).

Scheduler settings to try on the table: ``--grace-period``, ``--reduction-factor``,
``--brackets`` (every ASHA and MO-ASHA strategy of the run).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tune.outputs.front import recommended  # noqa: E402
from tune.outputs.kept import kept_reports  # noqa: E402
from tune.simulate.replay import shown_front, simulate  # noqa: E402
from tune.space import load_space  # noqa: E402
from tune.simulate.table import SCORES, RecordedTable, ground_truth, hypervolume, true_points  # noqa: E402

STRATEGIES = {  # name: (method, scheduler)
    "grid + FIFO (full grid)": ("grid", "fifo"),
    "random + FIFO": ("random", "fifo"),
    "grid + ASHA on J": ("grid", "asha"),
    "grid + MO-ASHA": ("grid", "moasha"),
    "Optuna TPE + ASHA": ("optuna_tpe", "asha"),
    "Optuna NSGA-II + MO-ASHA": ("optuna_nsga2", "moasha"),
    # the sampler's share of a gap: the same schedulers behind random sampling
    "random + MO-ASHA": ("random", "moasha"),
    "random + ASHA on J": ("random", "asha"),
}
COMPARED = list(STRATEGIES)  # the default of --strategies
FULL_GRID = "grid + FIFO (full grid)"
DEFAULT = "grid + MO-ASHA"  # the shipped default (search_spaces/quickstart.yaml)
BUDGETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)  # fractions of the full grid's compute


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, required=True, help="table.parquet written by bench/tabular.py")
    p.add_argument("--seeds", type=int, default=20, help="simulated searches per strategy and worker count")
    p.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    p.add_argument("--strategies", nargs="+", default=COMPARED, choices=list(STRATEGIES), metavar="NAME",
                   help=f"names of STRATEGIES (default: all: {', '.join(COMPARED)})")
    p.add_argument("--diversity-weight", type=float, default=0.5)
    p.add_argument("--min-quality", type=float, default=None, help="default: the space schema's objective.min_quality")
    p.add_argument("--grace-period", type=int, default=None, help="ASHA / MO-ASHA grace (default: the first rung)")
    p.add_argument("--reduction-factor", type=float, default=2.0)
    p.add_argument("--brackets", type=int, default=1, help="ASHA / MO-ASHA brackets")
    p.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS),
                   help="fractions of the full grid's compute to report the hypervolume at")
    p.add_argument("--jobs", type=int, default=1, help="processes (each replays a block of seeds)")
    p.add_argument("--out", type=Path, default=Path("bench/results/search_efficiency"))
    return p.parse_args(argv)


def space_file(table: RecordedTable, args, method: str, scheduler: str, directory: Path) -> Path:
    """A search space over exactly the table's grid, as a user would write it."""
    frame = table.frame
    rungs = sorted(frame["student_updates"].unique())
    iterations = int(frame["iterations"].iloc[0]) if "iterations" in frame else int(rungs[-1]) * 6
    spec = {"name": f"sim-{method}-{scheduler}", "method": method, "baseline": False,
            "backbones": {b: {} for b in table.values["backbone"]},
            "parameters": {"anchor_k": {"values": table.ks},
                           "lambda_div": {"values": [float(v) for v in table.values["lambda_div"]]}},
            "train": {"iterations": iterations}, "eval": {"every": int(rungs[0])},
            "objective": {"diversity_weight": args.diversity_weight},
            "scheduler": {"type": scheduler, "grace_period": args.grace_period or int(rungs[0]),
                          "reduction_factor": args.reduction_factor, "brackets": args.brackets},
            "wandb": {"enabled": False}}
    if len(table.values["backbone"]) > 1:
        spec["parameters"]["backbone"] = {"values": list(table.values["backbone"])}
    if args.min_quality is not None:
        spec["objective"]["min_quality"] = args.min_quality
    path = directory / f"{method}-{scheduler}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def trajectory(reports: pd.DataFrame, truth: dict, points: pd.DataFrame, min_quality: float) -> pd.DataFrame:
    """(compute, hypervolume fraction, recommended true J) after every report of one search.

    After each report: the front the search shows (`tune.simulate.replay.shown_front`: each trial's kept
    student so far, its best report by J at or above the floor, as ``tune.search`` writes it), per backbone; each chosen (configuration,
    budget) is scored by its mean over the table's training seeds (``points``), not by the
    replayed seed's value it was chosen for (the optimizer's curse), and the fraction is its
    hypervolume over the true front's (every configuration at every budget). The recommended
    trial is the shown front's highest J (`tune.outputs.front.recommended`; with no front yet, the
    highest J shown)."""
    key = ["backbone", "anchor_k", "lambda_div", "student_updates"]
    true_of = {k: (d, q, j) for k, d, q, j in zip(points[key].itertuples(index=False, name=None),
                                                   points["diversity_score"], points["quality_score"], points["objective"])}
    used = list(dict.fromkeys(["trial_id", *key, *SCORES, "objective", "compute"]))  # fewer columns: faster
    reports = reports[used].assign(report=np.arange(len(reports)))
    rows, shown, state = [], None, None
    for n in range(1, len(reports) + 1):
        seen = reports.iloc[:n]
        best = kept_reports(seen, min_quality=min_quality)
        if shown is None or not np.array_equal(best["report"].to_numpy(), shown):  # else the front is unchanged
            shown, state = best["report"].to_numpy(), _shown_state(best, truth, true_of, key, min_quality)
        rows.append({"compute": seen["compute"].iloc[-1], **state})
    return pd.DataFrame(rows)


def _shown_state(best: pd.DataFrame, truth: dict, true_of: dict, key: list, min_quality: float) -> dict:
    """Hypervolume fraction and recommended true J of the front shown, from each trial's best
    report (`trajectory`)."""
    fractions = []
    for backbone, t in truth.items():
        chosen = shown_front(best[best["backbone"] == backbone], min_quality=min_quality)
        judged = pd.DataFrame([true_of[k][:2] for k in chosen[key].itertuples(index=False, name=None)],
                              columns=list(SCORES)) if not chosen.empty else None
        fractions.append(hypervolume(judged, min_quality=min_quality) / t["hypervolume"] if judged is not None else 0.0)
    pick = recommended(shown_front(best, min_quality=min_quality))
    if pick.empty:
        pick = best.loc[[best["objective"].astype(float).idxmax()]]
    return {"hv_fraction": float(np.mean(fractions)), "recommended_J": float(true_of[tuple(pick[key].iloc[0])][2])}


def run(args):
    """Every strategy x workers x seed; ``--jobs`` processes share the (workers, seeds) blocks."""
    from concurrent.futures import ProcessPoolExecutor

    chunks = max(1, -(-args.jobs // len(args.workers)))  # seed blocks per worker count
    blocks = [(w, list(range(args.seeds))[i::chunks]) for w in args.workers for i in range(chunks)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            parts = list(pool.map(run_block, [args] * len(blocks), blocks))
    else:
        parts = [run_block(args, block) for block in blocks]
    rows = pd.concat([p[0] for p in parts], ignore_index=True).sort_values(["workers", "seed"], kind="stable")
    return rows, pd.concat([p[1] for p in parts], ignore_index=True), parts[0][2]


def run_block(args, block):
    """One worker count and a list of seeds: (result rows, trajectories, ground truth)."""
    workers, seeds = block
    table = RecordedTable.load(args.table)
    rows, curves, done = [], [], {}
    grid_size = len(table.ks) * len(table.values["lambda_div"]) * len(table.values["backbone"])
    with tempfile.TemporaryDirectory() as tmp:
        names = list(dict.fromkeys([FULL_GRID, *args.strategies]))  # the full grid is the compute reference
        spaces = {name: load_space(space_file(table, args, *STRATEGIES[name], Path(tmp))) for name in names}
        min_quality = spaces[FULL_GRID].objective.min_quality
        truth = ground_truth(table, diversity_weight=args.diversity_weight, min_quality=min_quality)
        points = true_points(table, diversity_weight=args.diversity_weight)
        best_j = max(t["best_objective"] for t in truth.values())
        for seed in seeds:
            reference = None
            for name in names:
                # Samplers get as many trials as the grid has points; a grid runs each point once.
                samples = 1 if spaces[name].method == "grid" else grid_size
                # A grid's order does not depend on the seed, nor do one-bracket ASHA's decisions:
                # only the training seed it replays (seed % the table's seeds) changes such a
                # search, so replay it once. With several brackets each trial's bracket is drawn
                # from the seed.
                once = spaces[name].method == "grid" and (spaces[name].scheduler.type == "fifo" or args.brackets == 1)
                key = (name, seed % len(table.seeds)) if once else None
                if key is None or key not in done:
                    sim = simulate(dataclasses.replace(spaces[name], seed=seed, num_samples=samples), table,
                                   workers=workers)
                    result = (sim, trajectory(sim.reports, truth, points, min_quality))
                    if key is not None:
                        done[key] = result
                sim, traj = done[key] if key is not None else result
                traj = traj.copy()
                if reference is None:  # the full grid, first: its compute and the front it ends with
                    reference, grid_hv = sim.compute["seconds"], traj["hv_fraction"].iloc[-1]
                if name not in args.strategies:
                    continue
                traj["budget"] = traj["compute"] / reference
                reach = traj.loc[traj["hv_fraction"] >= 0.95, "budget"]
                reach_grid = traj.loc[traj["hv_fraction"] >= 0.95 * grid_hv, "budget"]
                rows.append({"strategy": name, "workers": workers, "seed": seed,
                             "final_hv_fraction": traj["hv_fraction"].iloc[-1],
                             "compute_fraction": traj["budget"].iloc[-1],
                             "to_95": float(reach.iloc[0]) if not reach.empty else np.inf,
                             "to_95_of_grid": float(reach_grid.iloc[0]) if not reach_grid.empty else np.inf,
                             "regret": best_j - traj["recommended_J"].iloc[-1],
                             "trials": sim.compute["trials"], "student_updates": sim.compute["student_updates"],
                             "teacher_calls": sim.compute["teacher_calls"],
                             **{f"hv@{b:g}": hv_at(traj, b) for b in args.budgets},
                             **{f"now@{b:g}": hv_now(traj, b) for b in args.budgets}})
                curves.append(traj.assign(strategy=name, workers=workers, seed=seed))
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True), truth


def hv_at(traj: pd.DataFrame, budget: float) -> float:
    """The best hypervolume fraction reached at any moment within ``budget`` (a fraction of the
    full grid's compute): the running maximum, as the plot draws it. The moment is chosen on the
    true scores, which a user does not see: an optimistic reading (`hv_now` is the other)."""
    within = traj[traj["budget"] <= budget + 1e-9]
    return float(within["hv_fraction"].max()) if not within.empty else 0.0


def hv_now(traj: pd.DataFrame, budget: float) -> float:
    """The hypervolume fraction of the front the search shows when its compute reaches ``budget``
    (its state after the last report within the budget): what a user stopping there gets."""
    within = traj[traj["budget"] <= budget + 1e-9]
    return float(within["hv_fraction"].iloc[-1]) if not within.empty else 0.0


def gap_table(results: pd.DataFrame, budgets, *, default: str = DEFAULT) -> str:
    """The default strategy against each other one, per budget and worker count: the median and
    IQR of each one's hypervolume fraction at that budget (``now@``: the front shown then; in
    brackets ``hv@``: the best moment so far), the median per-seed difference (default - other;
    a seed replays one training seed and one sampler seed in both) and the share of seeds where
    the default is ahead or level."""
    lines = ["| workers | against | budget | default: now (best so far) | other: now (best so far) | "
             "median difference, now | seeds default >= other, now |", "|---" * 7 + "|"]
    for workers, by_workers in results.groupby("workers"):
        mine = by_workers[by_workers["strategy"] == default].set_index("seed")
        for other, theirs in by_workers[by_workers["strategy"] != default].groupby("strategy", sort=False):
            theirs = theirs.set_index("seed").loc[mine.index]
            for b in budgets:
                now, best = f"now@{b:g}", f"hv@{b:g}"
                diff = mine[now] - theirs[now]
                lines.append(f"| {workers} | {other} | {b:g} | {_iqr(mine[now])} ({mine[best].median():.2f}) | "
                             f"{_iqr(theirs[now])} ({theirs[best].median():.2f}) | {diff.median():+.3f} | "
                             f"{(diff >= -1e-12).mean():.0%} |")
    return "\n".join(lines)


def _iqr(values: pd.Series) -> str:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:.2f} [{q1:.2f}, {q3:.2f}]"


def summary_table(results: pd.DataFrame, budgets=BUDGETS) -> str:
    def spread(series: pd.Series) -> str:
        finite = series[np.isfinite(series)]
        if finite.empty:
            return "never"
        q1, med, q3 = np.percentile(finite, [25, 50, 75]) if len(finite) == len(series) else (np.nan, np.median(series), np.nan)
        reached = f" ({len(finite)}/{len(series)} reach)" if len(finite) < len(series) else ""
        return (f"{med:.2f} [{q1:.2f}, {q3:.2f}]" if np.isfinite(q1) else f"{med:.2f}") + reached

    lines = ["| workers | strategy | compute to 95% (median [IQR]) | compute to 95% of the full grid's front | "
             "final HV fraction | compute used | regret of the recommended (J) | "
             + " | ".join(f"HV at {b:g}" for b in budgets) + " |",
             "|---" * (7 + len(budgets)) + "|"]
    for (workers, name), g in results.groupby(["workers", "strategy"], sort=False):
        lines.append(f"| {workers} | {name} | {spread(g['to_95'])} | {spread(g['to_95_of_grid'])} | "
                     f"{g['final_hv_fraction'].median():.3f} | "
                     f"{g['compute_fraction'].median():.2f} | {g['regret'].median():.3f} | "
                     + " | ".join(f"{g[f'hv@{b:g}'].median():.2f}" for b in budgets) + " |")
    return "\n".join(lines)


def plot(curves: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, 1.05, 85)
    workers = sorted(curves["workers"].unique())
    fig, axes = plt.subplots(1, len(workers), figsize=(6 * len(workers), 4.5), squeeze=False, sharey=True)
    for ax, w in zip(axes[0], workers):
        for name, g in curves[curves["workers"] == w].groupby("strategy", sort=False):
            per_seed = []
            for _, s in g.groupby("seed"):
                now = s["hv_fraction"].to_numpy()  # the front shown at that moment (`hv_now`)
                idx = np.searchsorted(s["budget"].to_numpy(), grid, side="right") - 1
                per_seed.append(np.where(idx >= 0, now[np.clip(idx, 0, None)], 0.0))
            per_seed = np.array(per_seed)
            med = np.median(per_seed, axis=0)
            line, = ax.plot(grid, med, label=name)
            ax.fill_between(grid, *np.percentile(per_seed, [25, 75], axis=0), color=line.get_color(), alpha=0.15)
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{w} workers")
        ax.set_xlabel("compute spent / full grid's compute")
    axes[0][0].set_ylabel("HV of the front shown / true front's")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    results, curves, truth = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    table_md = summary_table(results, args.budgets)
    settings = (f"grace period {args.grace_period or 'the first rung'}, reduction factor {args.reduction_factor:g}, "
                f"brackets {args.brackets}")
    lines = [f"table: {args.table}, {args.seeds} seeds per strategy, workers {args.workers}; {settings}; "
             f"simulated in {time.time() - started:.0f} s", ""]
    for backbone, t in truth.items():
        lines.append(f"true front ({backbone}, mean over seeds, every budget): hypervolume {t['hypervolume']:.4f}, "
                     f"best J {t['best_objective']:.4f}")
        cols = ["anchor_k", "lambda_div", "student_updates", "diversity_score", "diversity_score_std", "quality_score",
                "quality_score_std", "objective"]
        lines.append(t["front"][cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    lines += ["", "HV at b: the best hypervolume fraction at any moment within b of the full grid's compute", "",
              table_md]
    if DEFAULT in args.strategies and len(args.strategies) > 1:
        lines += ["", f"{DEFAULT} (the default) against each strategy, hypervolume fraction at each budget "
                  "(now: the front shown when the compute reaches it):", "", gap_table(results, args.budgets)]
    text = "\n".join(lines)
    print(text)
    (args.out.with_suffix(".md")).write_text(text + "\n")
    results.to_csv(args.out.with_suffix(".csv"), index=False)
    plot(curves, args.out.with_suffix(".png"))
    print(f"\nwrote {args.out.with_suffix('.png')}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
