"""The samplers: random, Optuna TPE and Optuna NSGA-II (multi-objective, with ASHA on the
combined objective), each with the vanilla-DMD baseline evaluated first."""

import argparse
import json

import pytest
import yaml

from tune.cli import search
from tune.run.tuner import build_tuner
from tune.space import load_space

SPACE = {
    "name": "methods",
    "seed": 0,
    "num_samples": 2,
    "max_concurrent": 2,
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"distribution": "int_uniform", "min": 2, "max": 5},
                   "lambda_div": {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0}},
    "train": {"iterations": 12, "batch_size": 2, "teacher_steps": 6},
    # 4 samples of one prompt: the teacher's k-NN precision, so its fidelity (the default quality),
    # can be 0, which nothing can be normalised by
    "eval": {"prompts": ["3"], "seeds_per_prompt": 4, "every": 1, "quality_metric": "class_prob"},
    "scheduler": {"type": "asha", "grace_period": 1},
    "wandb": {"enabled": False},
}


@pytest.mark.parametrize("method", ["random", "optuna_tpe", "optuna_nsga2"])
def test_every_sampler_builds_a_tuner(tmp_path, method):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "method": method}))
    space = load_space(path)
    assert space.anchor_ks() == [2, 3, 4, 5]  # every K the int range allows is cached
    args = argparse.Namespace(name=None, num_samples=None, resume=False)
    tuner = build_tuner(space, args, storage=str(tmp_path / "runs"), cache={"enabled": False})
    assert tuner is not None
    from tune.space import baseline_trials

    assert baseline_trials(space) == [{"baseline": True, "lambda_div": 0.0, "anchor_k": 2}]


def test_nsga2_search_runs_with_the_baseline_first(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "method": "optuna_nsga2"}))
    assert search.main(["--space", str(path), "--storage", str(tmp_path / "runs")]) == 0
    summary = json.loads((tmp_path / "runs" / "methods" / "summary.json").read_text())
    assert summary["trials"] == 3  # 2 sampled + the vanilla-DMD baseline
    import pandas as pd

    trials = pd.read_parquet(tmp_path / "runs" / "methods" / "trials.parquet")
    final = trials.sort_values("student_updates").groupby("trial_id").tail(1)
    assert (final["lambda_div"] == 0).sum() == 1
    sampled = final[final["lambda_div"] > 0]
    assert sampled["anchor_k"].between(2, 5).all() and sampled["lambda_div"].between(0.01, 1.0).all()


def test_baselines_come_first_and_never_reach_the_wrapped_searcher():
    """The state machine, fed by hand with no Ray running."""
    from ray.tune.search import Searcher

    from tune.run.searcher import TrialSearcher

    class Recording(Searcher):
        def __init__(self):
            super().__init__(metric="objective", mode="max")
            self.results, self.completed = [], []

        def suggest(self, trial_id):
            return {"lambda_div": 0.1, "anchor_k": 3}

        def on_trial_result(self, trial_id, result):
            self.results.append(trial_id)

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.completed.append(trial_id)

    inner = Recording()
    searcher = TrialSearcher([{"baseline": True, "lambda_div": 0.0, "anchor_k": 2}], inner, fixed={"cfg_scale": 2.0})
    assert searcher.suggest("t0") == {"baseline": True, "lambda_div": 0.0, "anchor_k": 2}
    assert searcher.suggest("t1") == {"baseline": False, "cfg_scale": 2.0, "lambda_div": 0.1, "anchor_k": 3}
    for t in ("t0", "t1"):
        searcher.on_trial_result(t, {"objective": 1.0})
        searcher.on_trial_complete(t, {"objective": 1.0})
    assert inner.results == ["t1"] and inner.completed == ["t1"]


def test_grid_trials_are_flat_and_the_plan_ends(tmp_path):
    """Grid: the baselines then every grid point, one flat shape, then FINISHED."""
    from ray.tune.search import Searcher

    from tune.run.searcher import build_searcher

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "method": "grid", "num_samples": 1,
                                    "parameters": {"anchor_k": {"values": [2, 4]}, "lambda_div": {"values": [0.1]},
                                                   "cfg_scale": {"value": 2.0}}}))
    space = load_space(path)
    searcher = build_searcher(space)
    trials = [searcher.suggest(f"t{i}") for i in range(3)]
    assert trials == [{"baseline": True, "lambda_div": 0.0, "anchor_k": 2, "cfg_scale": 2.0},
                      {"baseline": False, "cfg_scale": 2.0, "anchor_k": 2, "lambda_div": 0.1},
                      {"baseline": False, "cfg_scale": 2.0, "anchor_k": 4, "lambda_div": 0.1}]
    assert searcher.suggest("t3") == Searcher.FINISHED
    assert [space.train_config(t).anchor_k for t in trials] == [2, 2, 4]


@pytest.mark.parametrize("method", ["random", "optuna_tpe", "optuna_nsga2"])
def test_every_sampler_pickles_mid_search_and_continues_the_same(tmp_path, method):
    """Ray pickles the searcher to start a search and to checkpoint it for --resume. Optuna 5.1's
    NSGA-II holds a thread lock that pickle refuses; the unpickled searcher must go on suggesting
    exactly what the original would."""
    import ray.cloudpickle as cloudpickle

    from tune.run.searcher import build_searcher

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "method": method, "num_samples": 12, "baseline": False}))
    space = load_space(path)
    searcher = build_searcher(space)
    searcher.set_search_properties(None, None, {})
    for i in range(6):  # a generation's worth of results (NSGA-II's population is 50: still the first)
        config = searcher.suggest(f"t{i}")
        result = {"objective": config["lambda_div"], "diversity_score": config["lambda_div"],
                  "quality_score": 1 - config["lambda_div"], "student_updates": 1}
        searcher.on_trial_complete(f"t{i}", result)
    copy = cloudpickle.loads(cloudpickle.dumps(searcher))
    assert [copy.suggest(f"u{i}") for i in range(4)] == [searcher.suggest(f"u{i}") for i in range(4)]
