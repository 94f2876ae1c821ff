"""A search at thousands of trials, on the simulator: what the driver's own work costs per report.

A random search (Optuna's random sampler through Ray's `OptunaSearch`, as ``tune.search`` builds
it) over the recorded table's axes (backbone, K in 1..30, lambda_div log-uniform in 0.01..1),
replayed by `tune.simulate` with MO-ASHA or Ray's ASHA on J (grace period 10 student updates,
reduction factor 3, a report every 10, 100 at most; 16 trials at a time), for 1,000, 3,000 and
10,000 trials. Each (scheduler, trials) runs in a fresh process and measures:

- **scheduler ms / report**: the scheduler's calls (``on_trial_add``, ``choose_trial_to_run``,
  ``on_trial_result``, ``on_trial_complete``) per report, with its rungs saved to a file as a live
  search saves them (``scheduler_state.jsonl``, `tune.schedulers.persistent`; the simulator alone
  keeps none);
- **searcher ms / report**: the search algorithm's (``next_trial``: Optuna's suggestion and Ray's
  `Trial`; ``on_trial_result``, ``on_trial_complete``), per report;
- **Ray ms / report**: ``Trial.update_last_result``, the bookkeeping Tune's controller does on
  every result before the scheduler sees it (its per-trial metric statistics: part of what
  ray#64231 measures in a live driver);
- **driver MiB**: the process's resident memory after the search, above what it held before it
  (after a 20-trial search, so that imports do not count): Ray's trials, the rungs, the searcher's
  study, the reports, and the simulator's own copy of each trial's recorded curve (~25 KiB a
  trial, which a live driver does not hold); and per trial;
- **outputs s**: the outputs a search writes (`tune.run.driver`): the reports as tables
  (`unique_reports`, `final_results`, `kept_reports`, one front per backbone, `summarize`) and the
  files (`tune.outputs.files.write_outputs`: trials.parquet, kept.parquet, pareto.parquet,
  pareto.png, curves.png, summary.json), with the two figures also timed on their own.

What it does not measure: Ray's own driver (the trial actors, their result queues, the
experiment-state snapshots, reading the results back: ray#64231, ~300 KB per trial), which
needs real trials.

    python bench/load.py                                   # 1k, 3k, 10k x MO-ASHA, ASHA (minutes)
    python bench/load.py --trials 1000 --schedulers moasha --out /tmp/load
    python bench/load.py --one moasha 1000                 # one measure, as a JSON line
    python bench/load.py --before OLD.csv --plot-only      # redraw the plot, an earlier checkout's in grey

Writes ``--out``.csv (one row per measure), .md (the table) and .png (the curves).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLE = ROOT / "bench" / "results" / "tabular" / "full" / "table.parquet"
WORKERS = 16


def space_spec(scheduler: str, trials: int) -> dict:
    return {"name": f"load-{scheduler}-{trials}", "method": "random", "seed": 0, "num_samples": trials,
            "max_concurrent": WORKERS, "baseline": False,
            "backbones": {"digits-flow": {}, "digits-eps": {}},
            "parameters": {"backbone": {"values": ["digits-flow", "digits-eps"]},
                           "anchor_k": {"distribution": "int_uniform", "min": 1, "max": 30},
                           "lambda_div": {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0}},
            "train": {"iterations": 600}, "eval": {"every": 10},
            "scheduler": {"type": scheduler, "grace_period": 10, "reduction_factor": 3},
            "wandb": {"enabled": False}}


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def measure(scheduler: str, trials: int) -> dict:
    """One (scheduler, trials) in this process (module docstring); returns its numbers."""
    import numpy as np
    import yaml

    import tune.schedulers as schedulers
    from tune.outputs import files
    from tune.outputs.front import backbone_fronts, pareto_rows, summarize
    from tune.outputs.kept import kept_reports, unique_reports
    from tune.outputs.raw_units import evaluation_settings
    from tune.outputs.results import final_results
    from tune.run.driver import compute_spent
    from tune.simulate import replay
    from tune.simulate.table import RecordedTable
    from tune.space import load_space

    work = Path(tempfile.mkdtemp(prefix="dpdmd-load-"))
    path = work / "space.yaml"
    path.write_text(yaml.safe_dump(space_spec(scheduler, trials)))
    space = load_space(path)
    table = RecordedTable.load(TABLE)
    state = work / "scheduler_state.jsonl"
    made = schedulers.make_scheduler
    schedulers.make_scheduler = lambda spec, **kw: made(spec, **dict(kw, state_uri=str(state)))  # as live

    spent: dict[str, float] = defaultdict(float)

    def timed(obj, name: str, key: str, before=None) -> None:
        method = getattr(obj, name)

        def wrapper(*args, **kwargs):
            if before is not None:
                start = time.perf_counter()
                before(*args, **kwargs)
                spent["ray"] += time.perf_counter() - start
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start

        setattr(obj, name, wrapper)

    def bookkeeping(controller, trial, result):  # TuneController._process_trial_result, after the scheduler
        trial.update_last_result(result)

    try:  # the search's callback that keeps Ray's per-trial windows out (tune.run.trial_metadata)
        from tune.run.trial_metadata import LightTrialMetadata

        light = LightTrialMetadata()
    except ImportError:  # a checkout before it (the "before" measures)
        light = None

    def starting(controller, trial):  # TuneController calls callbacks' on_trial_start as the trial starts
        if light is not None:
            light.on_trial_start(0, [], trial)

    warm = work / "warm.yaml"  # everything imported and cached first: the memory measured is the search's
    warm.write_text(yaml.safe_dump(space_spec(scheduler, 20)))
    replay.simulate(load_space(warm), table, workers=WORKERS)
    np.random.seed(space.seed)
    random.seed(space.seed)
    rss0 = _rss()
    started = time.perf_counter()
    run = replay._Replay(space, table, workers=WORKERS, num_samples=trials)
    for name in ("choose_trial_to_run", "on_trial_complete"):
        timed(run.scheduler, name, "scheduler")
    timed(run.scheduler, "on_trial_add", "scheduler", before=starting)
    timed(run.scheduler, "on_trial_result", "scheduler", before=bookkeeping)
    for name in ("next_trial", "on_trial_result", "on_trial_complete"):
        timed(run.alg, name, "searcher")
    for _ in range(WORKERS):
        if not run.start(0.0):
            break
    while run.events:
        run.next_report()
    sim = replay._summarise(run.running, run.rows, compute=run.compute, teacher_calls=run.teacher_calls,
                            clock=run.clock)
    search_s = time.perf_counter() - started
    rss = _rss() - rss0
    reports = len(sim.reports)

    plots: dict[str, float] = defaultdict(float)
    for name, key in (("pareto_figure", "plot_pareto"), ("curves_figure", "plot_curves")):
        original = getattr(files, name)

        def plot(*args, _original=original, _name=key, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                plots[_name] += time.perf_counter() - start

        setattr(files, name, plot)
    start = time.perf_counter()
    o = space.objective  # as tune.run.driver does after the fit
    rows = unique_reports(sim.reports)
    final = final_results(rows, min_quality=o.min_quality)
    kept = kept_reports(rows, min_quality=o.min_quality, min_student_updates=o.min_student_updates)
    fronts = backbone_fronts(kept)
    summary = summarize(kept, fronts, cache_stats={}, compute=compute_spent(final, 0.0), space_name=space.name,
                        min_quality=o.min_quality, diversity_weight=o.diversity_weight,
                        evaluation=evaluation_settings(space))
    summary["failed_trials"] = []
    summary["min_student_updates"] = o.min_student_updates
    summary["rungs"] = space.scheduler.milestones(space.max_t())
    pareto = pareto_rows(fronts)
    tables_s = time.perf_counter() - start
    start = time.perf_counter()
    files.write_outputs(work / "out", rows, kept, pareto, summary, rungs=summary["rungs"],
                        min_student_updates=o.min_student_updates)
    write_s = time.perf_counter() - start
    return {"scheduler": scheduler, "trials": len(sim.trials), "reports": reports,
            "scheduler_ms_per_report": 1e3 * spent["scheduler"] / reports,
            "searcher_ms_per_report": 1e3 * spent["searcher"] / reports,
            "ray_ms_per_report": 1e3 * spent["ray"] / reports,
            "search_s": search_s, "driver_mib": rss / 2**20, "driver_kib_per_trial": rss / 2**10 / len(sim.trials),
            "state_kib": state.stat().st_size / 2**10 if state.exists() else 0.0,
            "tables_s": tables_s, "write_s": write_s, "plot_pareto_s": plots["plot_pareto"],
            "plot_curves_s": plots["plot_curves"], "outputs_s": tables_s + write_s}


COLUMNS = {"scheduler": "scheduler", "trials": "trials", "reports": "reports",
           "scheduler_ms_per_report": "scheduler ms / report", "searcher_ms_per_report": "searcher ms / report",
           "ray_ms_per_report": "Ray ms / report", "search_s": "search s", "driver_mib": "driver MiB",
           "driver_kib_per_trial": "KiB / trial", "state_kib": "rungs file KiB", "outputs_s": "outputs s",
           "plot_curves_s": "of which curves.png s", "plot_pareto_s": "pareto.png s"}


def table_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for key in COLUMNS:
            value = row[key]
            cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, before: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("decision time per report (ms)", ["scheduler_ms_per_report", "searcher_ms_per_report",
                                                  "ray_ms_per_report"]),
              ("driver memory above the start (MiB)", ["driver_mib"]),
              ("time to write the outputs (s)", ["outputs_s", "plot_curves_s"])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"moasha": "-", "asha": "--"}
    for ax, (title, keys) in zip(axes, panels):
        for scheduler in sorted({r["scheduler"] for r in before or []}):  # the code before, in grey
            mine = sorted((r for r in before if r["scheduler"] == scheduler), key=lambda r: r["trials"])
            for key in keys:
                ax.plot([r["trials"] for r in mine], [r[key] for r in mine], styles.get(scheduler, ":"), marker="x",
                        color="0.6", label=f"before: {scheduler}: {COLUMNS[key]}")
        for scheduler in sorted({r["scheduler"] for r in rows}):
            mine = sorted((r for r in rows if r["scheduler"] == scheduler), key=lambda r: r["trials"])
            for key in keys:
                ax.plot([r["trials"] for r in mine], [r[key] for r in mine], styles.get(scheduler, ":"), marker="o",
                        label=f"{scheduler}: {COLUMNS[key]}")
        ax.set_xscale("log")
        ax.set_xlabel("trials")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--schedulers", nargs="+", default=["moasha", "asha"], choices=["moasha", "asha"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load")
    parser.add_argument("--one", nargs=2, metavar=("SCHEDULER", "TRIALS"), help="one measure, printed as JSON")
    parser.add_argument("--before", type=Path, metavar="CSV",
                        help="an earlier run's .csv (another checkout's), drawn in grey on the plot")
    parser.add_argument("--plot-only", action="store_true", help="redraw --out.png from --out.csv")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))), flush=True)
        return 0
    import pandas as pd

    before = pd.read_csv(args.before).to_dict("records") if args.before else None
    if args.plot_only:
        plot(pd.read_csv(args.out.with_suffix(".csv")).to_dict("records"), args.out.with_suffix(".png"), before)
        return 0
    rows = []
    for trials in args.trials:
        for scheduler in args.schedulers:  # a fresh process each: its memory is this search's alone
            proc = subprocess.run([sys.executable, __file__, "--one", scheduler, str(trials)], capture_output=True,
                                  text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out.with_suffix(".csv"), index=False)
    args.out.with_suffix(".md").write_text(table_markdown(rows) + "\n")
    plot(rows, args.out.with_suffix(".png"), before)
    print(table_markdown(rows))
    print(f"\nwritten: {args.out}.csv, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
