"""Trials that failed, made visible: errored (an exception, after Ray's retries) or diverged (the
trainer stopped them on a NaN or infinite loss, weight or score: their last row has ``diverged``
= 1 and ``diverged_reason``).

`failed_trials` lists them with their error for ``summary.json``, the printed table and W&B;
`without_failed` keeps them off the front; the search exits with status 1 when any failed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

_TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})")
ERROR_CHARS = 400  # the last line of a traceback is what says what happened


def _short_error(error) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text[:ERROR_CHARS]


def _trial_id(result) -> str:
    trial_id = (result.metrics or {}).get("trial_id")
    if trial_id:
        return str(trial_id)
    match = _TRIAL_ID.search(Path(str(result.path)).name) if getattr(result, "path", None) else None
    return match.group(1) if match else Path(str(getattr(result, "path", "?"))).name


def failed_trials(results, final: pd.DataFrame) -> list[dict]:
    """Every failed trial: {"trial_id", "status": "error" | "diverged", "error", "config"}.

    Args:
        results: Ray Tune's ResultGrid (or any iterable of Results).
        final: each trial's last report (`tune.outputs.results.final_results`).
    """
    failed: dict[str, dict] = {}
    for result in results:
        if result.error:
            trial_id = _trial_id(result)
            config = dict(result.config or {})  # the flat trial (`tune.run.searcher`)
            failed[trial_id] = {"trial_id": trial_id, "status": "error", "error": _short_error(result.error),
                                "config": config}
    if "diverged" in final:
        for row in final[final["diverged"].fillna(0).astype(float) > 0].to_dict("records"):
            trial_id = str(row["trial_id"])
            failed.setdefault(trial_id, {"trial_id": trial_id, "status": "diverged",
                                         "error": str(row.get("diverged_reason", "non-finite values")),
                                         "config": {}})
    return list(failed.values())


def without_failed(final: pd.DataFrame, failed: list[dict]) -> pd.DataFrame:
    """``final`` without the failed trials: they never sit on the front."""
    ids = {f["trial_id"] for f in failed}
    if final.empty or not ids:
        return final
    return final[~final["trial_id"].astype(str).isin(ids)].reset_index(drop=True)


def failures_table(failed: list[dict]) -> str:
    """The failed trials as plain text, one line each."""
    if not failed:
        return "(none)"
    width = max(len(f["trial_id"]) for f in failed)
    return "\n".join(f"{f['trial_id']:<{width}}  {f['status']:<8}  {f['error']}" for f in failed)
