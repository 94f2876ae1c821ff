"""Pairwise diversity: the reference protocol's diversity score (method.md, "Evaluation").

For each prompt, the ``N`` images generated with seeds ``0..N-1`` are embedded by a frozen image
encoder; the embeddings are L2-normalised, the cosine similarity is averaged over the
``N(N-1)/2`` distinct pairs, and diversity is ``1 - mean`` averaged over prompts. Identical
images give 0; mutually orthogonal embeddings give 1 (with non-negative features, e.g. after a
ReLU, 1 is also the ceiling).
"""

from __future__ import annotations

import torch


def pairwise_diversity(features: torch.Tensor) -> float:
    """Mean over prompts of ``1 - mean cosine similarity over the distinct pairs of samples``.

    Args:
        features: (P, N, D) embeddings, N samples (seeds) for each of P prompts.

    Returns:
        The diversity, a float; 0 when all samples of every prompt embed in the same direction.
        A zero embedding has cosine 0 with everything (it is normalised with a small floor).
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 3:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(
            f"pairwise_diversity takes features of shape (P prompts, N samples, D), got {shape}; "
            "for a single prompt pass features[None]"
        )
    _, n, _ = features.shape
    if n < 2:
        raise ValueError(
            f"pairwise_diversity needs at least 2 samples per prompt to form a pair, got N={n}; "
            "generate several seeds per prompt (the reference uses N=16)"
        )
    # float64 so the mean over many pairs is not the limit on precision.
    unit = torch.nn.functional.normalize(features.detach().double(), dim=-1, eps=1e-12)
    cosine = unit @ unit.transpose(1, 2)  # (P, N, N)
    rows, cols = torch.triu_indices(n, n, offset=1)
    mean_pair_similarity = cosine[:, rows, cols].mean(dim=1)  # (P,)
    return float((1.0 - mean_pair_similarity).mean())
