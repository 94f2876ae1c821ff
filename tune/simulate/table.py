"""A tabulated benchmark: recorded DP-DMD learning curves (``bench/tabular.py``), looked up by
configuration, scored in the search's objective space, and its ground truth.

The table holds one row per evaluation of one recorded run: the configuration (``backbone``,
``anchor_k``, ``lambda_div``, ``seed``, ``k_independent`` for vanilla DMD, whose curve does not
depend on K), ``student_updates``, every raw metric the evaluator reported, the trainer's
``seconds_*`` per phase, the anchor's ``anchor_teacher_calls``, ``wall_seconds`` since the run
started (evaluation included) and the teacher's reference metrics (``teacher_*``).

Scores are recomputed here from the raw metrics with `tune.trial.objective`, exactly as the trainable
reports them (``diversity_score``, ``quality_score``, ``objective``), so a table recorded once
serves any objective weight or quality floor.

**Nearest recorded configuration.** A searcher may suggest a point that was not recorded (a
continuous lambda_div, an integer K between grid values). `RecordedTable.snap` maps it to the
recorded configuration nearest on each axis independently: ``backbone`` must match exactly;
``lambda_div`` by distance on a log scale, log(lambda + c) with c half the smallest positive
recorded lambda (so 0 is one step below the smallest positive value, and 0.03 is nearer 0.02 than
0.05); ``anchor_k`` by absolute distance, ties to the smaller K; a lambda that snaps to 0 ignores
K. No other parameter may be searched: the table has no axis for it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..trial.objective import objective_metrics
from ..pareto import hypervolume_2d, pareto_front_mask

AXES = ("backbone", "anchor_k", "lambda_div")
REQUIRED = (*AXES, "seed", "k_independent", "student_updates", "diversity", "quality", "wall_seconds",
            "teacher_diversity", "teacher_quality")
ANCHOR_COLUMNS = ("seconds_anchor", "anchor_teacher_calls", "anchor_misses", "anchor_hits")
SCORES = ("diversity_score", "quality_score")
# The area dominated by the front in the (diversity_score, quality_score) plane above (0, 0): the
# same reference point as a search's summary (`tune.outputs.front.HYPERVOLUME_REFERENCE`).
REFERENCE = (0.0, 0.0)


class TableError(ValueError):
    """A table that cannot be used; the message names the file and what is wrong."""


class RecordedTable:
    """Learning curves by (backbone, K, lambda_div, seed). ``frame``: the table's rows."""

    def __init__(self, frame: pd.DataFrame, *, source: str = "<table>"):
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            raise TableError(f"{source}: missing column(s) {', '.join(missing)}; record the table with "
                             f"bench/tabular.py (it writes {', '.join(REQUIRED)})")
        self.source = source
        # vanilla DMD never runs the anchor: its anchor columns are missing (NaN in a table) -> 0.
        frame = frame.assign(**{c: frame[c].fillna(0) for c in ANCHOR_COLUMNS if c in frame.columns})
        self.frame = frame.sort_values([*AXES, "seed", "student_updates"], kind="stable").reset_index(drop=True)
        self.seeds = sorted(int(s) for s in self.frame["seed"].unique())
        self._curves = {key: group for key, group in self.frame.groupby(["backbone", "anchor_k", "lambda_div", "seed"])}
        self.values = {axis: sorted(self.frame[axis].unique().tolist()) for axis in AXES}
        self.ks = sorted(int(k) for k in self.frame.loc[~self.frame["k_independent"], "anchor_k"].unique())

    @classmethod
    def load(cls, path: str | Path) -> "RecordedTable":
        path = Path(path)
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as err:
            raise TableError(f"{path}: cannot read the table as Parquet ({err}); record one with "
                             "bench/tabular.py") from None
        return cls(frame, source=str(path))

    # --- lookup ------------------------------------------------------------------------------------

    def snap(self, point: dict) -> dict:
        """The recorded configuration nearest ``point`` (module docstring); raises TableError."""
        extra = sorted(set(point) - set(AXES))
        if extra:
            raise TableError(f"{self.source}: the table records only {', '.join(AXES)}; the space also "
                             f"searches {', '.join(extra)} (fix it with {{value: ...}} or record it)")
        backbones = self.values["backbone"]
        backbone = point.get("backbone", backbones[0] if len(backbones) == 1 else None)
        if backbone not in backbones:
            raise TableError(f"{self.source}: backbone {backbone!r} is not recorded; recorded: {backbones}")
        lambdas = sorted(self.frame.loc[self.frame["backbone"] == backbone, "lambda_div"].unique())
        lam = _nearest_log(float(point.get("lambda_div", lambdas[0])), lambdas)
        if lam == 0:
            k = int(self.frame.loc[(self.frame["backbone"] == backbone) & (self.frame["lambda_div"] == 0),
                                   "anchor_k"].iloc[0])
        else:
            ks = sorted(self.frame.loc[(self.frame["backbone"] == backbone) & (self.frame["lambda_div"] == lam),
                                       "anchor_k"].unique())
            want = int(point.get("anchor_k", ks[0]))
            k = int(min(ks, key=lambda v: (abs(v - want), v)))
        return {"backbone": backbone, "anchor_k": k, "lambda_div": float(lam)}

    def curve(self, config: dict, seed: int) -> pd.DataFrame:
        """The recorded reports of a snapped ``config`` at training ``seed``, by student updates."""
        key = (config["backbone"], config["anchor_k"], config["lambda_div"], seed)
        if key not in self._curves:
            raise TableError(f"{self.source}: no run recorded for {config} at seed {seed}; recorded seeds: {self.seeds}")
        return self._curves[key]

    def configs(self) -> list[dict]:
        """Every recorded configuration (vanilla DMD once per backbone)."""
        keys = self.frame[list(AXES)].drop_duplicates()
        return [{"backbone": b, "anchor_k": int(k), "lambda_div": float(lam)} for b, k, lam in keys.itertuples(index=False)]

    # --- costs -------------------------------------------------------------------------------------

    def seconds_per_teacher_call(self, backbone: str) -> float:
        """Measured seconds of one guided teacher evaluation (anchor seconds / anchor calls)."""
        last = self._last_rows()
        rows = last[(last["backbone"] == backbone) & (last.get("anchor_teacher_calls", 0) > 0)]
        if rows.empty:
            return 0.0
        return float(rows["seconds_anchor"].sum() / rows["anchor_teacher_calls"].sum())

    def calls_per_pass(self, backbone: str, ks) -> int:
        """Teacher calls of one shared anchor pass for every K in ``ks`` (it runs up to max K:
        the calls a lone run at the largest K recorded at or below max(ks) spends per update)."""
        last = self._last_rows()
        rows = last[(last["backbone"] == backbone) & ~last["k_independent"] & (last["anchor_k"] <= max(ks))]
        if rows.empty:
            return 0
        row = rows.loc[rows["anchor_k"].idxmax()]
        return int(round(row["anchor_teacher_calls"] / max(1, row["anchor_misses"])))

    def _last_rows(self) -> pd.DataFrame:
        return self.frame.groupby(["backbone", "anchor_k", "lambda_div", "seed"]).tail(1)


