"""The simulator against a live search: `python -m tune.search` trains a tiny space with ASHA, then
the simulator replays that search's own recorded curves (its trials.parquet) and must stop the
same trials at the same rungs. One trial at a time (cpu: 2 per trial on 2 cores), so the order in
which results reach ASHA is fixed. Slow: a real search, ~5-10 minutes on 2 shared cores."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from tune.search import main
from tune.simulate import simulate
from tune.space import load_space
from tune.tabular import table_from_trials

SPACE = {"name": "live", "method": "grid", "seed": 0, "baseline": True,
         "backbones": {"digits-flow": {"resources": {"cpu": 2}}},
         "parameters": {"anchor_k": {"values": [5, 20]}, "lambda_div": {"values": [0.05, 0.5]}},
         "train": {"iterations": 48, "batch_size": 4}, "eval": {"every": 1, "seeds_per_prompt": 4},
         "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
         "wandb": {"enabled": False}}


@pytest.mark.slow
def test_simulator_replays_a_live_search(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    assert main(["--space", str(path), "--storage", str(tmp_path / "runs")]) == 0
    trials = pd.read_parquet(tmp_path / "runs" / "live" / "trials.parquet")
    live = sorted((float(g["lambda_div"].iloc[0]), int(g["anchor_k"].iloc[0]), int(g["student_updates"].max()))
                  for _, g in trials.groupby("trial_id"))
    sim = simulate(load_space(path), table_from_trials(trials, seed=0), workers=1)
    simulated = sorted((float(r.suggested_lambda_div), int(r.suggested_anchor_k), int(r.student_updates))
                       for r in sim.trials.itertuples())
    assert simulated == live
    assert any(updates < 8 for *_, updates in live)  # ASHA stopped something: the check is not vacuous
