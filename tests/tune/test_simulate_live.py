"""The simulator against a live search (issue 10, section 2): `python -m tune.search` trains a tiny
space, then the simulator replays that search's own recorded curves (its trials.parquet, as a
table: `tune.simulate.table.table_from_trials`) with the same scheduler and grid searcher, and must make
the same decisions: the same reports seen, the same trials stopped at the same rungs.

One trial at a time (``max_concurrent: 1``), so the order in which results reach the scheduler is
the grid's order in both; with several workers a live search's order depends on real timing.

What is compared is the scheduler's decision on each report. Live, a trial whose last report is
below max_t was stopped there by the scheduler (the trainable trains to max_t otherwise) and every
earlier report was answered CONTINUE; the simulator records its scheduler's ``decision`` on every
report. Comparing last student updates alone would not do: a stopped trial's recorded curve ends
where it was stopped, so a simulator that wrongly continued it would end at the same update."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from tune.cli.search import main
from tune.simulate.replay import max_student_updates, simulate
from tune.space import load_space
from tune.simulate.table import table_from_trials

# 5 trials (2 x 2 grid + the vanilla-DMD baseline) of 8 student updates, evaluated at every update
# on 2 prompts x 4 seeds: rungs 1, 2 and 4 below max_t 8 (grace 1, reduction 2).
SPACE = {"name": "live", "method": "grid", "seed": 0, "max_concurrent": 1, "baseline": True,
         "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
         "parameters": {"anchor_k": {"values": [2, 5]}, "lambda_div": {"values": [0.05, 1.0]}},
         "train": {"iterations": 48, "batch_size": 4, "teacher_steps": 10},
         "eval": {"prompts": ["3", "7"], "seeds_per_prompt": 4, "every": 1},
         "objective": {"min_quality": 0.0},
         "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
         "wandb": {"enabled": False}}

KEY = ["anchor_k", "lambda_div", "student_updates"]


def live_decisions(trials: pd.DataFrame, max_t: int) -> tuple[set, set]:
    """(every report, the reports the scheduler answered STOP below max_t) of a live search, each
    as (anchor_k, lambda_div, student_updates)."""
    reports = {(int(k), float(lam), int(u)) for k, lam, u in trials[KEY].itertuples(index=False)}
    last = trials.sort_values("student_updates").groupby("trial_id").tail(1)
    stopped = {(int(k), float(lam), int(u)) for k, lam, u in last[KEY].itertuples(index=False) if u < max_t}
    return reports, stopped


def simulated_decisions(reports: pd.DataFrame, max_t: int) -> tuple[set, set]:
    seen = {(int(k), float(lam), int(u)) for k, lam, u in reports[KEY].itertuples(index=False)}
    stop = reports[(reports["decision"] == "STOP") & (reports["student_updates"] < max_t)]
    return seen, {(int(k), float(lam), int(u)) for k, lam, u in stop[KEY].itertuples(index=False)}


# One real search of 5 trials, one at a time: 80-100 s on 2 shared cores (Ray starts an actor per
# trial; training is ~8 s of it). ASHA runs by default; MO-ASHA is the same check, marked slow.
@pytest.mark.parametrize("scheduler", ["asha", pytest.param("moasha", marks=pytest.mark.slow)])
def test_simulator_replays_a_live_search(tmp_path, monkeypatch, scheduler):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(dict(SPACE, scheduler=dict(SPACE["scheduler"], type=scheduler))))
    assert main(["--space", str(path), "--storage", str(tmp_path / "runs")]) == 0
    trials = pd.read_parquet(tmp_path / "runs" / "live" / "trials.parquet")
    space, table = load_space(path), table_from_trials(trials, seed=SPACE["seed"])
    max_t = max_student_updates(space, table)
    assert max_t == 8  # the first trial always runs to the end: the table reaches the space's max_t
    live_reports, live_stopped = live_decisions(trials, max_t)

    sim = simulate(space, table, workers=1)
    sim_reports, sim_stopped = simulated_decisions(sim.reports, max_t)
    assert len(sim.trials) == trials["trial_id"].nunique() == 5
    assert sim_stopped == live_stopped
    assert sim_reports == live_reports  # so every report the live scheduler continued, the simulator continued
    assert live_stopped and len(live_stopped) < 5  # not vacuous: some trials stopped, some ran on