def _nearest_log(value: float, recorded: list[float]) -> float:
    positive = [v for v in recorded if v > 0]
    c = min(positive) / 2 if positive else 1.0
    return min(recorded, key=lambda v: (abs(math.log(v + c) - math.log(max(value, 0.0) + c)), v))


# --- scores --------------------------------------------------------------------------------------

def with_scores(frame: pd.DataFrame, *, diversity_weight: float) -> pd.DataFrame:
    """``frame`` plus ``diversity_score``, ``quality_score`` and ``objective`` of every row, by
    `tune.trial.objective.objective_metrics` (what the trainable reports)."""
    scored = [objective_metrics(d, q, teacher_diversity=td, teacher_quality=tq, diversity_weight=diversity_weight)
              for d, q, td, tq in frame[["diversity", "quality", "teacher_diversity", "teacher_quality"]].itertuples(index=False)]
    return frame.assign(**{k: [s[k] for s in scored] for k in (*SCORES, "objective")})


def front_mask(scores: pd.DataFrame, *, min_quality: float) -> np.ndarray:
    """The non-dominated rows over (diversity_score, quality_score) among those whose
    quality_score >= ``min_quality`` (the search's fidelity floor)."""
    points = scores[list(SCORES)].to_numpy(dtype=float)
    eligible = points[:, 1] >= min_quality
    mask = np.zeros(len(points), dtype=bool)
    mask[eligible] = pareto_front_mask(points[eligible])
    return mask


