"""The last whole copy of Ray Tune's experiment state (`tune.storage.state_backup`, issue 13): copied from
Ray's staging folder after each save, kept when a later copy cannot be written (a full disk), and
put back by ``--resume`` where the storage's state is cut short; without a copy, ``--resume`` of
a damaged state is refused (Ray would start the search again). The full-disk search itself:
tests/faults/test_full_disk.py (slow)."""

from __future__ import annotations

import errno
import json
import os
import types
from pathlib import Path

import pytest
import ray.cloudpickle as cloudpickle
import yaml

from tune.cli import search
from tune.storage import state_backup
from tune.storage.state_backup import BACKUP_DIR, StateBackup, damaged_state, is_whole, restore_if_damaged

SESSION = "2026-01-01_00-00-00"
TRIAL = "run_search_trial_aaaa_1_anchor_k=2,lambda_div=0.5000_" + SESSION
STATE = f"experiment_state-{SESSION}.json"
SEARCHER = f"search_gen_state-{SESSION}.json"  # a pickle, whatever its name


def stage(staging: Path, rows: int) -> dict[str, bytes]:
    """Ray's staging folder after a save with ``rows`` reports of one trial; returns its files."""
    files = {
        STATE: json.dumps({"trial_data": [["trial", {"checkpoint": rows}]], "runner_data": {}}).encode(),
        SEARCHER: cloudpickle.dumps({"counter": rows, "finished": False}),
        f"{TRIAL}/progress.csv": ("student_updates,diversity\n" + "".join(f"{2 * i},0.{i}\n" for i in range(1, rows + 1))).encode(),
        f"{TRIAL}/result.json": "".join(json.dumps({"student_updates": 2 * i}) + "\n" for i in range(1, rows + 1)).encode(),
    }
    for relative, data in files.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_bytes(data)
        os.utime(staging / relative, ns=(rows * 10**9, rows * 10**9))  # a new save: a new mtime
    return files


def fake_trials(staging: Path):
    return [types.SimpleNamespace(storage=types.SimpleNamespace(experiment_driver_staging_path=str(staging)))]


def upload(experiment: Path, files: dict[str, bytes]) -> None:
    """What Ray's sync leaves in the storage."""
    for relative, data in files.items():
        (experiment / relative).parent.mkdir(parents=True, exist_ok=True)
        (experiment / relative).write_bytes(data)


@pytest.fixture
def dirs(tmp_path):
    staging, experiment = tmp_path / "staging", tmp_path / "runs" / "exp"
    staging.mkdir()
    experiment.mkdir(parents=True)
    return staging, experiment


def test_what_is_whole():
    state = json.dumps({"trial_data": [], "runner_data": {"x": "y" * 100}}).encode()
    pickled = cloudpickle.dumps({"counter": 3})
    csv = b"a,b\n1,2\n3,4\n"
    assert is_whole(STATE, state) and is_whole(SEARCHER, pickled) and is_whole("t/progress.csv", csv)
    assert not is_whole(STATE, state[:40]) and not is_whole(STATE, b"")
    assert not is_whole(SEARCHER, pickled[:-3]) and not is_whole(SEARCHER, b"")
    assert not is_whole("t/progress.csv", csv[:-1])  # the last row cut short of its newline
    assert not is_whole("t/progress.csv", csv[:-3] + b"\n")  # a row with a field missing
    assert not is_whole("t/result.json", b'{"a": 1}\n{"a"')


