"""Pareto front, non-domination ranks and hypervolume of a search's results, through moocore.

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

The maths is moocore's public API (``is_nondominated``, ``pareto_rank``, ``hypervolume``: C
implementations, ``O(n log n)`` in two objectives, exact hypervolume in any dimension), a maintained
library of multi-objective indicators. Optuna 5 has the same routines only as private helpers,
which a new Optuna may change; ``tests/tune/test_pareto.py`` checks these against brute force.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import moocore

__all__ = ["domination_ranks", "hypervolume_2d", "off_front", "pareto_front_mask"]


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
    ``(n, m)``, every column maximised); every copy of a front point is on it."""
    pts = _as_points(points)
    valid = np.isfinite(pts).all(axis=1)
    mask = np.zeros(pts.shape[0], dtype=bool)
    if valid.any():
        mask[valid] = moocore.is_nondominated(pts[valid], maximise=True, keep_weakly=True)
    return mask


def domination_ranks(points: Any) -> np.ndarray:
    """Non-domination rank of each row of ``points`` (shape ``(n, m)``, all finite, every column
    maximised): 0 for the front, 1 for the front of the rest, ... (the sorting NSGA-II and
    MO-ASHA use)."""
    pts = _as_points(points)
    if not np.isfinite(pts).all():
        raise ValueError("domination_ranks needs finite points; drop the NaN/inf rows first "
                         "(pareto_front_mask ignores them)")
    return np.asarray(moocore.pareto_rank(pts, maximise=True), dtype=int) if len(pts) else np.zeros(0, dtype=int)


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
    return float(moocore.hypervolume(pts, ref=ref, maximise=True))


def off_front(rows) -> np.ndarray:
    """(n,) bool: the rows of a table of trials (a DataFrame) that may not be on the front, those
    marked ``below_floor`` (under the fidelity floor) or ``transient`` (shown before
    ``objective.min_student_updates``), or whose trial kept no student (``kept`` false:
    `tune.outputs.kept`), where those columns are present."""
    out = np.zeros(len(rows), dtype=bool)
    for column in ("below_floor", "transient"):
        if column in rows:
            out |= rows[column].to_numpy(dtype=bool)
    if "kept" in rows:
        out |= ~rows["kept"].to_numpy(dtype=bool)
    return out
