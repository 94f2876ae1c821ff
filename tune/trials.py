"""The trials of a search: flat overrides of the space's training settings, one shape for all.

Every trial Ray Tune runs gets a flat dict of the searched keys of `dpdmd.TrainConfig` (and
``backbone``) plus ``baseline``: True for the reference trials the search adds, a vanilla-DMD
trial per backbone (`baseline_trials`), False for the others. ``space.train_config(trial)`` turns
it into the trial's `TrainConfig`. The trials come from one Ray `Searcher`, `TrialSearcher`, for
every method: it hands out the fixed trials first (the baselines, then under ``method: grid``
every grid point), then asks its sampler (Optuna's random, TPE or NSGA-II sampler). The fixed
trials' results are never told to the sampler: a baseline is not a point of the search and must
not steer it (Optuna could not even be handed lambda_div = 0 from a log-uniform range).
"""

from __future__ import annotations

import copy
import os
import pickle
import tempfile

from ray.tune.search import Searcher

from dpdmd.config import NEEDS_ANCHOR, knobs_with_role, vanilla_dmd

from .space import BASELINE, SearchSpace, iter_grid

SAMPLERS = {"random": "RandomSampler", "optuna_tpe": "TPESampler", "optuna_nsga2": "NSGAIISampler"}


def baseline_trials(space: SearchSpace) -> list[dict]:
    """One vanilla-DMD trial per backbone, for reference, unless the space has one already. Its
    other searched settings take their typical value (`Param.typical`); the anchor knob its
    smallest (unused: vanilla DMD asks for no anchor)."""
    vanilla = vanilla_dmd()
    if not space.baseline or any(space.parameters[n].values and v in space.parameters[n].values
                                 for n, v in vanilla.items() if n in space.parameters):
        return []
    out = []
    for backbone in space.backbone_names():
        trial = {BASELINE: True, **vanilla}
        if "backbone" in space.parameters:
            trial["backbone"] = backbone
        for name in knobs_with_role(NEEDS_ANCHOR):
            if name in space.parameters:
                trial[name] = min(space.parameters[name].extremes())
        for name, p in space.parameters.items():
            trial.setdefault(name, p.typical())
        out.append(trial)
    return out


def grid_trials(space: SearchSpace) -> list[dict]:
    """Every grid point (``num_samples`` times), with the fixed parameters."""
    fixed = space.fixed_values()
    return [{BASELINE: False, **fixed, **point} for point in iter_grid(space)] * space.num_samples


def planned_trials(space: SearchSpace) -> list[dict]:
    """The trials handed out before any sampler: the baselines, then the grid's points."""
    return baseline_trials(space) + (grid_trials(space) if space.method == "grid" else [])


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
    NSGA-II optimises diversity_score and quality_score together; the others the combined objective."""
    sampler = None
    if space.method in SAMPLERS:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        make = getattr(optuna.samplers, SAMPLERS[space.method])
        metric, mode = (["diversity_score", "quality_score"], ["max", "max"]) if space.method == "optuna_nsga2" \
            else ("objective", "max")
        sampler = OptunaSearch(space=optuna_space(space), sampler=make(seed=space.seed), metric=metric, mode=mode)
    return TrialSearcher(planned_trials(space), sampler, fixed=space.fixed_values())


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
