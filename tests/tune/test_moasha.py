"""MO-ASHA tested the way Ray tests ASHA: fake results fed straight into `on_trial_result`, no
cluster; every decision below is worked out by hand in the comments."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from tune.schedulers.moasha import MultiObjectiveASHAScheduler, rank_points

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
NAN, INF = float("nan"), float("inf")


def trial(name):
    return SimpleNamespace(trial_id=name)


def result(t, d, q):
    return {"student_updates": t, "diversity_score": d, "quality_score": q}


def scheduler(**kw):
    """rf 2, grace 1, max_t 8: rungs at 1, 2 and 4 student updates (and max_t)."""
    args = dict(max_t=8, grace_period=1, reduction_factor=2)
    return MultiObjectiveASHAScheduler(**{**args, **kw})


def add(s, *names):
    trials = {n: trial(n) for n in names}
    for t in trials.values():
        s.on_trial_add(None, t)
    return trials


# --- the ranking ------------------------------------------------------------------------------------

def test_rank_puts_dominated_points_after_the_front():
    # (2, 2) and (0, 3) are the front; (1, 1) is dominated by (2, 2). Inside the front the
    # epsilon-net starts at the best quality, (0, 3).
    assert rank_points([(1, 1), (2, 2), (0, 3)]) == [2, 1, 0]


def test_rank_breaks_ties_in_a_layer_by_epsilon_net():
    # Four mutually non-dominated points. Start: best quality A=(0, 1). Scaled by the span 0.5 of
    # each axis, D=(1, 0) is farthest from A (2.83), then C=(0.5, 0.5) is 1.41 from both A and D
    # while B=(0.45, 0.55) is 1.27 from A: C before B, although B was recorded first.
    assert rank_points([(0, 1), (0.45, 0.55), (0.5, 0.5), (1, 0)]) == [0, 3, 2, 1]


def test_rank_exact_duplicates_keep_arrival_order():
    assert rank_points([(0.5, 0.5), (0.5, 0.5), (0.5, 0.5)]) == [0, 1, 2]


def test_rank_puts_nan_and_inf_last_in_arrival_order():
    # +inf is a reporting error, not "infinitely good": it ranks with the NaNs.
    assert rank_points([(NAN, 1), (0.1, 0.1), (INF, 0), (0.0, 0.0)]) == [1, 3, 0, 2]


def test_domination_ranks_are_the_layers_of_non_dominated_sorting():
    from tune.pareto import domination_ranks

    # (2, 2) and (0, 3) are the front; (1, 1) is dominated only by (2, 2); (0, 0) by everything.
    assert domination_ranks(np.array([(1, 1), (2, 2), (0, 3), (0, 0)], dtype=float)).tolist() == [1, 0, 0, 2]


# --- decisions at a rung ----------------------------------------------------------------------------

def test_dominated_trial_is_stopped_before_a_non_dominated_one():
    s = scheduler()
    t = add(s, "a", "b", "c")
    assert s.on_trial_result(None, t["a"], result(1, 0.5, 0.5)) == CONTINUE  # first at the rung
    # b is dominated by a; n = 2, ceil(2 / 2) = 1 keeps only a.
    assert s.on_trial_result(None, t["b"], result(1, 0.4, 0.4)) == STOP
    # c trades quality for diversity: non-dominated; n = 3 keeps 2: a and c.
    assert s.on_trial_result(None, t["c"], result(1, 0.6, 0.3)) == CONTINUE


def test_ties_in_the_front_go_to_the_epsilon_net_order():
    s = scheduler()
    t = add(s, "a", "b", "c", "d")
    assert s.on_trial_result(None, t["a"], result(1, 0.0, 1.0)) == CONTINUE
    # a, b non-dominated; keep 1: the net starts at the best quality, a.
    assert s.on_trial_result(None, t["b"], result(1, 0.45, 0.55)) == STOP
    # keep 2 of 3: a, then c (farther from a than b is, in span-scaled units).
    assert s.on_trial_result(None, t["c"], result(1, 0.5, 0.5)) == CONTINUE
    # keep 2 of 4: a, then d at the other end of the front; d continues.
    assert s.on_trial_result(None, t["d"], result(1, 1.0, 0.0)) == CONTINUE


def test_an_exact_duplicate_loses_to_the_earlier_trial():
    s = scheduler()
    t = add(s, "a", "b")
    assert s.on_trial_result(None, t["a"], result(1, 0.5, 0.5)) == CONTINUE
    assert s.on_trial_result(None, t["b"], result(1, 0.5, 0.5)) == STOP


def test_nan_and_inf_results_rank_last():
    s = scheduler()
    t = add(s, "a", "b", "c", "d")
    assert s.on_trial_result(None, t["a"], result(1, NAN, 0.9)) == CONTINUE  # alone at the rung
    # keep 1 of 2: the finite b ranks before the NaN a
    assert s.on_trial_result(None, t["b"], result(1, 0.1, 0.1)) == CONTINUE
    # keep 2 of 3: b, a (the earlier invalid), c
    assert s.on_trial_result(None, t["c"], result(1, INF, 0.0)) == STOP
    # keep 2 of 4: b, then d (dominated by b, but finite), a, c
    assert s.on_trial_result(None, t["d"], result(1, 0.0, 0.0)) == CONTINUE


def test_min_mode_folds_the_sign():
    s = scheduler(metrics=("diversity_score", "fd"), modes=("max", "min"))
    t = add(s, "a", "b")
    s.on_trial_result(None, t["a"], {"student_updates": 1, "diversity_score": 0.5, "fd": 100.0})
    # b: same diversity, larger FD (worse): dominated.
    assert s.on_trial_result(None, t["b"], {"student_updates": 1, "diversity_score": 0.5, "fd": 200.0}) == STOP


# --- Ray ASHA's semantics ----------------------------------------------------------------------------

def test_rungs_grace_period_and_max_t():
    s = scheduler(grace_period=2)
    assert [m for m, _ in s._brackets[0].rungs] == [8, 4, 2]  # as Ray's _Bracket: descending, max_t included
    t = add(s, "a", "b")
    assert s.on_trial_result(None, t["a"], result(1, 0.1, 0.1)) == CONTINUE  # before the grace period
    assert all(not rec for _, rec in s._brackets[0].rungs)  # nothing recorded yet
    assert s.on_trial_result(None, t["a"], result(2, 0.5, 0.5)) == CONTINUE
    assert s.on_trial_result(None, t["a"], result(3, 0.0, 0.0)) == CONTINUE  # no new milestone
    assert s.on_trial_result(None, t["a"], result(8, 0.9, 0.9)) == STOP  # reached max_t
    # a result past several milestones is recorded at the highest one passed only (as Ray)
    assert s.on_trial_result(None, t["b"], result(5, 0.2, 0.2)) == CONTINUE
    rungs = dict(s._brackets[0].rungs)
    assert "b" in rungs[4] and "b" not in rungs[2]


def test_results_without_time_attr_continue_and_missing_metrics_are_an_error():
    s = scheduler()
    t = add(s, "a")
    assert s.on_trial_result(None, t["a"], {"diversity_score": 1.0, "quality_score": 1.0}) == CONTINUE
    with pytest.raises(ValueError, match=r"quality_score.*must report"):
        s.on_trial_result(None, t["a"], {"student_updates": 1, "diversity_score": 1.0})


def test_complete_records_the_final_result_and_forgets_the_trial():
    s = scheduler()
    t = add(s, "a", "b", "c")
    s.on_trial_complete(None, t["a"], result(2, 0.9, 0.9))  # ended at t 2: recorded at rung 2
    assert dict(s._brackets[0].rungs)[2] == {"a": (0.9, 0.9)}
    assert "a" not in s._trial_bracket
    # b reaches rung 2 dominated by a: keep 1 of 2 -> STOP (a's final result counts, as in Ray)
    s.on_trial_result(None, t["b"], result(1, 0.1, 0.1))
    assert s.on_trial_result(None, t["b"], result(2, 0.1, 0.1)) == STOP
    s.on_trial_remove(None, t["c"])  # removed before it ran
    assert set(s._trial_bracket) == {"b"}


def test_tune_config_metric_is_refused():
    s = scheduler()
    assert s.set_search_properties(None, None) is True
    assert s.set_search_properties("objective", "max") is False


def test_brackets_offset_their_rungs_like_ray():
    from ray.tune.schedulers import ASHAScheduler

    s = scheduler(brackets=2)
    ray_asha = ASHAScheduler(time_attr="student_updates", metric="x", mode="max", max_t=8, grace_period=1,
                             reduction_factor=2, brackets=2)
    assert [[m for m, _ in b.rungs] for b in s._brackets] == \
        [[m for m, _ in b._rungs] for b in ray_asha._brackets]


def test_a_stream_keeps_about_one_in_rf_at_each_rung():
    """32 trials with random (d, q) reach rung 1 in turn: the survivors are the top ceil(n/rf)
    at the time each arrived, and every trial on the final rung's front continued."""
    rng = np.random.default_rng(0)
    s = scheduler(reduction_factor=4, max_t=16)
    trials = add(s, *[f"t{i}" for i in range(32)])
    points = rng.random((32, 2))
    decisions = [s.on_trial_result(None, trials[f"t{i}"], result(1, *points[i])) for i in range(32)]
    for i, decision in enumerate(decisions):
        order = rank_points(points[: i + 1])
        assert (decision == CONTINUE) == (i in order[: math.ceil((i + 1) / 4)])
    assert 8 <= decisions.count(CONTINUE) <= 16


