"""Reference trials run before a sampler's own: the vanilla-DMD (lambda_div = 0) baseline.

Optuna cannot be handed lambda_div = 0 when the space samples it log-uniformly (0 is outside the
distribution), and a baseline is not a point of the search anyway. `WithBaselines` wraps any Ray
`Searcher`: it hands out the baseline configs first, then delegates, and never reports the
baselines' results to the wrapped searcher, so they do not steer the search.
"""

from __future__ import annotations

import copy
import pickle

from ray.tune.search import Searcher


class WithBaselines(Searcher):
    """``searcher`` preceded by the fixed configs ``points`` (plain dicts of the searched keys)."""

    def __init__(self, searcher: Searcher, points: list[dict]):
        self.searcher = searcher
        self.pending = [dict(p) for p in points]
        self.baseline_trials: set[str] = set()
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str):
        if self.pending:
            self.baseline_trials.add(trial_id)
            return self.pending.pop(0)
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.baseline_trials:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.baseline_trials:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    # --- resume: the wrapped searcher's state, plus which baselines were handed out ---
    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)
        with open(checkpoint_path + ".baselines", "wb") as f:
            pickle.dump({"pending": self.pending, "baseline_trials": self.baseline_trials}, f)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
        with open(checkpoint_path + ".baselines", "rb") as f:
            state = pickle.load(f)
        self.pending, self.baseline_trials = state["pending"], state["baseline_trials"]

    def get_state(self) -> dict:
        return copy.deepcopy({"pending": self.pending, "baseline_trials": self.baseline_trials})

    def set_state(self, state: dict) -> None:
        self.pending, self.baseline_trials = state["pending"], state["baseline_trials"]