def hypervolume(scores: pd.DataFrame, *, min_quality: float) -> float:
    """Hypervolume of the front of ``scores`` (rows with the two score columns) above REFERENCE."""
    if scores.empty:
        return 0.0
    return hypervolume_2d(scores[list(SCORES)].to_numpy(dtype=float)[front_mask(scores, min_quality=min_quality)],
                          REFERENCE)


# --- ground truth --------------------------------------------------------------------------------

def true_points(table: RecordedTable, *, diversity_weight: float, max_updates: int | None = None,
                min_updates: int = 0) -> pd.DataFrame:
    """Each configuration's score at each recorded budget, as the mean over training seeds, with
    the seed-to-seed standard deviation (``*_std``) and the number of seeds (``seeds``).

    ``max_updates``, ``min_updates``: only budgets in that range (a search's front shows no
    checkpoint before ``objective.min_student_updates``)."""
    scored = with_scores(table.frame, diversity_weight=diversity_weight)
    scored = scored[scored["student_updates"] >= min_updates]
    if max_updates is not None:
        scored = scored[scored["student_updates"] <= max_updates]
    cols = [*SCORES, "objective", "diversity", "quality"]
    grouped = scored.groupby([*AXES, "student_updates"])[cols]
    out = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).join(grouped.size().rename("seeds"))
    return out.reset_index()


def ground_truth(table: RecordedTable, *, diversity_weight: float, min_quality: float,
                 max_updates: int | None = None, min_updates: int = 0) -> dict[str, dict]:
    """Per backbone: its true front over every (configuration, budget) point, each the mean over
    training seeds (with the seed spread of each point), the front's hypervolume and the best J.

    Every budget, not only the final one: a search keeps each trial's best checkpoint
    (`tune.outputs.kept.kept_reports`), so a configuration at any recorded budget is a student a
    search can deliver, and the best of them is the truth to measure a search against.

    Returns ``{backbone: {"front": DataFrame, "hypervolume": float, "best_objective": float,
    "points": DataFrame (every configuration at every budget), "final": DataFrame (every
    configuration's final mean point)}}``."""
    points = true_points(table, diversity_weight=diversity_weight, max_updates=max_updates, min_updates=min_updates)
    out = {}
    for backbone, group in points.groupby("backbone"):
        group = group.reset_index(drop=True)
        final = group[group["student_updates"] == group["student_updates"].max()].reset_index(drop=True)
        mask = front_mask(group, min_quality=min_quality)
        out[backbone] = {"points": group, "final": final,
                         "front": group[mask].sort_values("diversity_score").reset_index(drop=True),
                         "hypervolume": hypervolume(group, min_quality=min_quality),
                         "best_objective": float(group["objective"].max())}
    return out


def table_from_trials(trials: pd.DataFrame, *, seed: int) -> RecordedTable:
    """A table from a real search's ``trials.parquet`` (every report of every trial, recorded with
    the space's training ``seed``): the curves that search saw, to replay it (`tune.simulate`).
    Ray's ``time_total_s`` (seconds since the trial started) is the wall time of each report; a
    trial the search stopped early has a curve that ends where it stopped."""
    frame = trials.copy()
    frame["seed"] = seed
    frame["k_independent"] = frame["lambda_div"] == 0
    frame["wall_seconds"] = frame["time_total_s"]
    return RecordedTable(frame, source="trials.parquet")