# --- Ray 2.60 runs it with every searcher of tune.search ------------------------------------------

def fake_trainable(space, cache, experiment=None):
    """Stands in for the DP-DMD trial: 8 reports whose scores depend on lambda_div only (fast)."""
    from ray import tune as ray_tune

    def run(config):
        lam = float((config.get("trial") or config)["lambda_div"])
        for t in range(1, 9):
            d, q = lam * (1 - 1 / (t + 1)), 1 - lam ** 0.5
            ray_tune.report({"student_updates": t, "diversity_score": d, "quality_score": q,
                             "diversity": d, "quality": q, "objective": 0.5 * d + 0.5 * q})

    return run


@pytest.fixture(scope="module")
def local_ray():
    import os

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("method", [pytest.param("grid", marks=pytest.mark.slow),
                                    pytest.param("random", marks=pytest.mark.slow),
                                    "optuna_tpe",  # multi-objective TPE: the combination new here
                                    pytest.param("optuna_nsga2", marks=pytest.mark.slow)])
def test_ray_runs_moasha_with_every_searcher(method, tmp_path, monkeypatch, local_ray):
    import argparse

    import yaml

    import tune.trial.multi_gpu
    from tune.run import tuner as search_tuner
    from tune.space import load_space

    monkeypatch.setattr(tune.trial.multi_gpu, "build_trainable", fake_trainable)
    lam = ({"values": [0.05, 0.3, 0.6, 0.9]} if method == "grid"
           else {"distribution": "uniform", "min": 0.01, "max": 0.9})
    space_file = tmp_path / "space.yaml"
    # One trial at a time: the fake's points are all mutually non-dominated, so which trials a rung
    # stops depends on the order they reach it; two at a time made that order Ray's timing (a CI
    # run saw all five finish). Sequential, the order is the searcher's, seeded.
    space_file.write_text(yaml.safe_dump({
        "name": f"moasha-{method}", "method": method, "seed": 0, "num_samples": 1 if method == "grid" else 4, "max_concurrent": 1,
        "backbones": {"digits-flow": {"resources": {"cpu": 1}}}, "parameters": {"lambda_div": lam},
        "train": {"iterations": 16, "batch_size": 2, "teacher_steps": 6, "fake_updates": 1, "anchor_k": 2},
        "scheduler": {"type": "moasha", "grace_period": 1, "reduction_factor": 2}, "wandb": {"enabled": False}}))
    space = load_space(space_file)
    args = argparse.Namespace(name=None, num_samples=None, resume=False)
    tuner = search_tuner.build_tuner(space, args, storage=str(tmp_path / "runs"), cache={"enabled": False})
    grid = tuner.fit()
    assert not grid.errors
    updates = [r.metrics["student_updates"] for r in grid]
    assert len(updates) == 5  # 4 + the vanilla-DMD baseline
    assert max(updates) == 8 and min(updates) < 8  # MO-ASHA let some finish and stopped others early
    from tune.schedulers import STATE_FILE
    from tune.schedulers.persistent import read_state

    saved = read_state(str(tmp_path / "runs" / f"moasha-{method}" / STATE_FILE))
    assert sum(len(rec) for _, rec in saved["scheduler"]["rungs"][0]) >= 5


