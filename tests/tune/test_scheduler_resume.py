"""Rungs survive --resume: a scheduler interrupted mid-search and restored the way Ray 2.60's
`Tuner.restore` restores it (unpickled from the ``tuner.pkl`` written when the search started, every
trial re-added) makes the same stop/continue decisions as one that was never interrupted, fed
the same results. Fake results, no cluster; one real interrupted search at the end."""

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import ray.cloudpickle as pickle
import yaml
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tune.schedulers import STATE_FILE, make_scheduler
from tune.schedulers.persistent import read_state
from tune.space import SchedulerSpec

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
N_TRIALS, MAX_T = 12, 16


def results_stream(seed: int) -> list[tuple[str, dict]]:
    """Trials reporting asynchronously: each step a random live trial reports its next result (t =
    1..MAX_T) with noisy scores that drift towards a trial-specific level."""
    rng = np.random.default_rng(seed)
    level = rng.random((N_TRIALS, 2))
    t_next = {f"t{i:02d}": 1 for i in range(N_TRIALS)}
    events = []
    while t_next:
        name = sorted(t_next)[rng.integers(len(t_next))]
        i, t = int(name[1:]), t_next[name]
        d, q = level[i] + rng.normal(0, 0.3 / t, 2)
        events.append((name, {"student_updates": t, "diversity_score": d, "quality_score": q,
                              "objective": 0.5 * d + 0.5 * q}))
        t_next[name] = t + 1
        if t == MAX_T:
            del t_next[name]
    return events


def drive(scheduler, events, trials, decisions, *, stop_after=None, fed=None):
    """Feed ``events`` as Ray does: a STOPped trial reports no more and is completed. Records the
    first decision per (trial, t) in ``decisions`` and each trial's last fed result in ``fed``;
    returns how many events were consumed."""
    fed = {} if fed is None else fed
    for k, (name, res) in enumerate(events):
        if stop_after is not None and k == stop_after:
            return k
        if trials[name].done:
            continue
        fed[name] = res
        action = scheduler.on_trial_result(None, trials[name], res)
        decisions.setdefault((name, res["student_updates"]), action)
        if action == STOP:
            trials[name].done = True
            scheduler.on_trial_complete(None, trials[name], res)
    return len(events)


def new_trials():
    return {f"t{i:02d}": SimpleNamespace(trial_id=f"t{i:02d}", done=False) for i in range(N_TRIALS)}


def build(kind, state_uri):
    spec = SchedulerSpec(type=kind, grace_period=1, reduction_factor=2, brackets=2)
    return make_scheduler(spec, max_t=MAX_T, state_uri=state_uri)


def uninterrupted(kind, events, tmp_path):
    np.random.seed(0)  # bracket assignment draws from numpy's global RNG, as in Ray
    scheduler, trials, decisions = build(kind, None), new_trials(), {}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    drive(scheduler, events, trials, decisions)
    return decisions


def interrupted(kind, events, tmp_path, crash_at, *, persist=True):
    """Run until ``crash_at``, lose the process, restore from the start-of-search pickle, re-add every
    trial, and have each live trial repeat its last result (it restarts from a checkpoint that
    may predate the decision) before the stream goes on."""
    np.random.seed(0)
    state_uri = str(tmp_path / "experiment" / STATE_FILE) if persist else None
    scheduler = build(kind, state_uri)
    tuner_pkl = pickle.dumps(scheduler)  # Ray writes tuner.pkl once, before any trial runs
    trials, decisions = new_trials(), {}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    last = {}
    k = drive(scheduler, events, trials, decisions, stop_after=crash_at, fed=last)

    np.random.seed(1)  # a new process: a different random state
    restored = pickle.loads(tuner_pkl)
    for t in trials.values():
        restored.on_trial_add(None, t)
    repeats = {}
    for name, res in last.items():  # a trial stopped just before the crash, not yet saved as ended by Ray
        repeats[name] = restored.on_trial_result(None, trials[name], res)
    drive(restored, events[k:], trials, decisions)
    return decisions, repeats, state_uri, last


