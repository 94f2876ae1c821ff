"""The dry run's cost estimate (tune.run.estimate) against hand arithmetic, from the measured
cycle times and the parameter counts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tune.cli.plan import max_updates
from tune.run.estimate import (backbone_setup, estimate_lines, expected_updates, human_bytes, matching_measurements,
                               state_saves)
from tune.space import load_space
from tune.space.schema import CheckpointSpec, SchedulerSpec

SPACES = Path(__file__).parents[2] / "search_spaces"


@pytest.fixture
def anchor(monkeypatch, tmp_path):
    monkeypatch.setenv("DPDMD_WEIGHTS", str(tmp_path))
    return load_space(SPACES / "anchor.yaml", check_weights=False)


def lines(space) -> list[str]:
    """The dry run's cost lines of ``space``."""
    return estimate_lines(space, max_t=max_updates(space))


def _with_options(space, backbone: str, **options):
    spec = space.backbones[backbone]
    backbones = {**space.backbones, backbone: dataclasses.replace(spec, options={**spec.options, **options})}
    return dataclasses.replace(space, backbones=backbones)


def test_asha_planned_promotions():
    # rungs 100, 200, 400 below max_t 500: all reach 100, 1/2 reach 200, 1/4 reach 400, 1/8 reach 500
    asha = SchedulerSpec(type="asha", grace_period=100, reduction_factor=2)
    assert expected_updates(asha, max_t=500) == 100 + 100 / 2 + 200 / 4 + 100 / 8
    assert expected_updates(SchedulerSpec(type="moasha", grace_period=10, brackets=2), max_t=80) == 10 + 5 + 5 + 5
    assert expected_updates(SchedulerSpec(type="fifo"), max_t=500) == 500


def test_anchor_yaml_by_hand(anchor):
    text = "\n".join(lines(anchor))
    # 20 sampled + 1 baseline trials; LoRA r64 on sd35m: 47,775,744 adapter parameters
    assert "sd35m: 21 trials, LoRA r64, 1024 px, batch 4, compile off, adamw, gradient checkpointing on" in text
    assert "at most 500 (10 reports); 212 on average with ASHA's planned promotions" in text
    # the one matching measurement: H200, eager LoRA, 3.301 + 3.378 + 5 x 1.466 = 14.009 s per update
    assert "NVIDIA H200 141 GB: 14 s per update (measured 14.009 s, 2026-11-22, 467a6b8)" in text
    assert "NVIDIA H100" not in text  # no eager LoRA row on the H100
    gpu_hours = 21 * 212.5 * 14.009 / 3600
    wall = 21 * 212.5 * 14.009 / 8
    assert f"{gpu_hours:.3g} GPU-hours; wall time {wall / 3600:.3g} h for these trials at 8 concurrent" in text
    student, state = 4 * 47_775_744, 2 * 47_775_744 * 12
    assert human_bytes(student) == "191 MB" and human_bytes(state) == "1.15 GB"
    assert f"the student {human_bytes(student)} (float32, the adapter alone)" in text
    # a trial to max_t: 500 x 14.009 s = 116.7 min, a report every 11.7 min: a state at the first report,
    # then every 3rd (35 min >= 30): reports 1, 4, 7, 10; 10 students at most
    assert f"at most 10 x 191 MB + 4 x 1.15 GB = {human_bytes(10 * student + 4 * state)} written" in text
    assert f"{human_bytes(student + state)} kept at the end (its student and its last state)" in text


def test_what_was_not_measured_says_so(anchor, tmp_path):
    full = _with_options(anchor, "sd35m", train_mode="full")
    setup = backbone_setup(full, "sd35m")
    assert setup.train_mode == "full" and setup.serving_dtype == "bfloat16"
    machines = [m["machine"].split(" (")[0] for m in matching_measurements(setup, {"gpu": 1})]
    assert machines == ["NVIDIA H100 80GB HBM3", "NVIDIA H200 141 GB"]  # eager full: measured on both
    assert matching_measurements(dataclasses.replace(setup, batch_size=2), {"gpu": 1}) == []
    assert matching_measurements(setup, {"gpu": 0, "cpu": 8}) == []  # not on a CPU
    large = tmp_path / "large.yaml"
    large.write_text((SPACES / "anchor.yaml").read_text().replace("  sd35m:", "  sd35l:"))
    text = "\n".join(lines(load_space(large, check_weights=False)))
    assert "no measurement of this setup" in text
    assert "the student 377 MB (float32, the adapter alone)" in text  # 94,322,688 x 4 bytes
    assert "how many is unknown" in text
    spec = anchor.backbones["sd35m"]
    two = dataclasses.replace(anchor, backbones={"sd35m": dataclasses.replace(spec, resources={**spec.resources,
                                                                                             "workers": 2})})
    assert "no measurement: a trial of 2 data-parallel workers was never timed" in "\n".join(lines(two))


def test_the_state_cadence_and_the_digits_backbones():
    space = load_space(SPACES / "quickstart.yaml")
    text = "\n".join(lines(space))
    assert "the student 2.32 MB (float32) when it is the trial's new best; the state 13.9 MB" in text
    assert "5 x 2.32 MB + 1 x 13.9 MB" in text  # a 1-minute trial: the first report's state only
    assert "1 thread used: 0.765 s per update" in text and "core-hours" in text
    every = dataclasses.replace(space, checkpoint=CheckpointSpec(state_every_minutes=0))  # 0: at every report
    every_text = "\n".join(lines(every))
    assert "the state 13.9 MB (0.581 M trained parameters" in every_text and "at every report" in every_text
    assert "5 x 2.32 MB + 5 x 13.9 MB" in every_text


def test_state_saves_count_what_the_trials_rule_writes(monkeypatch):
    """`state_saves` against `tune.trial.saves.TrialSaves` itself, its clock at each report of a
    trial whose reports are evenly spaced."""
    from tune.trial import saves as trial_saves

    for reports, minutes, every in ((10, 116.7, 30), (10, 70, 30), (5, 1.3, 30), (10, 103, 30), (7, 60, 0), (1, 5, 30)):
        now = {"t": 0.0}
        monkeypatch.setattr(trial_saves.time, "monotonic", lambda: now["t"])
        rule = trial_saves.TrialSaves(teacher={"diversity": 1.0, "quality": 1.0}, diversity_weight=0.5,
                                      min_student_updates=0, min_quality=0.0, state_every_s=every * 60)
        written = 0
        for i in range(1, reports + 1):
            now["t"] = 1000.0 + i * minutes / reports * 60  # seconds on the monotonic clock
            written += rule({"diversity": 0.5, "quality": 0.5, "student_updates": i}).state
        assert state_saves(reports, minutes, every) == written, (reports, minutes, every)