def test_the_copy_follows_each_save_and_restores_what_a_full_disk_cut_short(dirs, capsys, monkeypatch):
    staging, experiment = dirs
    backup = cloudpickle.loads(cloudpickle.dumps(StateBackup(str(experiment))))  # as in tuner.pkl
    first = stage(staging, rows=1)
    backup.on_step_end(iteration=1, trials=fake_trials(staging))
    backup.wait()
    manifest = json.loads((experiment / BACKUP_DIR / "manifest.json").read_text())
    assert set(manifest["files"]) == set(first)

    second = stage(staging, rows=2)  # Ray saved again: copied again, the first copy's blobs removed
    backup.on_step_end(iteration=2, trials=fake_trials(staging))
    backup.wait()
    manifest = json.loads((experiment / BACKUP_DIR / "manifest.json").read_text())
    blobs = {p.name for p in (experiment / BACKUP_DIR / "blobs").iterdir()}
    assert blobs == set(manifest["files"].values()) and len(blobs) == 4
    upload(experiment, second)

    # the disk fills up: Ray's next save reaches the storage cut short, and so does not our copy
    third = stage(staging, rows=3)
    real_write = state_backup.write_atomic

    def disk_full(fs, path, data, **options):
        if path.endswith("manifest.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fs, path, data, **options)

    monkeypatch.setattr(state_backup, "write_atomic", disk_full)
    backup.on_step_end(iteration=3, trials=fake_trials(staging))
    backup.wait()
    stage(staging, rows=4)
    backup.on_step_end(iteration=4, trials=fake_trials(staging))
    backup.wait()
    assert capsys.readouterr().err.count("warning: cannot copy Ray's experiment state") == 1  # said once
    monkeypatch.setattr(state_backup, "write_atomic", real_write)
    upload(experiment, {STATE: third[STATE][:40], SEARCHER: b"", f"{TRIAL}/progress.csv": b""})
    later = "experiment_state-2026-01-02_00-00-00.json"  # a later session's save, cut short too
    (experiment / later).write_bytes(third[STATE][:10])

    damaged, _ = damaged_state(str(experiment))
    assert damaged == sorted([STATE, later, SEARCHER, f"{TRIAL}/progress.csv"])
    message = restore_if_damaged(str(experiment))
    assert "restored its last whole copy" in message and later in message
    for relative, data in second.items():  # the last save whose copy was whole: all of it, consistent
        assert (experiment / relative).read_bytes() == data, relative
    assert not (experiment / later).exists()  # Ray resumes from the newest by name: set aside
    assert (experiment / BACKUP_DIR / "set_aside" / later).exists()
    assert restore_if_damaged(str(experiment)) is None  # whole now: nothing more to do


def test_a_whole_state_is_left_as_ray_wrote_it(dirs):
    staging, experiment = dirs
    stage(staging, rows=1)
    backup = StateBackup(str(experiment))
    backup.on_step_end(iteration=1, trials=fake_trials(staging))
    backup.wait()
    newer = stage(staging, rows=2)  # Ray's upload is ahead of the copy, and whole
    upload(experiment, newer)
    assert restore_if_damaged(str(experiment)) is None
    assert (experiment / STATE).read_bytes() == newer[STATE]


def test_resume_of_a_damaged_state_without_a_copy_is_refused(tmp_path, capsys):
    from tests.faults.test_full_disk import SEARCH_SPACE

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SEARCH_SPACE))
    storage = tmp_path / "runs"
    experiment = storage / SEARCH_SPACE["name"]
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"")  # a search of this name exists ...
    (experiment / STATE).write_bytes(b'{"trial_data": [[')  # ... with its state cut short, no copy
    files_before = sorted(p.name for p in experiment.iterdir())
    assert search.main(["--space", str(space), "--storage", str(storage), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"Ray's experiment state in {experiment} is not whole ({STATE})" in err, err
    assert "start a new search with another --name" in err
    assert sorted(p.name for p in experiment.iterdir()) == files_before  # nothing written


def test_a_trial_whose_ray_checkpoint_is_gone_restores_from_an_empty_folder(tmp_path, capsys):
    """The state put back after a full disk names each trial's checkpoint of its time, which Ray has
    deleted since (it keeps the best, the latest): the trial resumes from its resume store anyway,
    where Ray's restore failed it (seen once in two runs of the full-disk search)."""
    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.tune import Checkpoint
    from ray.tune.trainable import wrap_function

    from tune.space import load_space
    from tune.trial.multi_gpu import build_trainable
    from tune.trial.restore import RestoreWithoutCheckpoint

    class Ray:  # stands for FunctionTrainable.restore
        def restore(self, checkpoint_path):
            self.restored = checkpoint_path

    class Trial(RestoreWithoutCheckpoint, Ray):
        pass

    gone = _TrainingResult(checkpoint=Checkpoint.from_directory(str(tmp_path / "checkpoint_000000")),
                           metrics={"training_iteration": 3})
    trial = Trial()
    trial.restore(gone)
    given = trial.restored.checkpoint.path
    assert os.path.isdir(given) and not os.listdir(given) and trial.restored.metrics == {"training_iteration": 3}
    assert "checkpoint_000000 is gone" in capsys.readouterr().err
    (tmp_path / "checkpoint_000001").mkdir()
    there = _TrainingResult(checkpoint=Checkpoint.from_directory(str(tmp_path / "checkpoint_000001")), metrics={})
    trial.restore(there)
    assert trial.restored is there  # a checkpoint that is there: Ray's own restore, untouched

    space = load_space(Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml")
    trainable = wrap_function(build_trainable(space, {"enabled": False, "spill_uri": None, "ks": [20]},
                                              experiment="/tmp/unused"))
    names = [c.__name__ for c in trainable.__mro__]
    assert names.index("RestoreWithoutCheckpoint") < names.index("FunctionTrainable")