@pytest.mark.parametrize("kind", ["asha", "moasha"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resumed_scheduler_decides_as_an_uninterrupted_one(kind, seed, tmp_path):
    events = results_stream(seed)
    expected = uninterrupted(kind, events, tmp_path)
    early_stops = [t for (_, t), action in expected.items() if action == STOP and t < MAX_T]
    assert len(early_stops) >= 3, early_stops  # the stream does exercise early stopping
    decisions, repeats, state_uri, last = interrupted(kind, events, tmp_path, crash_at=len(events) // 3)
    assert decisions == expected
    # a result repeated after the restore (its trial restarts from an older checkpoint) gets the
    # decision it got before the crash, STOP included
    assert {name: expected[(name, res["student_updates"])] for name, res in last.items()} == repeats
    assert STOP in repeats.values()
    saved = read_state(state_uri)
    assert saved is not None and any(rec for b in saved["scheduler"]["rungs"] for _, rec in b)


@pytest.mark.parametrize("kind", ["asha", "moasha"])
def test_without_the_state_file_restored_rungs_start_empty_and_decisions_change(kind, tmp_path):
    """The check above has teeth: the same scheduler without its state file (what Ray's
    Tuner.restore gives an ASHAScheduler) decides differently after the restore."""
    events = results_stream(0)
    expected = uninterrupted(kind, events, tmp_path)
    decisions, *_ = interrupted(kind, events, tmp_path, crash_at=len(events) // 3, persist=False)
    assert decisions != expected


def test_rays_asha_state_layout_is_what_we_save(tmp_path):
    """PersistentASHA reads Ray 2.60's private ``_brackets[i]._rungs`` / ``_trial_info``: fail here,
    not silently, if a Ray upgrade changes them."""
    ray_asha = ASHAScheduler(time_attr="student_updates", metric="objective", mode="max", max_t=4)
    assert isinstance(ray_asha._brackets[0]._rungs, list) and isinstance(ray_asha._trial_info, dict)
    ray_asha.on_trial_add(None, SimpleNamespace(trial_id="a"))
    ray_asha.on_trial_result(None, SimpleNamespace(trial_id="a"), {"student_updates": 1, "objective": 0.5})
    assert ray_asha._brackets[0]._rungs[-1] == (1, {"a": 0.5})


def test_a_fresh_search_does_not_inherit_old_rungs(tmp_path):
    from tune.schedulers.persistent import clear_state

    uri = str(tmp_path / STATE_FILE)
    old = build("moasha", uri)
    old.on_trial_add(None, SimpleNamespace(trial_id="old"))
    old.on_trial_result(None, SimpleNamespace(trial_id="old"), results_stream(0)[0][1] | {"student_updates": 1})
    assert "old" in read_state(uri)["scheduler"]["trial_bracket"]
    clear_state(uri)
    fresh = build("moasha", uri)
    fresh.on_trial_add(None, SimpleNamespace(trial_id="new"))
    assert set(read_state(uri)["scheduler"]["trial_bracket"]) == {"new"}


def test_state_file_is_plain_json_lines_a_change_appended(tmp_path):
    uri = str(tmp_path / "exp" / STATE_FILE)
    s = build("asha", uri)
    trial = SimpleNamespace(trial_id="a")
    s.on_trial_add(None, trial)
    s.on_trial_result(None, trial, {"student_updates": 1, "objective": 0.25})
    whole, change = (json.loads(line) for line in (tmp_path / "exp" / STATE_FILE).read_text().splitlines())
    assert whole["scheduler"]["rungs"][0][-1] == [1, {}]  # the whole state, written atomically first ...
    last = len(whole["scheduler"]["rungs"][0]) - 1
    assert change["trial"] == "a" and change["rungs"] == [[0, last, 0.25]]  # ... then one line for the report
    saved = read_state(uri)
    assert saved["scheduler"]["rungs"][0][-1] == [1, {"a": 0.25}]  # rung at t 1 (last: descending)
    assert [p.name for p in (tmp_path / "exp").iterdir()] == [STATE_FILE]  # no temporary left behind


@pytest.mark.parametrize("kind", ["asha", "moasha"])
def test_a_report_appends_a_line_not_the_whole_state(kind, tmp_path):
    """Issue 24, section 6: at 10,000 trials the whole state is ~1 MB, and it was rewritten at every
    report. Now a report appends its change (one line), and the file is rewritten whole only once
    the lines outweigh it (not here: 12 trials)."""
    uri = tmp_path / STATE_FILE
    s = build(kind, str(uri))
    trials = new_trials()
    for t in trials.values():
        s.on_trial_add(None, t)
    rewrites, reports = 0, 0
    for name, res in results_stream(0):
        if trials[name].done:
            continue
        reports += 1
        if s.on_trial_result(None, trials[name], res) == STOP:
            trials[name].done = True
            s.on_trial_complete(None, trials[name], res)
        rewrites += len(uri.read_text().splitlines()) == 1  # the whole state alone: just rewritten
    assert reports > 50 and rewrites == 0
    lines = uri.read_text().splitlines()
    assert len(lines) > reports // 2 and all(len(line) < 600 for line in lines[1:])  # each a change, not the state
    # and what is read back is what the scheduler holds
    assert read_state(str(uri))["scheduler"] == json.loads(json.dumps(s.state_dict(), default=float))


def test_a_line_cut_short_by_a_crash_is_ignored(tmp_path):
    uri = tmp_path / STATE_FILE
    s = build("moasha", str(uri))
    trials = new_trials()
    for t in trials.values():
        s.on_trial_add(None, t)
    s.on_trial_result(None, trials["t00"], {"student_updates": 1, "diversity_score": 0.5, "quality_score": 0.5})
    whole = read_state(str(uri))
    with open(uri, "a") as f:
        f.write('{"trial": "t01", "assigned": ["trial_bra')  # the process died mid-line
    assert read_state(str(uri)) == whole


# --- a real search, interrupted with Ctrl+C and resumed -------------------------------------------

SPACE = {
    "name": "rungs",
    "method": "grid",
    "seed": 0,
    "max_concurrent": 2,
    "baseline": False,
    "backbones": {"digits-flow": {"resources": {"cpu": 1}}},
    "parameters": {"anchor_k": {"values": [2, 5]}, "lambda_div": {"values": [0.05, 0.5]}},
    "train": {"iterations": 120, "batch_size": 2, "teacher_steps": 6},
    "eval": {"prompts": ["3"], "seeds_per_prompt": 4, "every": 4},
    "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
    "wandb": {"enabled": False},
}


def recorded(state: dict) -> dict:
    """{(bracket, milestone, trial_id): value} of a saved ASHA state."""
    return {(b, m, tid): v for b, rungs in enumerate(state["scheduler"]["rungs"]) for m, rec in rungs
            for tid, v in rec.items()}


@pytest.mark.slow  # minutes on 2 shared cores (a real search, run twice)
def test_ctrl_c_then_resume_keeps_the_rungs(tmp_path):
    import pandas as pd

    from tune.cli import search

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    storage = tmp_path / "runs"
    state_file = storage / "rungs" / STATE_FILE
    proc = subprocess.Popen([sys.executable, "-m", "tune.search", "--space", str(path), "--storage", str(storage)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (state_file.exists() and len(recorded(read_state(str(state_file)))) >= 3):
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C: Tune saves the experiment and stops
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = read_state(str(state_file))
    assert len(recorded(before)) >= 3, "no trial reached a rung before the interruption"

    assert search.main(["--space", str(path), "--storage", str(storage), "--resume"]) == 0
    after = read_state(str(state_file))
    # every rung entry made before the interruption is still there, with its value: the resumed
    # search ranked its trials against them (without the state file the rungs restart empty and
    # trials already past a milestone are never recorded there again)
    assert recorded(before).items() <= recorded(after).items()
    assert set(before["stopped"]) <= set(after["stopped"])
    trials = pd.read_parquet(storage / "rungs" / "trials.parquet")
    assert trials["trial_id"].nunique() == 4
    last = trials.groupby("trial_id")["student_updates"].max()
    assert (last[last < 20].index.isin(after["stopped"])).all()  # early ends were ASHA's STOPs
