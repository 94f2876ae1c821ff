"""Multi-objective asynchronous successive halving (MO-ASHA) as a Ray Tune scheduler.

Ray's `ASHAScheduler` ranks the results recorded at a rung on one number. A DP-DMD search has two
(``diversity_score`` and ``quality_score``, both higher-is-better), and folding them into one
scalar decides the trade-off before the search has seen it. MO-ASHA (Schmucker et al. 2021,
"Multi-objective asynchronous successive halving", arXiv:2106.12639) keeps ASHA's rungs and
asynchrony and only changes *how a rung ranks*: by non-dominated sorting, ties inside one
non-domination layer broken by an epsilon-net.

Rungs (as Ray's ASHA, ``ray/tune/schedulers/async_hyperband.py``): time is ``time_attr``
(``student_updates`` here); bracket ``s`` has milestones ``grace_period * rf**(k + s)`` below
``max_t``. When a trial first reaches a milestone its point is recorded there, and it continues iff
it is in the top ``ceil(n / rf)`` of the ``n`` points recorded at that rung so far (itself
included; the first result at a rung always continues). A trial reaching ``max_t`` is stopped.

Ranking at a rung, best first (`rank_points`):

1. **Non-domination rank** (NSGA-II layers, maximising both objectives): a dominated point always
   ranks below the points of the layers in front of it.
2. **Epsilon-net order inside a layer** (Schmucker et al.'s best variant): start from the point
   with the highest quality (the fidelity axis: the safe end of the front), then repeatedly take
   the point farthest (Euclidean, each objective min-max scaled over the rung's finite points)
   from those already taken. Spread-out points of a layer outrank clustered ones, so the promoted
   set covers the front instead of crowding one end. We prefer it to NSGA-II's crowding distance
   because crowding gives both ends of every layer the same infinite distance (a tie on every
   2-point layer, the common case at an early rung), and because it is the variant Schmucker et
   al. found best.
3. Remaining ties (exact duplicates, equal distances) go to the earlier-recorded trial, so
   decisions are deterministic.
4. Results with a NaN or inf objective rank after every finite one (a diverged student).
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Sequence

import numpy as np
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from ..pareto import domination_ranks

logger = logging.getLogger(__name__)

MOASHA_METRICS = ("diversity_score", "quality_score")


def epsilon_net_order(points: np.ndarray, *, scale: np.ndarray, first_axis: int) -> list[int]:
    """Farthest-first order of ``points`` (k, m): start at the best of ``first_axis``, then each
    next point maximises its distance to the nearest already-chosen point. ``scale`` (m,) divides
    each axis so both objectives count alike. Ties go to the lower index (earlier recorded)."""
    scaled = points / scale
    order = [int(np.argmax(points[:, first_axis]))]  # argmax: first index on ties
    nearest = np.linalg.norm(scaled - scaled[order[0]], axis=1)
    nearest[order[0]] = -1.0
    while len(order) < len(points):
        nxt = int(np.argmax(nearest))
        order.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(scaled - scaled[nxt], axis=1))
        nearest[order] = -1.0
    return order


def rank_points(points: Sequence[Sequence[float]], *, first_axis: int = 1) -> list[int]:
    """Indices of ``points`` (n, m; higher is better in every column), best first, by
    (non-domination rank, epsilon-net order, index); non-finite rows last in index order."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    finite = np.flatnonzero(np.isfinite(pts).all(axis=1))
    invalid = [int(i) for i in np.flatnonzero(~np.isfinite(pts).all(axis=1))]
    if finite.size == 0:
        return invalid
    good = pts[finite]
    span = good.max(axis=0) - good.min(axis=0)
    scale = np.where(span > 0, span, 1.0)  # a constant axis adds no distance
    ranks = domination_ranks(good)
    order: list[int] = []
    for layer in np.unique(ranks):
        members = np.flatnonzero(ranks == layer)  # ascending: earlier recorded first
        order.extend(int(finite[members[i]]) for i in
                     epsilon_net_order(good[members], scale=scale, first_axis=first_axis))
    return order + invalid


