"""A small fake table with the columns bench/tabular.py records, for the simulator's tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def fake_table(*, ks=(5, 20), lambdas=(0.0, 0.05, 0.5), seeds=(0, 1000), updates=range(2, 21, 2),
               backbone="digits-flow") -> pd.DataFrame:
    """Curves that converge at different speeds to different (diversity, quality) points, with
    seed noise; seconds grow with K (the anchor) and every report costs an evaluation."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        for lam in lambdas:
            for k in ([min(ks)] if lam == 0 else ks):
                final_d = 0.036 + 0.004 * lam * k / 20 + rng.normal(0, 0.0005)
                final_q = 0.50 - 0.06 * lam * k / 20 + rng.normal(0, 0.005)
                speed = 3 + 10 * lam + k / 5
                anchor_calls = 0 if lam == 0 else k
                for u in updates:
                    frac = 1 - np.exp(-u / speed)
                    rows.append({
                        "backbone": backbone, "anchor_k": k, "lambda_div": float(lam), "seed": seed,
                        "k_independent": lam == 0, "run": f"K{k}_lam{lam}_seed{seed}", "student_updates": u,
                        "diversity": 0.07 * (1 - frac) + final_d * frac, "quality": 0.2 * (1 - frac) + final_q * frac,
                        "class_prob": 0.9, "precision": 0.5,
                        "anchor_teacher_calls": anchor_calls * u, "anchor_misses": u if anchor_calls else 0,
                        "seconds_anchor": 0.01 * anchor_calls * u,
                        "wall_seconds": 1.0 + 0.3 * u + 0.01 * anchor_calls * u + 0.2 * (u / 2),
                        "teacher_diversity": 0.042, "teacher_quality": 0.55})
    return pd.DataFrame(rows)
