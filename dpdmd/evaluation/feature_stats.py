"""Distances between a set of real and a set of generated features.

- `frechet_distance`: the Frechet distance between Gaussians fitted to the two sets (FID when the
  features are Inception's; here any encoder's).
- `knn_precision_recall_coverage`: the k-nearest-neighbour manifold estimates of precision and
  recall (Kynkaanniemi et al. 2019, "Improved precision and recall metric for assessing generative
  models") and coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics for
  generative models").

Both accept torch tensors or numpy arrays and compute in float64.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

_SINGULAR_EPS = 1e-6  # added to both covariance diagonals when one is (near) singular


def _as_matrix(x, name: str, min_rows: int) -> np.ndarray:
    """Features as a float64 (n, D) numpy array, with a teaching error for a wrong shape."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be features of shape (n, D), got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {x.shape[0]}")
    return x


def frechet_distance(a, b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, with unbiased sample covariances.
    When a covariance is singular (fewer samples than dimensions, e.g. N=8 seeds in 64-d, or dead
    features) ``1e-6`` is added to both diagonals before the matrix square root; tiny imaginary
    parts that `scipy.linalg.sqrtm` leaves from rounding are dropped (a warning is raised if they
    are not tiny). Small sets make the estimate biased upwards: compare values only at equal set
    sizes.

    Args:
        a: (n, D) features, n >= 2.
        b: (m, D) features, m >= 2, same D.

    Returns:
        The distance (>= 0 up to rounding), in squared feature units.
    """
    a = _as_matrix(a, "frechet_distance's first set", 2)
    b = _as_matrix(b, "frechet_distance's second set", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs features of one dimension, got D={a.shape[1]} and D={b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    if min(np.linalg.eigvalsh(cov_a).min(), np.linalg.eigvalsh(cov_b).min()) < _SINGULAR_EPS:
        offset = _SINGULAR_EPS * np.eye(cov_a.shape[0])
        cov_a, cov_b = cov_a + offset, cov_b + offset
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(covmean):
        scale = max(np.abs(covmean).max(), 1e-12)
        if np.abs(covmean.imag).max() > 1e-3 * scale:
            warnings.warn(
                f"frechet_distance: sqrtm left an imaginary part of {np.abs(covmean.imag).max():.3g} "
                f"(matrix scale {scale:.3g}); the covariances may be badly conditioned, using the real part",
                RuntimeWarning,
                stacklevel=2,
            )
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of x (n, D) to its k-th nearest other row: (n,)."""
    dist = torch.cdist(x, x)
    # Column 0 of the sorted row is the point itself (distance 0), so the k-th neighbour is column k.
    return dist.sort(dim=1).values[:, k]


def knn_precision_recall_coverage(real, fake, k: int = 5) -> dict[str, float]:
    """k-NN precision, recall and coverage of ``fake`` against ``real`` features.

    Each set's manifold is the union of balls centred on its samples, each ball's radius the
    distance to that sample's k-th nearest neighbour in the same set (boundaries inclusive):

    - precision: fraction of fake samples inside the real manifold (fidelity);
    - recall: fraction of real samples inside the fake manifold (how much of the real data the
      fakes reach);
    - coverage: fraction of real samples whose own ball contains at least one fake sample; unlike
      recall it uses only the real radii, so it does not grow with outlying fakes.

    All three are 1 for a set compared with itself. Recall and coverage depend on the set sizes:
    with few fakes against many reals (e.g. 8 against 180) they are well below 1 even for
    real-vs-real; compare them only at equal sizes and k.

    Args:
        real: (n, D) real features, n > k.
        fake: (m, D) generated features, m > k.
        k: the neighbour defining each ball's radius (Kynkaanniemi et al. use 3, Naeem et al. 5).

    Returns:
        ``{"precision": float, "recall": float, "coverage": float}``, each in [0, 1].
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    real = torch.from_numpy(_as_matrix(real, "the real set", k + 1))
    fake = torch.from_numpy(_as_matrix(fake, "the fake set (needs more than k samples)", k + 1))
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: D={real.shape[1]} vs D={fake.shape[1]}")
    real_radius = _kth_neighbour_radius(real, k)  # (n,)
    fake_radius = _kth_neighbour_radius(fake, k)  # (m,)
    dist = torch.cdist(real, fake)  # (n, m)
    precision = (dist <= real_radius[:, None]).any(dim=0).double().mean()
    recall = (dist <= fake_radius[None, :]).any(dim=1).double().mean()
    coverage = (dist.min(dim=1).values <= real_radius).double().mean()
    return {"precision": float(precision), "recall": float(recall), "coverage": float(coverage)}


def seed_excluded_precision(reference, samples, k: int = 3) -> float:
    """k-NN precision of ``samples`` against ``reference`` when both come from the same seeds:
    sample n is judged against the reference *without* its row n (radii recomputed without it).

    With ``samples`` = ``reference`` this is the leave-one-out precision of a set against itself
    (a sample is not its own neighbour); with a student's samples on the teacher's seeds, the
    student's sample of seed n is not credited for sitting near the teacher's sample of the same
    seed, so a student identical to its teacher scores exactly the teacher's own precision, and a
    lightly corrupted copy of a teacher sample is not "on the manifold" only through its original.

    Args:
        reference: (N, D) features, one row per seed; N >= k + 2 (k neighbours must remain).
        samples: (N, D) features of the same seeds, same D.
        k: the neighbour defining each ball's radius.

    Returns:
        The fraction of samples inside the union of the other seeds' reference balls, in [0, 1].
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    reference = torch.from_numpy(_as_matrix(reference, "the reference set", k + 2))
    samples = torch.from_numpy(_as_matrix(samples, "the sample set", 1))
    if samples.shape != reference.shape:
        raise ValueError(f"samples must pair row by row (seed by seed) with the reference: got shapes "
                         f"{tuple(samples.shape)} and {tuple(reference.shape)}")
    n = reference.shape[0]
    inside = []
    for i in range(n):
        others = reference[torch.arange(n) != i]  # (N - 1, D)
        radius = _kth_neighbour_radius(others, k)  # (N - 1,)
        dist = torch.cdist(samples[i:i + 1], others)[0]  # (N - 1,)
        inside.append(bool((dist <= radius).any()))
    return sum(inside) / n