def in_top(points: np.ndarray, index: int, keep: int, *, first_axis: int = 1) -> bool:
    """Whether row ``index`` of ``points`` (n, m) is among the first ``keep`` of `rank_points`
    (points), computed without ranking the rest: first the points that dominate it and those it
    dominates are counted (O(n)), which settles most decisions; else the layers in front of its own
    are counted, and the epsilon-net runs only inside its layer, and only as far as needed (one
    non-dominated sort in C, and O(layer size x picks) for the net; `rank_points`
    ran the net through every layer at every decision, which at 10,000 trials took most of the
    scheduler's time). The same decision as ``index in rank_points(points)[:keep]``."""
    finite_rows = np.isfinite(points).all(axis=1)
    if keep <= 0:
        return False
    if not finite_rows[index]:  # after every finite point, in arrival order among the others
        return int(finite_rows.sum()) + int((~finite_rows[:index]).sum()) < keep
    finite = np.flatnonzero(finite_rows)
    good = points[finite]
    me = int(np.searchsorted(finite, index))  # its row among the finite ones
    at_least, at_most = np.ones(len(good), bool), np.ones(len(good), bool)
    for axis in range(good.shape[1]):
        at_least &= good[:, axis] >= good[me, axis]
        at_most &= good[:, axis] <= good[me, axis]
    same = int((at_least & at_most).sum())  # itself and its duplicates
    # most decisions need no sort (84% of a 10,000-trial rung's): a point dominating it is in a layer
    # in front of its own; a point it dominates is behind its layer (O(n), ~30x cheaper than the sort)
    if int(at_least.sum()) - same >= keep:
        return False
    if len(good) - (int(at_most.sum()) - same) <= keep:  # its layer and the layers in front all kept
        return True
    ranks = domination_ranks(good)
    ahead = int((ranks < ranks[me]).sum())  # every point of a layer in front of its own
    if ahead >= keep:
        return False
    members = np.flatnonzero(ranks == ranks[me])  # ascending: arrival order
    picks = keep - ahead
    if len(members) <= picks:
        return True
    span = good.max(axis=0) - good.min(axis=0)
    scaled = good[members] / np.where(span > 0, span, 1.0)  # as rank_points: a constant axis adds no distance
    target = int(np.searchsorted(members, me))
    chosen = int(np.argmax(good[members, first_axis]))
    nearest = np.linalg.norm(scaled - scaled[chosen], axis=1)
    nearest[chosen] = -1.0
    for _ in range(picks - 1):
        if chosen == target:
            return True
        chosen = int(np.argmax(nearest))
        nearest = np.minimum(nearest, np.linalg.norm(scaled - scaled[chosen], axis=1))
        nearest[chosen] = -1.0
    return chosen == target


class _RungPoints:
    """A rung's points as an array, kept as the rung's dict grows (a trial is recorded at a rung
    once, and never changed): ``array(recorded)`` costs the new rows only, not the whole rung."""

    def __init__(self):
        self._of: dict | None = None  # the dict the rows belong to
        self._rows: np.ndarray = np.zeros((0, 2))
        self._count = 0

    def array(self, recorded: dict) -> np.ndarray:
        n = len(recorded)
        if self._of is not recorded or n < self._count:  # another dict (a state loaded): start again
            self._of, self._count = recorded, 0
        if n > self._count:
            new = list(itertools.islice(reversed(recorded.values()), n - self._count))[::-1]
            rows = np.asarray(new, dtype=float).reshape(len(new), -1)
            if self._count + len(new) > len(self._rows) or self._rows.shape[1] != rows.shape[1]:
                grown = np.empty((max(2 * n, 64), rows.shape[1]))
                grown[: self._count] = self._rows[: self._count] if self._count else grown[:0]
                self._rows = grown
            self._rows[self._count: n] = rows
            self._count = n
        return self._rows[:n]


