"""Pareto front and hypervolume of a search's results, through Optuna's own routines.

Both functions *maximise* every column: a trial's ``diversity`` and ``quality`` are both
"higher is better" (Optuna minimises: the points are negated before they are handed over).

Conventions (they matter for real search results, where a crashed or diverged trial reports NaN
and a repeated configuration reports identical numbers):

* ``points`` is an array-like of shape ``(n, m)``: ``n`` trials, ``m >= 1`` objectives
  (a DataFrame's ``df[["diversity", "quality"]]`` works); ``None`` becomes NaN.
* **Non-finite rows** (any NaN or +-inf) are invalid: never on the front, they dominate nothing
  and never count towards the hypervolume (``+inf`` is a reporting error, not "infinitely good").
* **Exact duplicates** do not dominate each other: all copies of a non-dominated point are on
  the front.

Optuna's ``_is_pareto_front`` sweeps sorted points (``O(n log n)`` for two objectives), and
``compute_hypervolume`` is exact in any dimension. Both are private helpers of Optuna 5 (the
ones its samplers and ``Study.best_trials`` use); pinned by ``tests/tune/test_pareto.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna._hypervolume import compute_hypervolume
from optuna.study._multi_objective import _is_pareto_front

__all__ = ["hypervolume_2d", "off_front", "pareto_front_mask"]


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


def pareto_front_mask(points: Any) -> np.ndarray:
    """Boolean mask, shape ``(n,)``, of the non-dominated finite rows of ``points`` (shape
    ``(n, m)``, every column maximised)."""
    pts = _as_points(points)
    valid = np.isfinite(pts).all(axis=1)
    mask = np.zeros(pts.shape[0], dtype=bool)
    if valid.any():
        mask[valid] = _front_of_losses(-pts[valid])
    return mask


def _front_of_losses(loss: np.ndarray) -> np.ndarray:
    """Optuna's front (minimisation) of ``loss`` (n, m), every copy of a front point included.
    Sorted and de-duplicated here with one `np.lexsort` (``np.unique(axis=0)``, which Optuna
    would use, takes seconds on 10^5 rows)."""
    order = np.lexsort(loss.T[::-1])  # by column 0, then 1, ...
    ordered = loss[order]
    first = np.r_[True, np.any(ordered[1:] != ordered[:-1], axis=1)]
    on_front = _is_pareto_front(ordered[first], assume_unique_lexsorted=True)[np.cumsum(first) - 1]
    out = np.empty(len(loss), dtype=bool)
    out[order] = on_front
    return out


def hypervolume_2d(points: Any, reference: Any) -> float:
    """Area dominated by ``points`` (shape ``(n, 2)``, maximised) and bounded below by
    ``reference`` (shape ``(2,)``, finite), in units of ``objective_0 * objective_1``.

    Points not strictly better than the reference in both objectives and NaN/inf rows add
    nothing; duplicates count once; 0.0 when nothing beats the reference."""
    pts = _as_points(points)
    ref = np.asarray(reference, dtype=np.float64)
    if pts.shape[1] != 2:
        raise ValueError(f"hypervolume_2d needs points of shape (n, 2), got {pts.shape}; select two "
                         "objective columns first.")
    if ref.shape != (2,) or not np.isfinite(ref).all():
        raise ValueError(f"reference must be two finite numbers (ref_x, ref_y), got {reference!r}.")
    pts = pts[np.isfinite(pts).all(axis=1)]
    pts = pts[(pts[:, 0] > ref[0]) & (pts[:, 1] > ref[1])]
    if pts.shape[0] == 0:
        return 0.0
    return float(compute_hypervolume(-pts, -ref))


def off_front(rows) -> np.ndarray:
    """(n,) bool: the rows of a table of trials (a DataFrame) that may not be on the front, those
    marked ``below_floor`` (under the fidelity floor) or ``transient`` (shown before
    ``objective.min_student_updates``), where those columns are present."""
    out = np.zeros(len(rows), dtype=bool)
    for column in ("below_floor", "transient"):
        if column in rows:
            out |= rows[column].to_numpy(dtype=bool)
    return out
