"""Pareto-front helpers for multi-objective search results (pure numpy, no I/O).

Every function *maximises* every column: a trial's ``diversity`` and ``quality`` are both
"higher is better". To minimise a column, negate it before calling.

Conventions shared by all functions (they matter for real search results, where a crashed or
diverged trial reports NaN and a repeated configuration reports identical numbers):

* ``points`` is an array-like of shape ``(n, m)``: ``n`` trials, ``m >= 1`` objectives.
  Anything ``np.asarray(..., dtype=float)`` accepts works (lists, a DataFrame's
  ``df[["diversity", "quality"]]``); ``None`` becomes NaN.
* **Non-finite rows** (any NaN or +-inf in the row) are *invalid*: they are never on the
  front, never dominate anything and never count towards the hypervolume. ``+inf`` is treated
  as a reporting error, not as "infinitely good".
* **Exact duplicates** do not dominate each other (domination needs a strict improvement in
  some objective), so all copies of a non-dominated point are on the front, and all copies
  share one rank.

The two-objective case is the common one and takes an ``O(n log n)`` sort-and-sweep path (as
Optuna's ``_is_pareto_front_2d``); ``m != 2`` uses a generic ``O(n * f * m)`` filter, ``f`` the
front size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "dominates",
    "hypervolume_2d",
    "non_domination_rank",
    "pareto_front_mask",
]


def _as_points(points: Any) -> np.ndarray:
    """Return ``points`` as a float64 array of shape ``(n, m)``; teach on bad shapes."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:  # ``[]``: no trials yet
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(
            f"points must have shape (n_trials, n_objectives), got shape {arr.shape}; "
            "for one trial pass [[diversity, quality]], for a DataFrame pass "
            'df[["diversity", "quality"]].to_numpy().'
        )
    return arr


def dominates(a: Any, b: Any) -> bool:
    """Whether point ``a`` Pareto-dominates point ``b`` under maximisation.

    Args:
        a, b: objective vectors of shape ``(m,)`` (same ``m``).

    Returns:
        True iff ``a >= b`` in every objective and ``a > b`` in at least one. False whenever
        either vector has a NaN or inf (invalid points take no part in domination), and
        False for equal vectors (duplicates do not dominate each other).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"dominates(a, b) needs two 1-D vectors of equal length, got shapes {a.shape} "
            f"and {b.shape}; to compare many points use pareto_front_mask(points)."
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    return bool(np.all(a >= b) and np.any(a > b))


def _front_mask_2d(pts: np.ndarray) -> np.ndarray:
    """Non-dominated mask of finite points, shape ``(n, 2)`` -> ``(n,)``, O(n log n).

    Sort by first objective descending, ties by second descending. Every point that could
    dominate ``p`` then comes before it, so ``p`` is on the front iff its second objective
    beats the running maximum of all *earlier distinct* points. Copies of ``p`` sit right
    after it in the order and inherit the status of the first copy.
    """
    n = pts.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((-pts[:, 1], -pts[:, 0]))  # last key is primary
    s = pts[order]
    # Running max of the second objective over points strictly before index i.
    prev_best = np.empty(n)
    prev_best[0] = -np.inf
    prev_best[1:] = np.maximum.accumulate(s[:-1, 1])
    first_copy_on_front = s[:, 1] > prev_best
    # Group runs of exact duplicates; each copy takes the first copy's verdict.
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = np.any(s[1:] != s[:-1], axis=1)
    group_start = np.flatnonzero(new_group)
    group_id = np.cumsum(new_group) - 1
    on_front_sorted = first_copy_on_front[group_start][group_id]
    mask = np.empty(n, dtype=bool)
    mask[order] = on_front_sorted
    return mask


def _front_mask_nd(pts: np.ndarray) -> np.ndarray:
    """Non-dominated mask of finite points, shape ``(n, m)`` -> ``(n,)``, any ``m``.

    Visit points in descending lexicographic order: a dominator is lexicographically larger,
    so it is visited first, and the end of any domination chain is a front point already
    kept. Hence comparing each point against the kept front alone is exact.
    """
    n = pts.shape[0]
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = np.lexsort(-pts.T[::-1])  # column 0 primary, all descending
    front: list[int] = []
    for i in order:
        p = pts[i]
        if front:
            f = pts[front]
            if np.any(np.all(f >= p, axis=1) & np.any(f > p, axis=1)):
                continue
        front.append(i)
    mask[front] = True
    return mask


def pareto_front_mask(points: Any) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (maximise every column).

    Args:
        points: shape ``(n, m)``; see the module docstring for the NaN/inf rule (never on
            the front, never dominate) and the duplicate rule (all copies stay on the front).

    Returns:
        ``bool`` array of shape ``(n,)``, True for rows on the Pareto front. Uses the
        ``O(n log n)`` sweep when ``m == 2``.
    """
    pts = _as_points(points)
    valid = np.isfinite(pts).all(axis=1)
    mask = np.zeros(pts.shape[0], dtype=bool)
    sub = pts[valid]
    if pts.shape[1] == 2:
        mask[valid] = _front_mask_2d(sub)
    elif pts.shape[1] == 1:
        mask[valid] = sub[:, 0] == sub[:, 0].max() if sub.size else False
    else:
        mask[valid] = _front_mask_nd(sub)
    return mask


