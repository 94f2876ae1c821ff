"""The search's one Ray `Searcher`: the space's planned trials, then a sampler's, one shape for all.

Every trial Ray Tune runs gets a flat dict of the searched keys of `dpdmd.TrainConfig` (and
``backbone``) plus ``baseline`` (`tune.space.trials.planned_trials`); ``space.train_config(trial)`` turns
it into the trial's `TrainConfig`. `TrialSearcher` hands these dicts on without reading them: the
planned trials first (the baselines, then under ``method: grid`` every grid point), then its
sampler's (Optuna's random, TPE or NSGA-II sampler). The fixed
trials' results are never told to the sampler: a baseline is not a point of the search and must
not steer it (Optuna could not even be handed lambda_div = 0 from a log-uniform range).
"""

from __future__ import annotations

import copy
import os
import pickle
import tempfile
import threading

from ray.tune.search import Searcher

from ..schedulers.moasha import MOASHA_METRICS
from ..space.schema import BASELINE, SearchSpace
from ..space.trials import planned_trials

SAMPLERS = {"random": "RandomSampler", "optuna_tpe": "TPESampler", "optuna_nsga2": "NSGAIISampler"}


def optuna_space(space: SearchSpace) -> dict:
    """The searched parameters as Optuna distributions (fixed ones are added to each trial)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, p in space.parameters.items():
        if p.values is not None:
            out[name] = CategoricalDistribution(p.values)
        elif p.distribution == "int_uniform":
            out[name] = IntDistribution(int(p.min), int(p.max))
        elif p.distribution is not None:
            out[name] = FloatDistribution(p.min, p.max, log=p.distribution == "log_uniform_values")
    return out


def build_searcher(space: SearchSpace) -> "TrialSearcher":
    """The search's one searcher: the planned trials, then (samplers) Optuna's suggestions.
    NSGA-II, and any sampler under MO-ASHA, optimises the two scores MO-ASHA ranks
    (diversity_score, quality_score) together; the others the combined objective."""
    sampler = None
    if space.method in SAMPLERS:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        make = picklable(getattr(optuna.samplers, SAMPLERS[space.method]))
        two_scores = space.method == "optuna_nsga2" or space.scheduler.type == "moasha"
        metric, mode = (list(MOASHA_METRICS), ["max", "max"]) if two_scores else ("objective", "max")
        sampler = OptunaSearch(space=optuna_space(space), sampler=make(seed=space.seed), metric=metric, mode=mode)
    return TrialSearcher(planned_trials(space), sampler, fixed=space.fixed_values())


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class _PicklesWithoutLocks:
    """Pickle an object without its thread locks and give it fresh, unlocked ones when unpickled.

    Ray pickles the searcher (to start the search, to checkpoint it for ``--resume``). Optuna 5.1's
    genetic samplers (NSGA-II, NSGA-III) hold a ``threading.Lock``, which pickle refuses ("cannot
    pickle '_thread.lock' object"); a lock guards nothing across processes, so a new one is right."""

    def __getstate__(self):
        state = dict(self.__dict__)
        locks = {name: isinstance(value, type(threading.RLock())) for name, value in state.items()
                 if isinstance(value, _LOCK_TYPES)}
        for name in locks:
            del state[name]
        return {"state": state, "locks": locks}

    def __setstate__(self, pickled):
        self.__dict__.update(pickled["state"])
        for name, reentrant in pickled["locks"].items():
            setattr(self, name, threading.RLock() if reentrant else threading.Lock())


_PICKLABLE: dict[type, type] = {}


def picklable(sampler_class: type) -> type:
    """``sampler_class`` made picklable whatever locks it holds (`_PicklesWithoutLocks`). The
    subclass is registered in this module under a stable name, so pickle finds it again."""
    if sampler_class not in _PICKLABLE:
        name = f"Picklable{sampler_class.__name__}"
        cls = type(name, (_PicklesWithoutLocks, sampler_class), {"__module__": __name__, "__qualname__": name})
        globals()[name] = _PICKLABLE[sampler_class] = cls
    return _PICKLABLE[sampler_class]


class TrialSearcher(Searcher):
    """``planned`` trials first, then ``sampler``'s (None: finished when the plan is done).

    A sampled trial gets the space's ``fixed`` values and ``baseline: False``. Only the sampled
    trials' results reach the sampler."""

    def __init__(self, planned: list[dict], sampler: Searcher | None, *, fixed: dict | None = None):
        self.pending = [dict(t) for t in planned]
        self.sampler, self.fixed = sampler, dict(fixed or {})
        self.planned_ids: set[str] = set()
        super().__init__(metric=sampler.metric if sampler else "objective", mode=sampler.mode if sampler else "max")

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.sampler.set_search_properties(metric, mode, config, **spec) if self.sampler else True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.sampler.set_max_concurrency(max_concurrent) if self.sampler else False

    def suggest(self, trial_id: str):
        if self.pending:
            self.planned_ids.add(trial_id)
            return self.pending.pop(0)
        if self.sampler is None:
            return Searcher.FINISHED
        suggested = self.sampler.suggest(trial_id)
        if not isinstance(suggested, dict):  # None (wait) or FINISHED
            return suggested
        return {BASELINE: False, **self.fixed, **suggested}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.sampler is not None and trial_id not in self.planned_ids:
            self.sampler.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self.sampler is not None and trial_id not in self.planned_ids:
            self.sampler.on_trial_complete(trial_id, result=result, error=error)

    # --- resume: this searcher's plan and, in the same file, the sampler's state ---
    def get_state(self) -> dict:
        return copy.deepcopy({"pending": self.pending, "planned_ids": self.planned_ids})

    def set_state(self, state: dict) -> None:
        self.pending, self.planned_ids = state["pending"], state["planned_ids"]

    def save(self, checkpoint_path: str) -> None:
        state = {"own": self.get_state(), "sampler": None}
        if self.sampler is not None:
            with tempfile.TemporaryDirectory() as tmp:
                self.sampler.save(os.path.join(tmp, "sampler.pkl"))
                with open(os.path.join(tmp, "sampler.pkl"), "rb") as f:
                    state["sampler"] = f.read()
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.set_state(state["own"])
        if self.sampler is not None and state["sampler"] is not None:
            with tempfile.TemporaryDirectory() as tmp:
                with open(os.path.join(tmp, "sampler.pkl"), "wb") as f:
                    f.write(state["sampler"])
                self.sampler.restore(os.path.join(tmp, "sampler.pkl"))
