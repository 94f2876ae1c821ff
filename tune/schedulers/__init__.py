"""The search's trial scheduler, built from the space's ``scheduler:`` section (`make_scheduler`):
``fifo`` (no early stopping), ``asha`` (Ray's ASHA on the scalar objective) or ``moasha``
(`tune.schedulers.moasha`, on the two scores), the ASHAs with rungs that survive ``--resume``
(`tune.schedulers.persistent`). Time is counted in student updates.

    make_scheduler(spec, max_t=..., state_uri=...)   fifo | asha (one metric) | moasha (two)
"""

from __future__ import annotations

from ray.tune.schedulers import TrialScheduler

from .live_choice import LiveFIFOScheduler
from .moasha import MOASHA_METRICS
from .persistent import PersistentASHA, PersistentMOASHA

# Not ``.json``: on restore Ray copies every top-level *.json / *.pkl of the experiment into its
# driver staging directory and uploads that copy back at each experiment checkpoint, which would
# overwrite the rungs saved after the resume with the ones of the interruption (seen in testing).
STATE_FILE = "scheduler_state.jsonl"
ASHA_METRIC = "objective"  # the scalar (combined) objective Ray's ASHA ranks on
TIME_ATTR = "student_updates"


def make_scheduler(spec, *, max_t: int, state_uri: str | None = None) -> TrialScheduler:
    """The scheduler of a `tune.space.schema.SchedulerSpec`: ``fifo`` (no early stopping), ``asha``
    (Ray's ASHA on the scalar ``objective``) or ``moasha`` (MO-ASHA on ``diversity_score`` and
    ``quality_score``). Time is student updates; ``max_t`` the resolved budget per trial;
    ``state_uri`` where the rungs are kept (None: not kept)."""
    rungs = dict(time_attr=TIME_ATTR, max_t=max_t, grace_period=min(spec.grace_period, max_t),
                 reduction_factor=spec.reduction_factor, brackets=spec.brackets)
    if spec.type == "asha":
        return PersistentASHA(state_uri=state_uri, metric=ASHA_METRIC, mode="max", **rungs)
    if spec.type == "moasha":
        return PersistentMOASHA(state_uri=state_uri, metrics=MOASHA_METRICS, modes=("max", "max"), **rungs)
    if spec.type == "fifo":
        return LiveFIFOScheduler()
    raise ValueError(f"scheduler.type {spec.type!r} is unknown; allowed: fifo, asha, moasha")

