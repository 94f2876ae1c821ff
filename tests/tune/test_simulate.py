"""The simulator replays recorded curves through the real Ray Tune schedulers and searchers:
nearest-configuration lookup, compute accounting, and the same stop decisions as Ray Tune itself
running the same curves."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from tests.tune.tabular_fake import fake_table
from tune.simulate.replay import simulate
from tune.space import load_space
from tune.simulate.table import RecordedTable, TableError, ground_truth, with_scores


def make_space(tmp_path, *, scheduler="asha", method="grid", extra=None, **top):
    spec = {"name": "sim", "method": method, "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
            "parameters": {"anchor_k": {"values": [5, 20]}, "lambda_div": {"values": [0, 0.05, 0.5]}},
            "train": {"iterations": 120}, "eval": {"every": 2},
            "objective": {"diversity_weight": 0.5, "min_quality": 0.5},
            "scheduler": {"type": scheduler, "grace_period": 2, "reduction_factor": 2},
            "wandb": {"enabled": False}, **top}
    if extra:
        spec["parameters"].update(extra)
    path = tmp_path / f"space_{scheduler}_{method}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_space(path)


@pytest.fixture(scope="module")
def table():
    return RecordedTable(fake_table())


def test_snap_maps_to_the_nearest_recorded_configuration(table):
    assert table.snap({"backbone": "digits-flow", "anchor_k": 12, "lambda_div": 0.03}) == \
        {"backbone": "digits-flow", "anchor_k": 5, "lambda_div": 0.05}  # K: 7 < 8 away; lambda on a log scale
    assert table.snap({"anchor_k": 19, "lambda_div": 0.3}) == {"backbone": "digits-flow", "anchor_k": 20, "lambda_div": 0.5}
    assert table.snap({"anchor_k": 20, "lambda_div": 0.001})["lambda_div"] == 0.0  # vanilla DMD: any K
    with pytest.raises(TableError, match="backbone 'sdxl' is not recorded"):
        table.snap({"backbone": "sdxl", "anchor_k": 5, "lambda_div": 0.05})
    with pytest.raises(TableError, match="records only backbone, anchor_k, lambda_div"):
        table.snap({"anchor_k": 5, "lambda_div": 0.05, "lr": 1e-3})


def test_a_searched_parameter_without_an_axis_is_refused(tmp_path, table):
    space = make_space(tmp_path, extra={"lr": {"values": [1e-4, 1e-3]}})
    with pytest.raises(TableError, match="searches lr"):
        simulate(space, table, workers=1)


def test_missing_columns_name_the_file(tmp_path):
    path = tmp_path / "t.parquet"
    fake_table().drop(columns=["wall_seconds"]).to_parquet(path)
    with pytest.raises(TableError, match=r"t.parquet: missing column\(s\) wall_seconds"):
        RecordedTable.load(path)


def test_fifo_runs_every_trial_to_the_end_and_shares_anchors(tmp_path, table):
    sim = simulate(make_space(tmp_path, scheduler="fifo"), table, workers=2)
    assert len(sim.trials) == 6 and not sim.trials["stopped_early"].any()
    assert (sim.trials["student_updates"] == 20).all()
    # One anchor pass per student update for the one (backbone, seed), up to K = 20: 20 teacher
    # calls each in the fake table, whichever trial computed it.
    assert sim.compute["teacher_calls"] == 20 * 20
    # Compute = the trials' recorded seconds without their own anchor + the shared passes.
    alone = 0.0
    for row in sim.trials.itertuples():
        last = table.curve({"backbone": row.backbone, "anchor_k": row.anchor_k, "lambda_div": row.lambda_div},
                           table.seeds[0]).iloc[-1]
        alone += last["wall_seconds"] - last["seconds_anchor"]
    assert sim.compute["seconds"] == pytest.approx(alone + 400 * table.seconds_per_teacher_call("digits-flow"))
    # Two workers: the virtual clock is at most the compute and at least half of it.
    assert sim.compute["seconds"] / 2 <= sim.compute["wall_seconds"] < sim.compute["seconds"]


@pytest.mark.parametrize("method", ["grid", "random", "optuna_tpe", "optuna_nsga2"])
def test_asha_stops_trials_and_is_reproducible(tmp_path, table, method):
    space = make_space(tmp_path, method=method, num_samples=6)
    first, again = simulate(space, table, workers=2), simulate(space, table, workers=2)
    assert first.trials["stopped_early"].any()
    cols = ["backbone", "anchor_k", "lambda_div", "student_updates"]
    pd.testing.assert_frame_equal(first.trials[cols], again.trials[cols])
    full = simulate(space.model_copy(update={"scheduler": space.scheduler.model_copy(update={"type": "fifo"})}),
                    table, workers=2)
    assert first.compute["seconds"] < full.compute["seconds"]


def test_a_trial_reports_only_where_its_space_evaluates(tmp_path, table):
    """The fake table is recorded at every student update; a space evaluating every 4 sees only
    updates 4, 8, ..., 20 (and its last), and no transient before min_student_updates is shown."""
    space = make_space(tmp_path, scheduler="fifo", eval={"every": 4},
                       objective={"diversity_weight": 0.5, "min_quality": 0.5, "min_student_updates": 12})
    sim = simulate(space, table, workers=2)
    assert sorted(sim.reports["student_updates"].unique()) == [4, 8, 12, 16, 20]
    from tune.simulate.replay import evaluated, shown_front

    assert evaluated(pd.Series([5, 10, 15, 20, 25]), 10, 25).tolist() == [False, True, False, True, True]
    assert evaluated(pd.Series([5, 10, 15]), 0, 100).tolist() == [False, False, True]  # only at the end
    front = shown_front(sim.reports, min_quality=0.5, min_student_updates=12)
    assert not front.empty and (front["student_updates"] >= 12).all()
    truth = ground_truth(table, diversity_weight=0.5, min_quality=0.5, min_updates=12)["digits-flow"]
    assert truth["points"]["student_updates"].min() == 12


def test_ground_truth_is_the_mean_over_seeds(table):
    truth = ground_truth(table, diversity_weight=0.5, min_quality=0.5)["digits-flow"]
    scored = with_scores(table.frame, diversity_weight=0.5)
    final = scored[scored["student_updates"] == 20]
    k20 = final[(final["anchor_k"] == 20) & (final["lambda_div"] == 0.5)]
    row = truth["final"].set_index(["anchor_k", "lambda_div"]).loc[(20, 0.5)]
    assert row["quality_score"] == pytest.approx(k20["quality_score"].mean())
    assert row["quality_score_std"] == pytest.approx(k20["quality_score"].std(ddof=1))
    assert row["seeds"] == 2
    assert 0 < truth["hypervolume"] <= truth["front"]["diversity_score"].max() * truth["front"]["quality_score"].max() + 1e-12
    assert not math.isnan(truth["best_objective"])


def replay_trainable(config, *, frame: pd.DataFrame, seed: int, weight: float):
    """A Ray Tune function trainable that reports a recorded curve instead of training."""
    from ray import tune

    table = RecordedTable(frame)
    point = {k: v for k, v in config.items() if k in ("backbone", "anchor_k", "lambda_div")}
    curve = with_scores(table.curve(table.snap(point), seed), diversity_weight=weight)
    for row in curve.to_dict("records"):
        tune.report({k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})


@pytest.mark.slow  # one Ray Tune experiment per scheduler: 1-7 minutes each on 2 shared cores
@pytest.mark.parametrize("scheduler", ["asha", "moasha", "fifo"])
def test_simulator_makes_the_decisions_ray_tune_makes(tmp_path, table, scheduler, monkeypatch):
    """Ray Tune itself runs the recorded curves (one trial at a time: the order of results is then
    fixed); the simulator, fed the same curves, stops the same trials at the same rungs."""
    import ray
    from ray import tune
    from tune.schedulers import make_scheduler
    from tune.simulate.replay import max_student_updates
    from tune.space import planned_trials
    from tune.run.searcher import build_searcher

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    space = make_space(tmp_path, scheduler=scheduler)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        trainable = tune.with_parameters(replay_trainable, frame=table.frame, seed=table.seeds[0],
                                         weight=space.objective.diversity_weight)
        tuner = tune.Tuner(trainable, run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0),
                           tune_config=tune.TuneConfig(
                               search_alg=build_searcher(space), num_samples=len(planned_trials(space)),
                               scheduler=make_scheduler(space.scheduler, max_t=max_student_updates(space, table))))
        live = sorted(((r.config["anchor_k"], r.config["lambda_div"]), int(r.metrics_dataframe["student_updates"].max()))
                      for r in tuner.fit())
    finally:
        ray.shutdown()
    sim = simulate(space, table, workers=1)
    simulated = sorted(((row["suggested_anchor_k"], row["suggested_lambda_div"]), int(row["student_updates"]))
                       for row in sim.trials.to_dict("records"))
    assert simulated == live
    if scheduler != "fifo":
        assert any(updates < 20 for _, updates in live)  # the check is not vacuous: trials were stopped


def test_asha_decisions_checked_by_hand(tmp_path):
    """One worker, three trials in grid order, ASHA with grace 2 and reduction 2: the first result
    at a rung always continues; a later one continues iff it is in the top half of the rung."""
    frame = fake_table(lambdas=(0.05, 0.5), ks=(5,), seeds=(0,))
    frame = pd.concat([frame, fake_table(lambdas=(0.2,), ks=(5,), seeds=(0,))], ignore_index=True)
    # J rises with quality: lambda 0.05 middling, 0.5 worst, 0.2 best at every report.
    frame["quality"] = frame["lambda_div"].map({0.05: 0.50, 0.5: 0.40, 0.2: 0.55}) + frame["student_updates"] * 1e-4
    frame["diversity"] = 0.03
    space = make_space(tmp_path)
    space.parameters["anchor_k"].values = [5]
    space.parameters["lambda_div"].values = [0.05, 0.5, 0.2]
    sim = simulate(space, RecordedTable(frame), workers=1)
    got = {row.lambda_div: (row.student_updates, row.stopped_early) for row in sim.trials.itertuples()}
    # 0.05 is first everywhere: runs to max_t. 0.5 is below 0.05 at rung 2: stopped there.
    # 0.2 beats every earlier result at every rung: runs to max_t.
    assert got == {0.05: (20, False), 0.5: (2, True), 0.2: (20, False)}


def test_search_cli_simulates_on_a_table(tmp_path, capsys):
    """``python -m tune.search --space S --simulate TABLE``: decisions, front and compute printed,
    trials.parquet and summary.json written; no Ray, no training."""
    import json

    from tune.cli.search import main

    table_path = tmp_path / "table.parquet"
    fake_table().to_parquet(table_path)
    space = make_space(tmp_path, scheduler="asha", max_concurrent=2)
    assert main(["--space", str(space.path), "--simulate", str(table_path), "--storage", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "simulated asha / grid" in out and "front found" in out
    summary = json.loads((tmp_path / "runs" / "sim-simulated" / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["stopped"]  # ASHA stopped trials
    assert 0 < summary["compute_fraction_of_full_grid"] < 1
    reports = pd.read_parquet(tmp_path / "runs" / "sim-simulated" / "trials.parquet")
    assert {"trial_id", "student_updates", "objective", "diversity_score", "quality_score", "compute"} <= set(reports)


def test_search_cli_refuses_a_bad_table(tmp_path, capsys):
    from tune.cli.search import main

    space = make_space(tmp_path)
    assert main(["--space", str(space.path), "--simulate", str(tmp_path / "none.parquet"),
                 "--storage", str(tmp_path / "runs")]) == 2
    assert "none.parquet: cannot read the table" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
