"""What Ray's driver keeps per trial, made lighter (`LightTrialMetadata`, a Tune callback of the search)."""

from __future__ import annotations

from ray.tune import Callback


class LightTrialMetadata(Callback):
    """Ray's driver keeps, for every trial and every numeric metric of its reports, the maximum,
    minimum, mean and last value and deques of the last 5 and 10 values (``Trial.run_metadata``:
    for `ExperimentAnalysis`'s "last-5-avg" scopes, which nothing here reads), and writes them into
    every experiment snapshot: with ~55 metrics a report, ~120 KiB per trial of the driver's memory
    (bench/load.py; part of ray#64231), 1.2 GiB at 10,000 trials. Each trial keeps no deques
    (``n_steps`` emptied when it starts); the four summary values stay."""

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        trial.run_metadata._n_steps = ()  # Ray 2.60: the windows `_TrainingRunMetadata.update_metric` keeps
