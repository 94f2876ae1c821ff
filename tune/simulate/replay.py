"""Replay a search on recorded learning curves: the real Ray Tune schedulers and search
algorithms, a virtual clock, no training.

A tabulated benchmark (`tune.simulate.table`, recorded by ``bench/tabular.py``) holds every report a
trial of the grid would make. `simulate` runs a search the way Ray Tune's `TuneController`
drives one, but with the recorded results instead of trainings:

- the search algorithm is the one ``tune.search`` builds for the space, `tune.run.searcher.build_searcher`
  (the planned trials, then Optuna's random, TPE or NSGA-II sampler through Ray's `OptunaSearch`),
  wrapped like Tune wraps it (`ConcurrencyLimiter`, `SearchGenerator`); its ``next_trial()``
  gives real `ray.tune.experiment.Trial` objects;
- the scheduler is `tune.schedulers.make_scheduler(space.scheduler, ...)`: FIFO, Ray's ASHA, the
  project's MO-ASHA;
- they are called as `TuneController` calls them (ray/tune/execution/tune_controller.py): each
  result goes to ``scheduler.on_trial_result``; STOP then ``scheduler.on_trial_complete`` and
  ``search_alg.on_trial_complete``; CONTINUE ``search_alg.on_trial_result``; a trial whose curve
  ends (its function returned) gets ``on_trial_complete`` from both; a new trial is asked for
  (``next_trial`` then ``scheduler.on_trial_add`` and ``choose_trial_to_run``) when a worker frees.
  Unlike Tune, a trial is created only when a worker is free, so a sampler suggests with the
  results known at that moment (as Tune does with one pending trial).
- **Reports**: a trial reports at the recorded budgets its space's ``eval.every`` reaches (and at
  its last), not at every budget the table recorded.
- **Virtual clock**: ``workers`` trials run at once; a trial's time between two reports is the
  recorded wall time between them (evaluation included), except that the anchor's recorded
  seconds are replaced by the shared cache's cost: the first trial of a (backbone, seed) to reach
  student update u pays one anchor pass (`RecordedTable.calls_per_pass` teacher calls for every K
  of the space, at the measured seconds per call) for each update not yet computed; later trials
  read it free. vanilla DMD (lambda_div = 0) needs no anchor. Ties in time go to the trial started
  first.
- **Compute spent** is that same time summed over trials (trial seconds without the anchor, plus
  the anchor passes computed), with the student updates and teacher calls behind it.

**The front shown** (`shown_front`) is the one a search shows after a set of reports: each
trial's kept student so far (`tune.outputs.kept.kept_reports`: its best report by J at or above the
floor, the report whose checkpoint Ray keeps), then `tune.outputs.front.pareto_front`: the same
functions as ``tune.search``'s outputs.

Each simulated trial replays one recorded training seed: the space's ``seed`` picks the table's
seed (``table.seeds[space.seed % len(table.seeds)]``), as every trial of a real search trains with
the space's seed. A suggestion is mapped to the nearest recorded configuration
(`RecordedTable.snap`, documented there).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dpdmd.config import vanilla_dmd

from ..space.schema import SearchSpace
from .table import RecordedTable, TableError, with_scores

TRAINABLE = "dpdmd_simulated"


@dataclass
class SimulatedTrial:
    """What happened to one trial: its configs, the reports it made, and why it ended."""

    trial: object  # the ray.tune Trial the search algorithm created
    suggested: dict
    config: dict  # the nearest recorded configuration
    curve: list[dict]
    started: float
    reports: int = 0  # how many of ``curve`` were made
    stopped_early: bool = False
    anchor_updates: int = 0  # student updates whose anchor this trial has been charged for


@dataclass
class Simulation:
    """A finished simulated search.

    ``reports``: one row per result the scheduler saw (``trial_id``, the configs, ``time`` and
    ``compute`` in seconds when it arrived, every recorded metric and the scores, and the
    scheduler's ``decision`` on it: ``CONTINUE`` or ``STOP``); ``trials``:
    one row per trial (last student updates, ``stopped_early``); ``compute``: totals."""

    reports: pd.DataFrame
    trials: pd.DataFrame
    compute: dict = field(default_factory=dict)


class _Controller:
    """The part of `TuneController` the schedulers read: the trials, in creation order, and the
    live ones (not ended) as a set, which Tune's controller keeps as trials are added and end."""

    def __init__(self):
        self.trials: list = []
        self.live: set = set()

    def add(self, trial) -> None:
        self.trials.append(trial)
        self.live.add(trial)

    def get_trials(self):
        return self.trials

    def get_live_trials(self):
        return self.live


def search_algorithm(space: SearchSpace, *, workers: int, num_samples: int | None = None):
    """The search's own searcher (`tune.run.searcher.build_searcher`: the planned trials, then the
    sampler's), wrapped as `tune.run` wraps a `Searcher` (`ConcurrencyLimiter`,
    `SearchGenerator`), with its experiment added; ready for ``next_trial()``."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    from ..space.trials import planned_trials
    from ..run.searcher import build_searcher

    sampled = 0 if space.method == "grid" else (num_samples or space.num_samples)
    alg = SearchGenerator(ConcurrencyLimiter(build_searcher(space), max_concurrent=workers))
    alg.set_search_properties(None, None, {})
    tune.register_trainable(TRAINABLE, lambda config: None)
    alg.add_configurations({"simulated": {"run": TRAINABLE, "config": {},
                                          "num_samples": len(planned_trials(space)) + sampled}})
    return alg


def max_student_updates(space: SearchSpace, table: RecordedTable) -> int:
    """The scheduler's max_t: the space's budget, capped by what the table recorded."""
    config0 = space.train_config(space.base_point())
    wanted = space.scheduler.max_t or space.max_student_updates(config0)
    return int(min(wanted, table.frame["student_updates"].max()))


def simulate(space: SearchSpace, table: RecordedTable, *, workers: int, num_samples: int | None = None) -> Simulation:
    """Run ``space``'s search on ``table`` with ``workers`` trials at once (module docstring)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    # Ray's ASHA draws each trial's bracket from numpy's global generator; samplers have their own seeds.
    np.random.seed(space.seed)
    random.seed(space.seed)
    replay = _Replay(space, table, workers=workers, num_samples=num_samples)
    for _ in range(workers):
        if not replay.start(0.0):
            break
    while replay.events:
        replay.next_report()
    return _summarise(replay.running, replay.rows, compute=replay.compute, teacher_calls=replay.teacher_calls,
                      clock=replay.clock)


def evaluated(student_updates: pd.Series, every: int, max_t: int) -> pd.Series:
    """The recorded reports a trial evaluating ``every`` student updates (0: only at the end) and
    ending at ``max_t`` would have made: a table recorded more often holds more than it saw."""
    final = student_updates == min(max_t, student_updates.max())
    on_cadence = (student_updates % every == 0) if every else False
    return (student_updates <= max_t) & (on_cadence | final)


class _Replay:
    """A simulated search in progress: the searcher and scheduler as `TuneController` drives them,
    the virtual clock, and how far the shared anchor cache has got (module docstring)."""

    def __init__(self, space: SearchSpace, table: RecordedTable, *, workers: int, num_samples: int | None):
        from ..schedulers import make_scheduler

        self.space, self.table = space, table
        self.seed = table.seeds[space.seed % len(table.seeds)]
        self.max_t = max_student_updates(space, table)
        self.eval_every = space.train_config(space.base_point()).eval.every  # the space's, every trial's
        self.alg = search_algorithm(space, workers=workers, num_samples=num_samples)
        self.scheduler = make_scheduler(space.scheduler, max_t=self.max_t)
        self.controller = _Controller()
        self.ks = space.anchor_ks()
        self.anchors_done: dict[tuple, int] = {}  # (backbone, seed) -> student updates whose anchors exist
        self.events: list = []  # heap of (time of the report, trial index = start order, its seconds of compute)
        self.running: list[SimulatedTrial] = []
        self.rows: list[dict] = []
        self.clock, self.compute, self.teacher_calls = 0.0, 0.0, 0

    def start(self, now: float) -> bool:
        """Ask the searcher for a trial and the scheduler which to run; schedule its first report.
        False when there is nothing to run."""
        from ray.tune.experiment import Trial

        if not self.alg.is_finished():
            trial = self.alg.next_trial()
            if trial is not None:
                self.controller.add(trial)
                self.scheduler.on_trial_add(self.controller, trial)
        trial = self.scheduler.choose_trial_to_run(self.controller)
        if trial is None:
            return False
        suggested = dict(trial.config)  # the flat trial (`tune.run.searcher`)
        config = self.table.snap(_searched(suggested, self.space, self.table))
        curve = with_scores(self.table.curve(config, self.seed), diversity_weight=self.space.objective.diversity_weight)
        curve = curve[evaluated(curve["student_updates"], self.eval_every, self.max_t)]
        curve = curve.to_dict("records")
        if not curve:
            raise TableError(f"{self.table.source}: the run {config} seed {self.seed} has no report within "
                             f"{self.max_t} updates")
        trial.set_status(Trial.RUNNING)
        sim = SimulatedTrial(trial=trial, suggested=suggested, config=config, curve=curve, started=now)
        self.running.append(sim)
        seconds = self.step_seconds(sim, 0)
        heapq.heappush(self.events, (now + seconds, len(self.running) - 1, seconds))
        return True

    def step_seconds(self, sim: SimulatedTrial, index: int) -> float:
        """Seconds from report index-1 to report index: recorded time without the anchor, plus
        the anchor passes this trial is first to need (charged to ``compute`` here too)."""
        now_row, prev = sim.curve[index], (sim.curve[index - 1] if index else None)
        seconds = now_row["wall_seconds"] - (prev["wall_seconds"] if prev else 0.0)
        seconds -= now_row.get("seconds_anchor", 0.0) - (prev.get("seconds_anchor", 0.0) if prev else 0.0)
        vanilla = all(sim.config.get(name) == value for name, value in vanilla_dmd().items())
        if not vanilla:  # vanilla DMD asks for no anchor
            key = (sim.config["backbone"], self.seed)
            done = self.anchors_done.get(key, 0)
            new = max(0, int(now_row["student_updates"]) - done)
            if new:
                calls = new * self.table.calls_per_pass(sim.config["backbone"], self.ks)
                seconds += calls * self.table.seconds_per_teacher_call(sim.config["backbone"])
                self.teacher_calls += calls
                self.anchors_done[key] = done + new
        return seconds

    def next_report(self) -> None:
        """The earliest pending report reaches the scheduler (then the searcher), as Tune's
        controller passes it; a trial that ends frees its worker for the next."""
        from ray.tune.schedulers import TrialScheduler

        self.clock, index, seconds = heapq.heappop(self.events)
        self.compute += seconds
        sim = self.running[index]
        result = dict(sim.curve[sim.reports], trial_id=sim.trial.trial_id, training_iteration=sim.reports + 1,
                      done=False, **sim.config)
        sim.reports += 1
        self.rows.append(dict(result, time=self.clock, compute=self.compute, seed=self.seed,
                              **{f"suggested_{k}": v for k, v in sim.suggested.items()}))
        decision = self.scheduler.on_trial_result(self.controller, sim.trial, result)
        self.rows[-1]["decision"] = decision  # the scheduler's answer to this report (CONTINUE, STOP)
        if decision == TrialScheduler.PAUSE:
            raise NotImplementedError("the simulator replays asynchronous schedulers (FIFO, ASHA, MO-ASHA); "
                                      "a scheduler that pauses trials is not supported")
        if decision == TrialScheduler.STOP:
            sim.stopped_early = sim.reports < len(sim.curve)
            self.finish(sim, result)
        else:
            self.alg.on_trial_result(sim.trial.trial_id, result)
            if sim.reports < len(sim.curve):
                seconds = self.step_seconds(sim, sim.reports)
                heapq.heappush(self.events, (self.clock + seconds, index, seconds))
                return
            self.finish(sim, result)  # the recorded run ended: the function returned
        self.start(self.clock)

    def finish(self, sim: SimulatedTrial, result: dict) -> None:
        from ray.tune.experiment import Trial

        self.scheduler.on_trial_complete(self.controller, sim.trial, result)
        self.alg.on_trial_complete(sim.trial.trial_id, result=result)
        sim.trial.set_status(Trial.TERMINATED)
        self.controller.live.discard(sim.trial)


def _searched(suggested: dict, space: SearchSpace, table: RecordedTable) -> dict:
    """The trial's values on the table's axes. A parameter the table has no axis for may only be
    fixed (``{value: ...}``: the table was recorded at one value of it); searching it is an error."""
    from .table import AXES

    searched = [n for n, p in space.parameters.items() if p.value is None and n not in AXES]
    if searched:
        raise TableError(f"{table.source}: the table records only {', '.join(AXES)}; the space searches "
                         f"{', '.join(searched)} (fix it with {{value: ...}} or record a table over it)")
    point = {k: v for k, v in suggested.items() if k in AXES}
    if "backbone" not in point and len(space.backbone_names()) == 1:
        point["backbone"] = space.backbone_names()[0]
    return point


def _summarise(running: list[SimulatedTrial], rows: list[dict], *, compute: float, teacher_calls: int,
               clock: float) -> Simulation:
    trials = pd.DataFrame([{"trial_id": s.trial.trial_id, **s.config,
                            **{f"suggested_{k}": v for k, v in s.suggested.items()}, "student_updates": s.curve[s.reports - 1]["student_updates"],
                            "reports": s.reports, "stopped_early": s.stopped_early, "started": s.started}
                           for s in running])
    updates = int(trials["student_updates"].sum()) if not trials.empty else 0
    return Simulation(reports=pd.DataFrame(rows), trials=trials,
                      compute={"seconds": compute, "wall_seconds": clock, "student_updates": updates,
                               "teacher_calls": teacher_calls, "trials": len(running)})


def shown_front(reports: pd.DataFrame, *, min_quality: float, min_student_updates: int = 0) -> pd.DataFrame:
    """The front a user of the search sees after ``reports`` (one row per report, as
    `Simulation.reports`: ``trial_id``, ``student_updates``, the scores and ``objective``): each
    trial's kept student so far (`tune.outputs.kept.kept_reports`), non-dominated above the floor
    (`tune.outputs.front.pareto_front`), sorted by diversity_score. Empty when nothing was reported."""
    from ..outputs.front import pareto_front
    from ..outputs.kept import kept_reports

    if reports.empty:
        return reports
    return pareto_front(kept_reports(reports, min_quality=min_quality, min_student_updates=min_student_updates))


def with_settings(space: SearchSpace, **changes) -> SearchSpace:
    """A copy of ``space`` with top-level fields changed (``scheduler=``, ``method=``, ``seed=``, ...)."""
    return space.model_copy(update=changes)


def run_simulated(space: SearchSpace, table_path, *, name: str, storage: str) -> dict:
    """``python -m tune.search --space S --simulate TABLE``: the space's search replayed on the table
    with ``max_concurrent`` workers (0: one), printed and written to STORAGE/NAME-simulated/
    (``trials.parquet``: every report the scheduler saw; ``summary.json``)."""
    import json
    from pathlib import Path

    from .table import ground_truth, hypervolume, true_points

    table = RecordedTable.load(table_path)
    workers = space.max_concurrent or 1
    sim = simulate(space, table, workers=workers)
    full = simulate(with_settings(space, method="grid", scheduler=space.scheduler.model_copy(update={"type": "fifo"})),
                    table, workers=workers) if space.method == "grid" else None
    weight, floor = space.objective.diversity_weight, space.objective.min_quality
    min_updates = space.objective.min_student_updates
    front = shown_front(sim.reports, min_quality=floor, min_student_updates=min_updates)
    truth = true_points(table, diversity_weight=weight).set_index(["backbone", "anchor_k", "lambda_div", "student_updates"])
    # each chosen (configuration, budget) judged by its mean over the table's training seeds, not
    # the one replayed: the best report of a noisy curve is chosen partly for its luck
    judged = truth.loc[list(zip(front["backbone"], front["anchor_k"], front["lambda_div"], front["student_updates"]))]
    gt = ground_truth(table, diversity_weight=weight, min_quality=floor, min_updates=min_updates)
    summary = {"table": str(table_path), "workers": workers, "training_seed": int(sim.reports["seed"].iloc[0]),
               "compute": sim.compute,
               "compute_fraction_of_full_grid": sim.compute["seconds"] / full.compute["seconds"] if full else None,
               "hypervolume_true": {b: t["hypervolume"] for b, t in gt.items()},
               "hypervolume_found": hypervolume(judged.reset_index(), min_quality=floor),
               "stopped": sim.trials[sim.trials["stopped_early"]][["trial_id", "backbone", "anchor_k", "lambda_div",
                                                                    "student_updates"]].to_dict("records")}
    out = Path(storage) / f"{name}-simulated"
    out.mkdir(parents=True, exist_ok=True)
    sim.reports.to_parquet(out / "trials.parquet", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    cols = ["trial_id", "backbone", "anchor_k", "lambda_div", "student_updates", "stopped_early"]
    print(f"simulated {space.scheduler.type} / {space.method} on {table_path} with {workers} worker(s):")
    print(sim.trials[cols].to_string(index=False))
    print("\nfront found (diversity_score, quality_score of each trial's best report by J):")
    print(front[["backbone", "anchor_k", "lambda_div", "student_updates", "diversity_score", "quality_score",
                 "objective"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\ncompute: {sim.compute['seconds']:.0f} s of recorded trial time ({sim.compute['student_updates']} student "
          f"updates, {sim.compute['teacher_calls']} anchor teacher calls), virtual wall {sim.compute['wall_seconds']:.0f} s"
          + (f"; {summary['compute_fraction_of_full_grid']:.0%} of the full grid's" if full else ""))
    print(f"hypervolume of the front found (true scores) {summary['hypervolume_found']:.4f}; true front "
          + ", ".join(f"{b} {v:.4f}" for b, v in summary["hypervolume_true"].items()))
    print(f"outputs in {out}/: trials.parquet, summary.json")
    return summary


def simulate_command(space: SearchSpace, args) -> int:
    """The ``--simulate TABLE`` branch of ``tune.search``; a bad table is exit status 2."""
    import os
    import sys

    try:  # --storage's $VARS expanded as the search's are (tune.storage.uri.storage_uri)
        run_simulated(space, args.simulate, name=args.name or space.name, storage=os.path.expandvars(args.storage))
    except TableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
