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
from .live_choice import LiveChoice
from .moasha import MultiObjectiveASHAScheduler


# --- the state file -------------------------------------------------------------------------------
#
# One JSON line of the whole state (``{"scheduler": state_dict, "stopped": [...]}``), then, on a
# local storage, one line per change (``{"trial": id, ...}``: what changed for that trial, see
# `_PersistentRungs._change`), appended: a report costs a line, not the whole state (at 10,000
# trials the whole state is ~1 MB, rewritten at every report). The file is rewritten whole
# (atomically) once the appended lines outweigh the first one. A line cut short by a crash is the
# last one, and is ignored. On an object store (no append) every change rewrites the whole state.

def read_state(uri: str) -> dict | None:
    """The saved scheduler state at ``uri`` (path or URI), its changes applied, or None if there
    is none."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        lines = f.readall().splitlines()
    state = json.loads(lines[0])
    for line in lines[1:]:
        try:
            change = json.loads(line)
        except ValueError:  # the last line, cut short by a crash: the change it held was not acted on
            break
        apply_change(state, change)
    return state


def apply_change(state: dict, change: dict) -> None:
    """One appended line applied to a whole state (`read_state`)."""
    trial, scheduler = change["trial"], state["scheduler"]
    key, bracket = change["assigned"]
    if bracket is None:
        scheduler[key].pop(trial, None)
    else:
        scheduler[key][trial] = bracket
    for b, r, value in change["rungs"]:
        scheduler["rungs"][b][r][1].setdefault(trial, value)  # recorded once, in arrival order
    scheduler["num_stopped"] = change["num_stopped"]
    if change["stopped"] and trial not in state["stopped"]:
        state["stopped"].append(trial)


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

class _PersistentRungs(LiveChoice):
    """Mixin before a scheduler that has ``state_dict()`` / ``load_state_dict()``; the next trial
    to run is chosen among the live ones (`tune.schedulers.live_choice`).

    ``state_uri`` None: nothing is saved (unit tests, or a caller that does not resume)."""

    state_uri: str | None = None

    def _init_persistence(self, state_uri: str | None) -> None:
        self.state_uri = state_uri
        self._stopped: set[str] = set()  # trials told STOP: told again if they report after a resume
        self._reset_journal()

    def _reset_journal(self) -> None:
        self._loaded = False
        self._saved_whole = 0  # bytes of the whole state last written (0: not written by this process)
        self._appended = 0  # bytes of changes appended since
        self._last_change: dict[str, str] = {}  # trial -> its last line (an unchanged trial writes none)

    def __getstate__(self):  # tuner.pkl: the state file, not this process's view of it, is the truth
        state = self.__dict__.copy()
        state.update(_loaded=False, _saved_whole=0, _appended=0, _last_change={})
        return state

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        saved = read_state(self.state_uri) if self.state_uri else None
        if saved is not None:
            self.load_state_dict(saved["scheduler"])
            self._stopped = set(saved["stopped"])

    # what a scheduler tells about a trial's place in its state (`PersistentMOASHA`, `PersistentASHA`)
    ASSIGNED: str  # the state_dict key of the trial -> bracket map

    def _bracket_of(self, trial_id: str) -> int | None:
        raise NotImplementedError

    def _rung_records(self, bracket: int) -> list[dict]:
        raise NotImplementedError

    def _change(self, trial_id: str, bracket: int | None) -> dict:
        """What the state holds about ``trial_id`` (``bracket``: where its rungs are, if it is no
        longer assigned one), and the counts: one line of the file."""
        rungs = []
        if bracket is not None:
            for r, recorded in enumerate(self._rung_records(bracket)):
                if trial_id in recorded:
                    value = recorded[trial_id]
                    rungs.append([bracket, r, list(value) if isinstance(value, tuple) else value])
        return {"trial": trial_id, "assigned": [self.ASSIGNED, self._bracket_of(trial_id)], "rungs": rungs,
                "num_stopped": self._num_stopped, "stopped": trial_id in self._stopped}

    def _save(self, trial_id: str, bracket: int | None = None) -> None:
        """Save what changed about ``trial_id``: a line appended (local storage), or the whole state
        rewritten (the first save of this process, an object store, or once the appended lines
        outweigh the whole state)."""
        if not self.state_uri:
            return
        bracket = self._bracket_of(trial_id) if bracket is None else bracket
        line = json.dumps(self._change(trial_id, bracket), default=float)
        if self._last_change.get(trial_id) == line:
            return
        self._last_change[trial_id] = line
        local = "://" not in self.state_uri
        if local and self._saved_whole and self._appended + len(line) < max(self._saved_whole, 1 << 16):
            with open(self.state_uri, "a") as f:
                f.write(line + "\n")
            self._appended += len(line) + 1
            return
        text = json.dumps({"scheduler": self.state_dict(), "stopped": sorted(self._stopped)}, default=float)
        write_state(self.state_uri, text)
        self._saved_whole, self._appended = len(text) + 1, 0

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        self._seen(trial)
        super().on_trial_add(tune_controller, trial)
        self._save(trial.trial_id)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        if trial.trial_id in self._stopped:
            return TrialScheduler.STOP
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self._stopped.add(trial.trial_id)
        self._save(trial.trial_id)
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._load_once()
        bracket = self._bracket_of(trial.trial_id)  # MO-ASHA forgets it on completion
        super().on_trial_complete(tune_controller, trial, result)
        self._save(trial.trial_id, bracket)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._load_once()
        bracket = self._bracket_of(trial.trial_id)
        super().on_trial_remove(tune_controller, trial)
        self._save(trial.trial_id, bracket)


class PersistentMOASHA(_PersistentRungs, MultiObjectiveASHAScheduler):
    """`MultiObjectiveASHAScheduler` whose rungs are saved at ``state_uri``."""

    ASSIGNED = "trial_bracket"

    def __init__(self, *, state_uri: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self._init_persistence(state_uri)

    def _bracket_of(self, trial_id: str) -> int | None:
        return self._trial_bracket.get(trial_id)

    def _rung_records(self, bracket: int) -> list[dict]:
        return [recorded for _, recorded in self._brackets[bracket].rungs]


class PersistentASHA(_PersistentRungs, ASHAScheduler):
    """Ray's `ASHAScheduler` (one metric) whose rungs and bracket assignments are saved at
    ``state_uri``. Relies on Ray 2.60's layout: ``_brackets[i]._rungs`` = [(milestone,
    {trial_id: signed value})], ``_trial_info`` = {trial_id: bracket}."""

    ASSIGNED = "assigned"

    def __init__(self, *, state_uri: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self._init_persistence(state_uri)
        self._assigned: dict[str, int] = {}  # every trial's bracket, kept after it completes

    def _bracket_of(self, trial_id: str) -> int | None:
        return self._assigned.get(trial_id)

    def _rung_records(self, bracket: int) -> list[dict]:
        return [recorded for _, recorded in self._brackets[bracket]._rungs]

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_once()
        self._seen(trial)
        if trial.trial_id in self._assigned:  # re-added after a restore: the same bracket as before
            self._trial_info[trial.trial_id] = self._brackets[self._assigned[trial.trial_id]]
        else:
            ASHAScheduler.on_trial_add(self, tune_controller, trial)
            self._assigned[trial.trial_id] = self._brackets.index(self._trial_info[trial.trial_id])
        self._save(trial.trial_id)

    def state_dict(self) -> dict:
        return {"rungs": [[[m, dict(rec)] for m, rec in b._rungs] for b in self._brackets],
                "assigned": dict(self._assigned), "num_stopped": self._num_stopped}

    def load_state_dict(self, state: dict) -> None:
        for bracket, rungs in zip(self._brackets, state["rungs"], strict=True):
            bracket._rungs = [(m, dict(rec)) for m, rec in rungs]
        self._assigned = dict(state["assigned"])
        self._num_stopped = state["num_stopped"]
