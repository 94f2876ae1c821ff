"""Two searches of one name (issue 24, section 1): the second is refused before it starts
anything (exit 2, saying who holds the name and what to do), by a lock that a crashed driver
cannot leave held (`tune.storage.lock`: an flock on a local storage, a lease with a heartbeat on
a URI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.faults import spaces
from tests.faults.spaces import SMALL_SEARCH
from tune.cli import search
from tune.storage import lock

SPACE = {**SMALL_SEARCH, "name": "same",
    "parameters": {"anchor_k": {"values": [2, 5]}, "lambda_div": {"value": 0.5}},
    "objective": {"min_quality": 0.0},
}


def write_space(tmp_path, **changes):
    return spaces.write_space(tmp_path, SPACE, **changes)


def test_a_second_search_of_a_name_in_use_is_refused_before_it_starts(tmp_path, capsys):
    space, storage = write_space(tmp_path), tmp_path / "runs"
    with lock.acquire(str(storage), "same", command=["the", "first", "search"]):
        assert search.main(["--space", str(space), "--storage", str(storage)]) == 2
        err = capsys.readouterr().err
        assert f"the search 'same' in {storage} is in use by another search (pid {os.getpid()} on host " in err
        assert "the first search" in err and "another --name" in err and "however it ends" in err
        assert "Traceback" not in err
        # nothing of the second search was written, and Ray never started
        assert sorted(p.name for p in (storage / "same").iterdir()) == ["search.lock"]
        assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
        # --resume is refused the same way: the name is in use, whatever the flags
        assert search.main(["--space", str(space), "--storage", str(storage), "--resume"]) == 2
        assert "is in use by another search" in capsys.readouterr().err
    assert not (storage / "same").exists()  # the holder let go: no lock file, no empty folder left


def test_a_refused_search_lets_the_name_go(tmp_path, capsys):
    space, storage = write_space(tmp_path), tmp_path / "runs"
    assert search.main(["--space", str(space), "--storage", str(storage), "--resume"]) == 2  # nothing to resume
    assert "no search named 'same'" in capsys.readouterr().err
    with lock.acquire(str(storage), "same"):  # free again
        pass


def test_a_killed_holder_leaves_the_name_free(tmp_path):
    storage = tmp_path / "runs"
    holder = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys; from tune.storage import lock; "
        f"lock.acquire({str(storage)!r}, 'same'); print('held', flush=True); os.kill(os.getpid(), signal.SIGKILL)")],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(search.Path(__file__).parents[2])))
    assert holder.returncode == -signal.SIGKILL and "held" in holder.stdout, holder.stderr
    assert (storage / "same" / "search.lock").exists()  # the file stays behind ...
    with lock.acquire(str(storage), "same") as taken:  # ... but nothing holds it: the kernel let go
        assert taken.holder["pid"] == os.getpid()


def test_a_uri_lease_is_refused_while_fresh_and_taken_over_once_stale(tmp_path, capsys):
    storage = f"file://{tmp_path}/runs"
    quick = dict(heartbeat_s=0.05, stale_after_s=30.0, settle_s=0.05)
    first = lock.acquire(storage, "same", command=["first"], **quick)
    with pytest.raises(lock.SearchInUse) as refused:
        lock.acquire(storage, "same", **quick)
    message = str(refused.value)
    assert "is in use by another search" in message and "first" in message and "last heartbeat" in message
    assert f"{tmp_path}/runs/same/search.lease" in message and "delete that file" in message
    time.sleep(0.2)
    lease = json.loads((tmp_path / "runs" / "same" / "search.lease").read_text())
    assert time.time() - lease["heartbeat"] < 5  # the heartbeat keeps it fresh
    first.release()
    assert not (tmp_path / "runs" / "same" / "search.lease").exists()  # released: deleted

    # a driver that died: its lease's heartbeat stops; once stale, the next search takes it over
    stale = dict(lock.holder_record(["gone"]), token="dead", pid=999999, heartbeat=time.time() - 3600)
    (tmp_path / "runs" / "same" / "search.lease").write_text(json.dumps(stale))
    with lock.acquire(storage, "same", **quick) as taken:
        assert taken.taken_over["token"] == "dead"
    assert "took over the stale lease of the search 'same'" in capsys.readouterr().err


def test_a_lease_taken_by_another_search_is_said_loudly(tmp_path, capsys):
    storage = f"file://{tmp_path}/runs"
    held = lock.acquire(storage, "same", heartbeat_s=0.05, stale_after_s=30.0, settle_s=0.05)
    intruder = dict(lock.holder_record(["intruder"]), token="other", heartbeat=time.time())
    (tmp_path / "runs" / "same" / "search.lease").write_text(json.dumps(intruder))
    deadline = time.time() + 10
    while held.lost is None and time.time() < deadline:
        time.sleep(0.05)
    assert held.lost and "intruder" in held.lost
    assert "two searches now write" in capsys.readouterr().err
    held.release()
    assert json.loads((tmp_path / "runs" / "same" / "search.lease").read_text())["token"] == "other"  # not ours to delete


@pytest.mark.slow
def test_two_searches_of_one_name_at_once(tmp_path):
    """The issue's case: the same command started twice at once. One runs, the other is refused
    before it starts; the outputs hold one search's trials."""
    space, storage = write_space(tmp_path), tmp_path / "runs"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(search.Path(__file__).parents[2]))
    command = [sys.executable, "-m", "tune.search", "--space", str(space), "--storage", str(storage)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (storage / "same" / "dpdmd_space.json").exists():
        time.sleep(0.2)  # the first holds the name (it wrote its space record under the lock)
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is in use by another search (pid {first.pid} on host" in second.stderr
    assert "outputs in" not in second.stdout
    exp = storage / "same"
    trials = pd.read_parquet(exp / "trials.parquet")
    assert trials["trial_id"].nunique() == 2  # one search's two trials, not four
    assert len(list(exp.glob("experiment_state-*.json"))) == 1
    assert len([p for p in exp.iterdir() if p.name.startswith("run_search_trial_")]) == 2
    summary = json.loads((exp / "summary.json").read_text())
    assert {r["trial_id"] for r in summary["recommended"].values() if r} <= set(trials["trial_id"])
    assert summary["recommended"]  # one recommended student per backbone, from this search's trials
    assert not (exp / "search.lock").exists()
