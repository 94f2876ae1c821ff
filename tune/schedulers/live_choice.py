"""The trial a scheduler runs next, chosen among the live trials only (`LiveChoice`).

Ray's `FIFOScheduler.choose_trial_to_run`, which its ASHA and MO-ASHA here inherit, walks every
trial of the search, the finished ones included, for the first PENDING one (else the first
PAUSED), and Tune's controller asks it at every step of its loop: at 10,000 trials 1.4 ms a call,
most of the scheduler's time in ``bench/load.py``, and growing with the trials run. `LiveChoice`
makes the same choice among ``get_live_trials()`` (the trials not ended, a set Tune's controller
keeps), in the controller's list order: the order in which ``on_trial_add`` last saw each trial
(the controller appends a new trial, or moves a requeued one to the end, then calls it).
"""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

__all__ = ["LiveChoice", "LiveFIFOScheduler"]


class LiveChoice:
    """Mixin before a `FIFOScheduler` (subclass); its ``on_trial_add`` must call `_seen`."""

    def _seen(self, trial) -> None:
        """``trial`` was added (or re-added) to the controller's list: it is now last in it."""
        self._added_count = getattr(self, "_added_count", 0) + 1
        self.__dict__.setdefault("_added_order", {})[trial.trial_id] = self._added_count

    def choose_trial_to_run(self, tune_controller):
        live, order = getattr(tune_controller, "get_live_trials", None), getattr(self, "_added_order", None)
        if live is None or order is None:  # a controller without the set: Ray's own walk
            return super().choose_trial_to_run(tune_controller)
        trials = list(live())
        for status in (Trial.PENDING, Trial.PAUSED):
            waiting = [t for t in trials if t.status == status]
            if waiting:
                return min(waiting, key=lambda t: order.get(t.trial_id, 0))
        return None


class LiveFIFOScheduler(LiveChoice, FIFOScheduler):
    """Ray's `FIFOScheduler` (no early stopping), choosing among the live trials (`LiveChoice`)."""

    def on_trial_add(self, tune_controller, trial) -> None:
        self._seen(trial)
        super().on_trial_add(tune_controller, trial)