# --- the decision without ranking the whole rung (issue 24, section 6) ---------------------------

@pytest.mark.parametrize("seed", range(6))
def test_in_top_decides_as_the_full_ranking(seed):
    """`in_top` is `rank_points` cut short: the same answer for every point of random rungs with
    few distinct values (ties, duplicates, several layers), NaN and inf rows, and every keep."""
    from tune.schedulers.moasha import in_top

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    points = rng.integers(0, 6, size=(n, 2)).astype(float) / 5  # coarse: ties and duplicates
    points[rng.random(n) < 0.1, int(rng.integers(2))] = rng.choice([NAN, INF, -INF])
    order = rank_points(points)
    for keep in range(0, n + 2):
        top = set(order[:keep])
        assert [in_top(points, i, keep) for i in range(n)] == [i in top for i in range(n)], keep


def test_a_rung_decides_as_the_full_ranking_as_it_grows_and_after_a_state_is_loaded():
    rng = np.random.default_rng(7)
    s = scheduler(reduction_factor=3, max_t=16)
    names = [f"t{i}" for i in range(80)]
    trials = add(s, *names)
    points = rng.random((80, 2))
    points[::9] = points[1::9][: len(points[::9])]  # some exact duplicates
    for i in range(80):
        if i == 40:  # the rungs reloaded mid-stream (a resumed search): the cached arrays start again
            s.load_state_dict(json.loads(json.dumps(s.state_dict())))
        decision = s.on_trial_result(None, trials[names[i]], result(1, *points[i]))
        assert (decision == CONTINUE) == (i in rank_points(points[: i + 1])[: math.ceil((i + 1) / 3)]), i
