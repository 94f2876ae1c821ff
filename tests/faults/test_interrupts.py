"""Signals during a search (issue 24, section 2): SIGTERM (what ``timeout``, a batch scheduler and
Kubernetes send) is handled like Ctrl+C, not by Ray's handler (which aborted with exit 134); a
second Ctrl+C still stops gracefully; the interrupted search exits 128 + the signal, says
"interrupted" in summary.json, the printed table and the W&B summary, prints its --resume
command, and the resumed search has no duplicate (trial, student_updates) row, whatever Ray's
files hold. The searches are slow; the handler and the row filter are checked here directly."""

from __future__ import annotations

import json
import os
import signal

import pandas as pd
import pytest
import yaml

from tune.cli import search
from tune.outputs.kept import unique_reports
from tune.run.interrupts import Interrupts, resume_command
from tests.tune.test_search_interrupted import SPACE, assert_said_interrupted, interrupt


def test_the_first_signal_asks_tune_for_its_graceful_stop_and_is_remembered(monkeypatch, capsys):
    stops = []
    previous_term = signal.getsignal(signal.SIGTERM)
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    tune_stop = signal.signal(signal.SIGUSR1, lambda sig, frame: stops.append(sig))  # Tune's, while its loop runs
    try:
        with Interrupts(resume_command="python -m tune.search ... --resume") as interrupts:
            assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # Tune must not put its own over ours
            signal.raise_signal(signal.SIGTERM)
            assert interrupts.received == ["SIGTERM"] and stops == [signal.SIGUSR1]
            assert interrupts.exit_status == 143
            signal.raise_signal(signal.SIGINT)  # a second: no KeyboardInterrupt, still the graceful stop
            assert interrupts.received == ["SIGTERM", "SIGINT"] and interrupts.exit_status == 143
        err = capsys.readouterr().err
        assert "interrupted (SIGTERM)" in err and "continue with: python -m tune.search ... --resume" in err
        assert "already stopping" in err
        assert signal.getsignal(signal.SIGTERM) == previous_term  # put back
        assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
    finally:
        signal.signal(signal.SIGUSR1, tune_stop)


def test_the_resume_command_repeats_what_identifies_the_search(tmp_path):
    args = search.parse_args(["--space", "spaces/x.yaml", "--num-samples", "7", "--no-cache", "--address", "auto"])
    command = resume_command(args, "my run", "/data/runs")
    assert command.startswith(f"python -m tune.search --space {(os.getcwd())}/spaces/x.yaml --storage /data/runs "
                              "--name 'my run' --address auto --num-samples 7 --no-cache")
    assert command.endswith(" --resume")


def test_outputs_have_no_duplicate_reports_whatever_rays_files_hold():
    # a trial that re-reported student update 20 after a resume (seen in progress.csv after a SIGTERM)
    rows = pd.DataFrame({"trial_id": ["a", "a", "a", "a", "b"], "student_updates": [10, 20, 20, 30, 10],
                         "diversity": [0.1, 0.2, 0.25, 0.3, 0.4]})
    unique = unique_reports(rows)
    assert list(zip(unique["trial_id"], unique["student_updates"])) == [("a", 10), ("a", 20), ("a", 30), ("b", 10)]
    assert unique.loc[1, "diversity"] == 0.25  # the copy written last


@pytest.mark.slow
@pytest.mark.parametrize("sig, times, group", [
    ("SIGTERM", 1, False), ("SIGINT", 2, True),
    # Known limitation (docs/guide/failures.md): SIGTERM to the whole process group ends Ray's own
    # processes too; the search exits 1 without the partial outputs (--resume still finishes it).
    # strict: this starts failing the day it is fixed, and the docs must then say so.
    pytest.param("SIGTERM", 1, True, marks=pytest.mark.xfail(strict=True, reason="SIGTERM to the process group "
                                                                  "stops Ray's processes too (known limitation)"))],
    ids=["sigterm-driver", "sigint-twice", "sigterm-group"])
def test_an_interrupted_search_says_so_and_resumes(tmp_path, sig, times, group):
    space = dict(SPACE, name="signals")
    if times == 2:  # and the W&B summary run says so too (offline: its transaction log is read back)
        space["wandb"] = {"enabled": True, "project": "dpdmd-tune-test", "mode": "offline"}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    storage = tmp_path / "runs"
    code, output = interrupt(path, storage, "signals", getattr(signal, sig), times=times, group=group)
    assert_said_interrupted(storage / "signals", code, output, sig, storage, path)
    if times == 2:
        assert "already stopping" in output
        (log,) = (storage / "signals" / "wandb").glob("offline-run-*/run-*.wandb")
        assert f"interrupted ({sig})".encode() in log.read_bytes()

    assert search.main(["--space", str(path), "--storage", str(storage), "--resume"]) == 0
    trials = pd.read_parquet(storage / "signals" / "trials.parquet")
    assert trials["trial_id"].nunique() == 4
    assert (trials.groupby("trial_id")["student_updates"].max() == 20).all()
    assert not trials.duplicated(["trial_id", "student_updates"]).any()
    assert json.loads((storage / "signals" / "summary.json").read_text())["status"] == "finished"
