"""The search's schedulers with rungs that survive ``--resume`` (built by `tune.schedulers.make_scheduler`).

Ray 2.60's `Tuner.restore` unpickles the scheduler from ``tuner.pkl``, which Ray writes once when
the search starts: its rungs come back empty, and Ray never calls `TrialScheduler.save/restore`.
So the schedulers here keep their rungs in a small file in the experiment directory
(``scheduler_state.jsonl``: one JSON line; local or a URI such as ``s3://``, written through
``pyarrow.fs``), saved atomically whenever it changes and read back before the first trial of
a resumed search is added (the path travels inside ``tuner.pkl``). A search resumed from the same experiment
directory therefore makes the same stop/continue decisions as one that was never interrupted,
including for a trial whose STOP was decided but whose end Ray had not yet saved: it is told
STOP again.
"""

from __future__ import annotations

import json

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ..storage.uri import filesystem, write_atomic
from .moasha import MultiObjectiveASHAScheduler


# --- the state file -------------------------------------------------------------------------------

def read_state(uri: str) -> dict | None:
    """The saved scheduler state at ``uri`` (path or URI), or None if there is none."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.readall())


def write_state(uri: str, text: str) -> None:
    """Write ``text`` to ``uri`` atomically (`tune.storage.uri.write_atomic`: a temporary file beside
    it, then a rename; an object store's PUT is all-or-nothing anyway)."""
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    write_atomic(fs, path, text.encode() + b"\n")


def clear_state(uri: str) -> None:
    """Remove a previous search's state (a fresh search of the same name starts with empty rungs)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


# --- persistence, shared by both schedulers ---------------------------------------------------------

class _PersistentRungs:
    """Mixin before a scheduler that has ``state_dict()`` / ``load_state_dict()``.

    ``state_uri`` None: nothing is saved (unit tests, or a caller that does not resume)."""

    state_uri: str | None = None

    def _init_persistence(self, state_uri: str | None) -> None:
        self.state_uri = state_uri
        self._stopped: set[str] = set()  # trials told STOP: told again if they report after a resume
        self._loaded = False
        self._saved_text: str | None = None

    def __getstate__(self):  # tuner.pkl: the state file, not this process's view of it, is the truth
        state = self.__dict__.copy()
        state.update(_loaded=False, _saved_text=None)
        return state

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        saved = read_state(self.state_uri) if self.state_uri else None
        if saved is not None:
            self.load_state_dict(saved["scheduler"])
            self._stopped = set(saved["stopped"])

    def _save_if_changed(self) -> None:
        if not self.state_uri:
            return
        text = json.dumps({"scheduler": self.state_dict(), "stopped": sorted(self._stopped)}, default=float)
        if text != self._saved_text:
            write_state(self.state_uri, text)
            self._saved_text = text

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        super().on_trial_add(tune_controller, trial)
        self._save_if_changed()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        if trial.trial_id in self._stopped:
            return TrialScheduler.STOP
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self._stopped.add(trial.trial_id)
        self._save_if_changed()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._load_once()
        super().on_trial_complete(tune_controller, trial, result)
        self._save_if_changed()

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._load_once()
        super().on_trial_remove(tune_controller, trial)
        self._save_if_changed()


class PersistentMOASHA(_PersistentRungs, MultiObjectiveASHAScheduler):
    """`MultiObjectiveASHAScheduler` whose rungs are saved at ``state_uri``."""

    def __init__(self, *, state_uri: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self._init_persistence(state_uri)


class PersistentASHA(_PersistentRungs, ASHAScheduler):
    """Ray's `ASHAScheduler` (one metric) whose rungs and bracket assignments are saved at
    ``state_uri``. Relies on Ray 2.60's layout: ``_brackets[i]._rungs`` = [(milestone,
    {trial_id: signed value})], ``_trial_info`` = {trial_id: bracket}."""

    def __init__(self, *, state_uri: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self._init_persistence(state_uri)
        self._assigned: dict[str, int] = {}  # every trial's bracket, kept after it completes

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        if trial.trial_id in self._assigned:  # re-added after a restore: the same bracket as before
            self._trial_info[trial.trial_id] = self._brackets[self._assigned[trial.trial_id]]
        else:
            ASHAScheduler.on_trial_add(self, tune_controller, trial)
            self._assigned[trial.trial_id] = self._brackets.index(self._trial_info[trial.trial_id])
        self._save_if_changed()

    def state_dict(self) -> dict:
        return {"rungs": [[[m, dict(rec)] for m, rec in b._rungs] for b in self._brackets],
                "assigned": dict(self._assigned), "num_stopped": self._num_stopped}

    def load_state_dict(self, state: dict) -> None:
        for bracket, rungs in zip(self._brackets, state["rungs"], strict=True):
            bracket._rungs = [(m, dict(rec)) for m, rec in rungs]
        self._assigned = dict(state["assigned"])
        self._num_stopped = state["num_stopped"]
