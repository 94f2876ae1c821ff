"""The anchor store's statistics over a whole search (`tune.trial.anchor_store`): hits, misses,
teacher calls, spill reads and writes.

A store counts from 0 when it starts, and a search may see several (a resumed search, a store
recreated after its actor was removed), so each store's counts are recorded in the experiment's
``STATS_FILE`` (by `StatsRecorder` while the search runs, and by the driver at its end:
`cache_statistics`) and added up (`total_stats`).
"""

from __future__ import annotations

import json
import time
import warnings

import ray
from ray.tune import Callback

from ..run.storage_faults import first_line
from ..schedulers.persistent import read_state, write_state
from ..storage.uri import join_uri
from .anchor_store import find_store

STATS_FILE = "cache_stats.jsonl"  # under the experiment; not .json: Ray's restore would copy it back stale
GAUGES = ("entries", "bytes")  # what a store holds now (the latest store's); every other number is a count


def record_stats(uri: str, stats: dict) -> None:
    """Keep ``stats`` (one store's, `_Store.stats`) in the experiment's ``STATS_FILE`` at ``uri``
    (path or URI), beside what earlier stores of the same search counted. Atomic."""
    if "store_id" not in stats:
        return
    stores = (read_state(uri) or {}).get("stores", {})
    stores.pop(stats["store_id"], None)  # re-inserted last: the latest store is the current one
    stores[stats["store_id"]] = {**stats, "recorded_at": round(time.time(), 1)}
    write_state(uri, json.dumps({"stores": stores}))


def total_stats(uri: str, current: dict | None = None) -> dict:
    """Every store's counts of this search added up (a resumed search, a store recreated after its
    actor was removed: each counted from 0), the latest store's gauges, and ``stores``: each one's
    own statistics, oldest first (the last is the current store)."""
    stores = dict((read_state(uri) or {}).get("stores", {}))
    if current and "store_id" in current:
        stores.pop(current["store_id"], None)
        stores[current["store_id"]] = current
    parts = list(stores.values())
    total: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, (int, float)) and key not in (*GAUGES, "recorded_at"):
                total[key] = total.get(key, 0) + value
    if parts:
        total.update({k: parts[-1][k] for k in GAUGES if k in parts[-1]})
    return {**total, "stores": parts}


class StatsRecorder(Callback):
    """A Ray Tune callback (driver side) that records the store's statistics in the experiment
    every ``every_s`` seconds of results and when a trial ends, so a search killed and resumed
    still adds the killed part's counts (up to its last record) to the resumed part's."""

    def __init__(self, spill_uri: str, stats_uri: str, every_s: float = 5.0):
        self.spill_uri, self.stats_uri, self.every_s = spill_uri, stats_uri, every_s
        self._last = 0.0

    def _record(self, force: bool = False) -> None:
        if not force and time.time() - self._last < self.every_s:
            return
        self._last = time.time()
        try:
            record_stats(self.stats_uri, ray.get(find_store(self.spill_uri).stats.remote(), timeout=10))
        except Exception as err:  # noqa: BLE001 - statistics never stop a search
            warnings.warn(f"cache statistics not recorded in {self.stats_uri}: {type(err).__name__}: {err}",
                          stacklevel=2)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._record()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._record(force=True)


def store_stats(spill_uri: str) -> dict:
    """The anchor store's statistics; whatever happened to the store (killed, recreated) the
    driver still writes its outputs."""
    try:
        return ray.get(find_store(spill_uri).stats.remote(), timeout=60)
    except Exception as err:  # noqa: BLE001 - the cache is an optimisation; never lose the results to it
        return {"unavailable": f"{type(err).__name__}: {first_line(err)}"}


def cache_statistics(spill_uri: str, experiment: str) -> dict:
    """The anchor store's statistics over the whole search: its current counts recorded with the
    experiment and added to those of the stores before it (a resumed search, a recreated store)."""
    current = store_stats(spill_uri)
    uri = join_uri(experiment, STATS_FILE)
    try:
        record_stats(uri, current)
        return {**current, **total_stats(uri, current)}
    except Exception as err:  # noqa: BLE001 - the storage failing here must not lose the results
        warnings.warn(f"cache statistics of earlier parts not read from {uri}: {type(err).__name__}: {err}",
                      stacklevel=2)
        return current
