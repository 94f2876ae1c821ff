"""Does a trial's rank at a rung predict its final rank? (issue 9, section 5)

ASHA stops trials on their rank at a rung; that only helps if the rank at the rung agrees with
the rank at the end. `rung_kendall_tau` gives, for each rung (each ``student_updates`` value a
report was made at), Kendall's tau between the trials' values there and their final values
(each trial's last report), over the trials that reported at that rung.

On a recorded table (`tune.simulate.table`, every configuration of a grid run to the end with several
training seeds) `table_rung_tau` does the same per training seed, against the seed's own final
ranking and against the true one (the mean over seeds); `final_seed_agreement` gives how well two
seeds' final rankings agree (the ceiling: a final ranking is itself noisy), `null_band` the tau
that chance reaches, and `signal_from` the first rung whose ranking carries signal.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from ..trial.objective import legacy_objective


def with_legacy_objective(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` plus ``legacy_objective``: the old J = 0.5 D/D_T + 0.5 Q/Q_T from the raw columns,
    with Q the class probability (the old default quality)."""
    quality, teacher = ("class_prob", "teacher_class_prob") if "teacher_class_prob" in trials else ("quality", "teacher_quality")
    old = [legacy_objective(r["diversity"], r[quality], teacher_diversity=r["teacher_diversity"],
                            teacher_quality=r[teacher]) for _, r in trials.iterrows()]
    return trials.assign(legacy_objective=old)


def rung_kendall_tau(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Columns: rung (student updates), trials (how many reported there), tau (NaN below 3 trials)."""
    order = trials.sort_values(["trial_id", "student_updates"], kind="stable")
    final = order.groupby("trial_id")[metric].last()
    rows = []
    for rung, at_rung in order.groupby("student_updates"):
        values = at_rung.set_index("trial_id")[metric]
        tau = kendalltau(values, final[values.index]).statistic if len(values) >= 3 else float("nan")
        rows.append({"rung": int(rung), "trials": len(values), "tau": float(tau)})
    return pd.DataFrame(rows)


# --- on a recorded table: every configuration of a grid, several training seeds -------------------

def null_band(trials: int, z: float = 1.96) -> float:
    """|tau| a ranking of ``trials`` unrelated to the final one exceeds with probability ~5%
    (the normal approximation of Kendall's tau under independence, no ties)."""
    n = trials
    return z * math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n >= 3 else float("nan")


def table_rung_tau(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (backbone, seed, rung) of a scored table (`tune.simulate.table.with_scores`, plus
    `with_legacy_objective` for the old J): ``tau_own``, Kendall tau between the configurations'
    ``metric`` at the rung and at the seed's final budget (what ASHA relies on: within one search
    every trial trains with the same seed), and ``tau_true``, against the mean over seeds at the
    final budget (the configuration's true rank). Columns: backbone, seed, rung, trials, tau_own,
    tau_true."""
    frame = frame.assign(trial_id=[f"K{k}_lam{lam:g}" for k, lam in zip(frame["anchor_k"], frame["lambda_div"])])
    rows = []
    for backbone, runs in frame.groupby("backbone"):
        last = runs["student_updates"].max()
        true_final = runs[runs["student_updates"] == last].groupby("trial_id")[metric].mean()
        for seed, curves in runs.groupby("seed"):
            for rung in rung_kendall_tau(curves, metric).itertuples():
                at = curves[curves["student_updates"] == rung.rung].set_index("trial_id")[metric]
                rows.append({"backbone": backbone, "seed": int(seed), "rung": rung.rung, "trials": rung.trials,
                             "tau_own": rung.tau, "tau_true": kendalltau(at, true_final[at.index]).statistic})
    return pd.DataFrame(rows)


def final_seed_agreement(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Per backbone: mean Kendall tau between the final rankings of every pair of training seeds,
    the most a rung can agree with a final ranking that is itself this noisy."""
    out = {}
    for backbone, runs in frame.groupby("backbone"):
        last = runs[runs["student_updates"] == runs["student_updates"].max()]
        wide = last.pivot_table(index=["anchor_k", "lambda_div"], columns="seed", values=metric)
        pairs = list(itertools.combinations(wide.columns, 2))
        out[backbone] = float(np.mean([kendalltau(wide[a], wide[b]).statistic for a, b in pairs])) if pairs else float("nan")
    return pd.Series(out, name=metric)


def summarise_rung_tau(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per (backbone, rung): tau_own's mean, min and max over seeds, tau_true's mean, and the 5%
    null bands for that many trials: of one seed's tau (``null_band``) and of the mean over the
    ``seeds`` seeds (``null_band_mean``: the seeds' rankings are independent under the null, so
    the band shrinks by sqrt(seeds))."""
    grouped = per_seed.groupby(["backbone", "rung"])
    out = grouped["tau_own"].agg(["mean", "min", "max"]).add_prefix("own_")
    out["true_mean"] = grouped["tau_true"].mean()
    out["trials"] = grouped["trials"].min()
    out["seeds"] = grouped["seed"].nunique()
    out["null_band"] = [null_band(n) for n in out["trials"]]
    out["null_band_mean"] = out["null_band"] / np.sqrt(out["seeds"])
    return out.reset_index()


def signal_from(summary: pd.DataFrame) -> dict[str, int | None]:
    """Per backbone: the first rung from which the seed-mean tau_own is above its null band
    (``null_band_mean``) at every later rung but the last (the final ranking, tau 1); None if
    the last rung before the final is not."""
    out = {}
    for backbone, rows in summary.groupby("backbone"):
        rows = rows.sort_values("rung").iloc[:-1]
        above = (rows["own_mean"] > rows["null_band_mean"]).to_numpy()
        start = None
        for i in range(len(above) - 1, -1, -1):
            if not above[i]:
                break
            start = int(rows["rung"].iloc[i])
        out[backbone] = start
    return out
