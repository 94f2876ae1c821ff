"""What a trial is called on plots, in tables and in W&B: its configuration, not Ray's trial hash.

"K=10 λ=0.05" (the knobs `dpdmd.config.labelled_knobs` names), with the backbone in front where
the context does not give it ("digits-flow K=10 λ=0.05"). Two trials of one configuration (a grid
repeated, another seed) get their trial id after the label, so every curve and
point keeps a name of its own (the whole id: Ray's ids share their first characters within an
experiment, "3b3c4_00001").
"""

from __future__ import annotations

import math

import pandas as pd

from dpdmd.config import labelled_knobs

__all__ = ["config_label", "trial_labels"]


def _value(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_label(row, *, backbone: bool = False) -> str:
    """The label of one trial's row (a mapping or a pandas row): its labelled knobs, the backbone
    first when asked; knobs the row lacks are left out."""
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    parts = [str(get("backbone"))] if backbone and _value(get("backbone")) else []
    for name, label in labelled_knobs():
        text = _value(get(name))
        if text is not None:
            parts.append(f"{label}={text}")
    return " ".join(parts) or str(get("trial_id", "?"))


def trial_labels(frame: pd.DataFrame, *, backbone: bool = False) -> dict[str, str]:
    """``{trial_id: label}`` for the trials of ``frame`` (any number of rows per trial; the first
    is read), unique: a configuration shared by several trials gets ``(trial_id)`` after it."""
    first = frame.drop_duplicates("trial_id")
    labels = {str(r["trial_id"]): config_label(r, backbone=backbone) for _, r in first.iterrows()}
    counts = pd.Series(list(labels.values())).value_counts()
    return {t: (f"{label} ({t})" if counts[label] > 1 else label) for t, label in labels.items()}