def non_domination_rank(points: Any) -> np.ndarray:
    """Non-domination rank of each row (maximise every column).

    Rank 0 is the Pareto front; rank ``k`` is the front of what remains after removing ranks
    ``0..k-1`` (NSGA-II layering). Duplicates share a rank.

    Args:
        points: shape ``(n, m)``.

    Returns:
        ``int64`` array of shape ``(n,)``. Rows with any NaN/inf get **-1** ("unranked"), so
        ``rank == 0`` selects the front and ``rank >= 0`` the valid trials.
        Cost: ``O(L * n log n)`` for two objectives, ``L`` the number of layers.
    """
    pts = _as_points(points)
    ranks = np.full(pts.shape[0], -1, dtype=np.int64)
    remaining = np.flatnonzero(np.isfinite(pts).all(axis=1))
    rank = 0
    while remaining.size:
        on_front = pareto_front_mask(pts[remaining])
        ranks[remaining[on_front]] = rank
        remaining = remaining[~on_front]
        rank += 1
    return ranks


def hypervolume_2d(points: Any, reference: Any) -> float:
    """Area dominated by ``points`` and bounded below by ``reference`` (maximisation).

    The area of the union of boxes ``[ref_x, x_i] x [ref_y, y_i]`` over the points. A point
    that is not strictly better than the reference in *both* objectives contributes nothing;
    NaN/inf rows are ignored; duplicates count once.

    Args:
        points: shape ``(n, 2)``, e.g. ``(diversity, quality)`` per trial.
        reference: shape ``(2,)``, finite, a "worst acceptable" point such as a baseline.

    Returns:
        The area in units of ``objective_0 * objective_1`` (0.0 when nothing beats the
        reference).
    """
    pts = _as_points(points)
    ref = np.asarray(reference, dtype=np.float64)
    if pts.shape[1] != 2:
        raise ValueError(
            f"hypervolume_2d needs points of shape (n, 2), got {pts.shape}; select two "
            "objective columns first."
        )
    if ref.shape != (2,) or not np.isfinite(ref).all():
        raise ValueError(
            f"reference must be two finite numbers (ref_x, ref_y), got {reference!r}."
        )
    pts = pts[np.isfinite(pts).all(axis=1)]
    pts = pts[(pts[:, 0] > ref[0]) & (pts[:, 1] > ref[1])]
    if pts.shape[0] == 0:
        return 0.0
    front = pts[_front_mask_2d(pts)]
    # Sweep x descending: on the front y then ascends, and each point adds the strip
    # between the previous y and its own, as wide as (x - ref_x).
    front = front[np.lexsort((front[:, 1], -front[:, 0]))]
    y_prev = np.concatenate(([ref[1]], front[:-1, 1]))
    return float(np.sum((front[:, 0] - ref[0]) * (front[:, 1] - y_prev)))