class _MOBracket:
    """One bracket's rungs, ``[(milestone, {trial_id: (d, q)})]`` with milestones descending
    (Ray's layout), and the promotion rule of the module docstring."""

    def __init__(self, min_t: float, max_t: float, reduction_factor: float, s: int):
        self.rf = reduction_factor
        n_rungs = int(np.log(max_t / min_t) / np.log(reduction_factor) - s + 1)
        self.rungs: list[tuple[float, dict[str, tuple[float, ...]]]] = [
            (min_t * reduction_factor ** (k + s), {}) for k in reversed(range(n_rungs))]
        self._points = [_RungPoints() for _ in self.rungs]

    def __getstate__(self):  # the arrays are a cache: rebuilt from the dicts (tuner.pkl stays as it was)
        state = self.__dict__.copy()
        state.pop("_points", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._points = [_RungPoints() for _ in self.rungs]

    def on_result(self, trial_id: str, cur_iter: float, point: tuple[float, ...]) -> str:
        """Record ``point`` at the highest rung ``cur_iter`` newly passed; CONTINUE or STOP."""
        for (milestone, recorded), cache in zip(self.rungs, self._points):
            if cur_iter < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = point  # dicts keep insertion order: index = arrival order
            keep = math.ceil(len(recorded) / self.rf)
            top = in_top(cache.array(recorded), len(recorded) - 1, keep)
            return TrialScheduler.CONTINUE if top else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_str(self) -> str:
        return "Bracket: " + " | ".join(f"t {m:g}: {len(r)} recorded" for m, r in self.rungs)


class MultiObjectiveASHAScheduler(FIFOScheduler):
    """MO-ASHA: Ray's ASHA with rungs ranked by non-dominated sorting (see the module docstring).

    Args:
        time_attr: the monotone progress key of each result (student updates here).
        metrics: the result keys of the objectives; ``modes`` says for each whether "max" or "min"
            is better (folded into one sign, as Ray's ASHA does).
        max_t, grace_period, reduction_factor, brackets: as Ray's `AsyncHyperBandScheduler`.

    Leave `TuneConfig.metric/mode` unset: this scheduler has its own pair of metrics.
    """

    def __init__(self, *, time_attr: str = "student_updates", metrics: Sequence[str] = MOASHA_METRICS,
                 modes: Sequence[str] = ("max", "max"), max_t: float = 100, grace_period: float = 1,
                 reduction_factor: float = 4, brackets: int = 1):
        if not 0 < grace_period <= max_t:
            raise ValueError(f"MO-ASHA: need 0 < grace_period ({grace_period}) <= max_t ({max_t})")
        if reduction_factor <= 1 or brackets < 1:
            raise ValueError(f"MO-ASHA: reduction_factor ({reduction_factor}) must be > 1 and "
                             f"brackets ({brackets}) >= 1")
        if len(metrics) != 2 or len(modes) != 2 or set(modes) - {"min", "max"}:
            raise ValueError(f"MO-ASHA ranks two objectives: got metrics {list(metrics)}, modes {list(modes)} "
                             "(each mode 'min' or 'max')")
        super().__init__()
        self._time_attr, self._metrics, self._max_t = time_attr, tuple(metrics), max_t
        self._signs = tuple(1.0 if m == "max" else -1.0 for m in modes)
        self._brackets = [_MOBracket(grace_period, max_t, reduction_factor, s) for s in range(brackets)]
        self._trial_bracket: dict[str, int] = {}  # trial_id -> index into _brackets
        self._num_stopped = 0

    def set_search_properties(self, metric, mode, **spec) -> bool:
        # Our metrics are fixed at construction; a TuneConfig metric would be a second, conflicting one.
        return metric is None and mode is None

    def on_trial_add(self, tune_controller, trial) -> None:
        if trial.trial_id in self._trial_bracket:  # re-added after a restore: same bracket
            return
        sizes = np.array([len(b.rungs) for b in self._brackets])  # Ray's softmax over rung counts
        probs = np.exp(sizes - sizes.max())
        self._trial_bracket[trial.trial_id] = int(np.random.choice(len(sizes), p=probs / probs.sum()))

    def _point(self, result: dict) -> tuple[float, ...] | None:
        if self._time_attr not in result:
            return None
        missing = [m for m in self._metrics if m not in result]
        if missing:
            raise ValueError(f"MO-ASHA: the trial result has no {missing} (its keys: {sorted(result)}); "
                             f"the trainable must report {list(self._metrics)} with {self._time_attr!r}")
        return tuple(s * float(result[m]) for s, m in zip(self._signs, self._metrics))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        point = self._point(result)
        if point is None:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            action = TrialScheduler.STOP
        else:
            bracket = self._brackets[self._trial_bracket[trial.trial_id]]
            action = bracket.on_result(trial.trial_id, result[self._time_attr], point)
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        point = self._point(result or {})
        if point is not None:
            bracket = self._brackets[self._trial_bracket[trial.trial_id]]
            bracket.on_result(trial.trial_id, result[self._time_attr], point)
        self._trial_bracket.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._trial_bracket.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return (f"Using MO-ASHA on {list(self._metrics)}: num_stopped={self._num_stopped}\n"
                + "\n".join(b.debug_str() for b in self._brackets))

    # --- plain-data state (tune.schedulers saves it with the experiment) --------------------------
    def state_dict(self) -> dict:
        return {"rungs": [[[m, {t: list(p) for t, p in rec.items()}] for m, rec in b.rungs] for b in self._brackets],
                "trial_bracket": dict(self._trial_bracket), "num_stopped": self._num_stopped}

    def load_state_dict(self, state: dict) -> None:
        for bracket, rungs in zip(self._brackets, state["rungs"], strict=True):
            bracket.rungs = [(m, {t: tuple(p) for t, p in rec.items()}) for m, rec in rungs]
            bracket._points = [_RungPoints() for _ in bracket.rungs]
        self._trial_bracket = dict(state["trial_bracket"])
        self._num_stopped = state["num_stopped"]
