"""tune.pareto: front and hypervolume against hand-made sets and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from tune.pareto import hypervolume_2d, pareto_front_mask


def brute_force_front(points: np.ndarray) -> np.ndarray:
    """O(n^2) reference: a finite row is on the front iff no finite row dominates it."""
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    finite = np.isfinite(pts).all(axis=1)
    mask = np.zeros(n, dtype=bool)
    for i in range(n):
        if not finite[i]:
            continue
        mask[i] = not any(
            finite[j] and np.all(pts[j] >= pts[i]) and np.any(pts[j] > pts[i])
            for j in range(n)
        )
    return mask


def random_points(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """A noisy trade-off on a coarse grid (a wide front, many ties and duplicates) plus
    NaN/inf rows."""
    pts = rng.integers(0, 10, size=(n, m)).astype(float)
    pts[:, -1] = 10 * (m - 1) - pts[:, :-1].sum(axis=1) + rng.integers(-3, 1, size=n)
    pts /= 10
    pts[rng.choice(n, 10, replace=False), rng.integers(0, m, 10)] = np.nan
    pts[rng.choice(n, 3, replace=False), 0] = np.inf
    pts[rng.choice(n, 3, replace=False), m - 1] = -np.inf
    dup_src = rng.choice(n, 20, replace=False)
    pts[rng.choice(n, 20, replace=False)] = pts[dup_src]
    return pts


def test_front_of_hand_made_set():
    #            (diversity, quality)
    pts = np.array([
        [0.02, 0.95],  # 0 front: best quality
        [0.05, 0.90],  # 1 front
        [0.04, 0.88],  # 2 dominated by 1
        [0.07, 0.85],  # 3 front: best diversity
        [0.07, 0.80],  # 4 dominated by 3 (same x, lower y)
        [0.05, 0.90],  # 5 duplicate of 1: stays on the front
        [np.nan, 0.99],  # 6 NaN: never on the front ...
        [0.01, 0.94],  # 7 dominated by 0
        [np.inf, 0.99],  # 8 inf: invalid too
    ])
    expected = [True, True, False, True, False, True, False, False, False]
    assert pareto_front_mask(pts).tolist() == expected
    # ... and a NaN/inf row dominates nothing: dropping it changes no verdict.
    assert pareto_front_mask(pts[:6]).tolist() == expected[:6]


def test_edge_shapes():
    assert pareto_front_mask(np.empty((0, 2))).shape == (0,)
    assert pareto_front_mask([]).shape == (0,)
    assert pareto_front_mask([[1.0, 2.0]]).tolist() == [True]
    assert pareto_front_mask([[np.nan, np.nan]]).tolist() == [False]
    assert pareto_front_mask([[1.0], [3.0], [3.0], [np.nan]]).tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="n_trials, n_objectives"):
        pareto_front_mask([1.0, 2.0])


@pytest.mark.parametrize("seed", range(5))
def test_2d_fast_path_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    pts = random_points(rng, 200, 2)
    got = pareto_front_mask(pts)
    want = brute_force_front(pts)
    np.testing.assert_array_equal(got, want)
    # The set really exercises the rules: a wide front that holds duplicated rows.
    front_rows = [tuple(r) for r in pts[want]]
    assert len(front_rows) >= 5 and len(set(front_rows)) < len(front_rows)


@pytest.mark.parametrize("m", [3, 4])
def test_generic_path_equals_brute_force(m):
    rng = np.random.default_rng(100 + m)
    pts = random_points(rng, 200, m)
    np.testing.assert_array_equal(pareto_front_mask(pts), brute_force_front(pts))


def test_2d_fast_path_is_fast():
    pts = np.random.default_rng(0).random((200_000, 2))
    import time

    start = time.perf_counter()
    mask = pareto_front_mask(pts)
    assert time.perf_counter() - start < 2.0  # an O(n^2) path would take minutes
    assert 0 < mask.sum() < 200


def test_hypervolume_of_staircase():
    # Reference (0, 0); front (1, 3), (2, 2), (3, 1) + a dominated point, a duplicate, NaN,
    # and two points not strictly better than the reference.
    pts = [[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [np.nan, 5], [5, 0], [-1, 9]]
    # Strips, x descending: 3*1 (y 0->1) + 2*1 (y 1->2) + 1*1 (y 2->3) = 6
    assert hypervolume_2d(pts, (0, 0)) == pytest.approx(6.0)
    # Shifted reference (1, 0.5): (3-1)*0.5 + (2-1)*1 + (1-1)*1 = 2
    assert hypervolume_2d(pts, (1, 0.5)) == pytest.approx(2.0)
    assert hypervolume_2d([[0.5, 0.5]], (1, 1)) == 0.0
    assert hypervolume_2d(np.empty((0, 2)), (0, 0)) == 0.0


def test_hypervolume_matches_grid_estimate():
    pts = np.random.default_rng(3).random((30, 2))
    g = (np.arange(400) + 0.5) / 400
    gx, gy = np.meshgrid(g, g)
    covered = np.zeros_like(gx, dtype=bool)
    for px, py in pts:
        covered |= (gx <= px) & (gy <= py)
    assert hypervolume_2d(pts, (0, 0)) == pytest.approx(covered.mean(), abs=1e-2)


def test_hypervolume_rejects_bad_reference_and_shape():
    with pytest.raises(ValueError, match="reference"):
        hypervolume_2d([[1, 1]], (0, np.nan))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        hypervolume_2d([[1, 1, 1]], (0, 0))
