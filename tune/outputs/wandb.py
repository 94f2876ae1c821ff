"""One W&B run from the search driver that summarises a finished search.

It runs in the experiment's group (beside Ray's per-trial runs, ``group=<experiment>``) and holds
the space and each trial's resolved configuration in its config, every report in a table with
J plotted against ``student_updates``, the fronts (and all trials) as tables, a
diversity/quality scatter, the front's students as ``model`` artifacts, ``pareto.png`` and
``curves.png``, and the headline numbers in ``run.summary`` (`tune.outputs.wandb_content`). Logging once from the driver
is cheap (~2 s); Ray's per-trial ``WandbLoggerCallback`` tripled a small search's wall time
(see ``docs/stack-notes.md``).

Two rules:

* **Offline when no API key is configured.** With no ``WANDB_API_KEY`` /
  ``WANDB_IDENTITY_TOKEN_FILE`` in the environment and no netrc entry for the W&B host, the
  run is written offline (``WANDB_MODE=offline`` is set for the duration of the call, because
  the ``mode=`` argument alone is not always honoured) and ``wandb sync <run dir>`` uploads it
  later.
* **W&B never fails the search.** Import errors, init errors and logging errors are caught,
  reported with ``warnings.warn`` and turned into a ``None`` return value.

`WandbLoggerWithoutKeyInRuntimeEnv` is Ray's per-trial W&B logger (``wandb.per_trial``) without
the W&B API key in a Ray runtime environment: Ray's `WandbLoggerCallback` starts its logging actors
with ``runtime_env={"env_vars": {"WANDB_API_KEY": <key>}}``, and Ray's runtime-env agent writes
runtime environments in plain text to ``runtime_env_agent.log`` (world-readable under the session
directory). The subclass hides the key from that one call, so the actors start with no
runtime-env variables: on a local cluster they inherit the key from the processes Ray started
from the driver; on a remote cluster they run on the driver's node (Ray places them there) and
read the key from ``wandb login``'s ``~/.netrc`` (cluster/README.md).
"""

from __future__ import annotations

import logging
import netrc
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from ray.air.integrations.wandb import WANDB_ENV_VAR, WandbLoggerCallback

from .wandb_content import report_payload, student_artifacts

__all__ = ["WandbLoggerWithoutKeyInRuntimeEnv", "log_summary_run"]

logger = logging.getLogger(__name__)

_DEFAULT_BASE_URL = "https://api.wandb.ai"
_MODES = ("online", "offline", "disabled")


def _netrc_path() -> Path | None:
    """The netrc file W&B would read: ``$NETRC``, else ``~/.netrc``, else ``~/_netrc``."""
    if env_path := os.environ.get("NETRC"):
        return Path(env_path).expanduser()
    for name in ("~/.netrc", "~/_netrc"):
        candidate = Path(name).expanduser()
        if candidate.exists():
            return candidate
    return None


def _has_api_key() -> bool:
    """Whether W&B would find credentials (env vars or a netrc entry for its host)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = _netrc_path()
    if path is None or not path.exists():
        return False
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or _DEFAULT_BASE_URL).netloc
    try:
        creds = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return False
    return bool(creds and creds[2])


def _resolve_mode(mode: str | None) -> str:
    """Pick the mode: the argument, else ``$WANDB_MODE``, else online; online needs a key."""
    chosen = mode or os.environ.get("WANDB_MODE") or "online"
    if chosen == "dryrun":  # W&B's old name for offline
        chosen = "offline"
    if chosen not in _MODES:
        raise ValueError(f"mode must be one of {_MODES} or None, got {chosen!r}.")
    if chosen == "online" and not _has_api_key():
        logger.info("No W&B API key configured (WANDB_API_KEY or netrc): logging offline.")
        chosen = "offline"
    return chosen


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set one environment variable for the duration of the block, then restore it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _table(wandb: Any, df: pd.DataFrame) -> Any:
    """``wandb.Table`` of ``df`` with a plain index and string column names."""
    clean = df.reset_index(drop=True)
    clean.columns = [str(c) for c in clean.columns]
    return wandb.Table(dataframe=clean)


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars, so ``run.summary`` serialises them as numbers."""
    return value.item() if isinstance(value, np.generic) else value


def log_summary_run(
    *,
    project: str,
    name: str,
    front_df: pd.DataFrame,
    trials_df: pd.DataFrame | None = None,
    png_paths: Mapping[str, str | os.PathLike[str]] | None = None,
    summary: Mapping[str, Any] | None = None,
    mode: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    x: str = "diversity",
    y: str = "quality",
    group: str | None = None,
    entity: str | None = None,
    config: Mapping[str, Any] | None = None,
    reports_df: pd.DataFrame | None = None,
    students: list[Mapping[str, Any]] | None = None,
    recommended: Mapping[str, Mapping[str, Any]] | None = None,
    upload_students: bool = False,
) -> str | None:
    """Log one summary run of a finished search; never raises because of W&B.

    Logged keys: ``pareto/front`` (table of ``front_df``), ``pareto/front_scatter``
    (``wandb.plot.scatter`` of ``y`` against ``x`` on that table), ``trials/table`` (table
    of ``trials_df``, if given), ``plots/<key>`` (one ``wandb.Image`` per ``png_paths``
    entry) and every ``summary`` item in ``run.summary``.

    Args:
        project: W&B project name.
        name: run name, e.g. the search's experiment name.
        front_df: the Pareto-front trials, one row each, with columns ``x`` and ``y``.
        trials_df: all trials (optional).
        png_paths: ``{key: path}`` of images, e.g. from ``tune.outputs.plots``; a missing file is
            skipped with a warning.
        summary: headline numbers, e.g. ``{"hypervolume": 0.012, "n_trials": 32}``.
        mode: ``"online"``, ``"offline"``, ``"disabled"`` or None (use ``$WANDB_MODE``,
            else online). Online without a configured API key falls back to offline.
        directory: folder under which W&B writes ``wandb/<run dir>``; default W&B's own
            (``$WANDB_DIR`` or the working directory).
        x, y: objective column names for the scatter.
        group, entity: the W&B group (the experiment's name, as Ray's per-trial runs use) and
            entity.
        config: the run's config (`tune.outputs.wandb_content.run_config`: the space, each
            trial's resolved configuration).
        reports_df: every report (``trials.parquet``'s rows): logged as ``reports/table`` and the
            line plot ``reports/J``; ``trials_df`` then marks the kept reports (its ``kept``).
        students: the front's records (``summary.json``'s ``fronts``, flattened): each logged as
            a ``model`` artifact, aliased ``recommended`` where ``recommended`` (``{backbone:
            record}``) names it; ``upload_students`` copies the files instead of referring to them.

    Returns:
        The local run directory (``.../wandb/offline-run-<time>-<id>`` offline, which
        ``wandb sync DIR`` uploads; ``.../wandb/run-<time>-<id>`` online), or None when
        ``mode == "disabled"`` or anything about W&B failed (a warning says what).
    """
    if mode is not None and mode not in (*_MODES, "dryrun"):
        raise ValueError(f"mode must be one of {_MODES} or None, got {mode!r}.")
    run = None
    try:
        resolved = _resolve_mode(mode)
        if resolved == "disabled":
            return None
        import wandb  # imported here: slow to import, and optional for the search

        with _env("WANDB_MODE", resolved):
            run = _init_run(wandb, project=project, name=name, directory=directory, mode=resolved, group=group,
                            entity=entity, config=config)
            payload = _payload(wandb, front_df, trials_df, png_paths or {}, x=x, y=y)
            if reports_df is not None and not reports_df.empty:
                payload.update(report_payload(wandb, reports_df, trials_df if trials_df is not None else reports_df.iloc[:0]))
            run.log(payload)  # kept referenced until finish(): freed before it, the offline log lost the row (test)
            for artifact, aliases in student_artifacts(wandb, list(students or []), experiment=group or name,
                                                       recommended=recommended, upload=upload_students):
                run.log_artifact(artifact, aliases=aliases)
            run.summary.update({str(k): _plain(v) for k, v in (summary or {}).items()})
            run_dir = str(Path(run.settings.sync_dir))
            run.finish()
            run = None
        if resolved == "offline":
            logger.info("W&B summary run written offline to %s; upload with: wandb sync %s",
                        run_dir, run_dir)
        return run_dir
    except Exception as exc:  # W&B must never fail the search
        warnings.warn(
            f"W&B summary run {name!r} was not logged ({type(exc).__name__}: {exc}); the "
            "search results are unaffected. Set WANDB_MODE=disabled to skip W&B.",
            RuntimeWarning,
            stacklevel=2,
        )
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # already failing; the first error is the useful one
                pass
        return None


def _init_run(wandb: Any, *, project: str, name: str, directory: str | os.PathLike[str] | None, mode: str,
              group: str | None = None, entity: str | None = None, config: Mapping[str, Any] | None = None) -> Any:
    """A new W&B run of its own (never one the caller has open), in ``group`` with ``config``,
    without console capture or system stats; ``directory`` is created first."""
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=project,
        entity=entity,
        name=name,
        group=group,
        config=dict(config) if config is not None else None,
        job_type="tune-summary",
        dir=None if directory is None else str(directory),
        mode=mode,
        reinit="create_new",  # never finish or reuse a run the caller has open
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )


def _payload(wandb: Any, front_df: pd.DataFrame, trials_df: pd.DataFrame | None,
             png_paths: Mapping[str, str | os.PathLike[str]], *, x: str, y: str) -> dict[str, Any]:
    """What `log_summary_run` logs: the front's table and scatter, the trials' table, the PNGs
    (a missing file is skipped with a warning)."""
    front_table = _table(wandb, front_df)
    payload: dict[str, Any] = {
        "pareto/front": front_table,
        "pareto/front_scatter": wandb.plot.scatter(front_table, x, y, title=f"Pareto front: {y} vs {x}"),
    }
    if trials_df is not None:
        payload["trials/table"] = _table(wandb, trials_df)
    for key, png in png_paths.items():
        if Path(png).is_file():
            payload[f"plots/{key}"] = wandb.Image(str(png), caption=key)
        else:  # stacklevel 3: the caller of log_summary_run
            warnings.warn(f"W&B summary: image {key!r} not found at {png}; skipped.",
                          RuntimeWarning, stacklevel=3)
    return payload


class WandbLoggerWithoutKeyInRuntimeEnv(WandbLoggerCallback):
    """Ray's `WandbLoggerCallback` whose logging actors get no W&B API key in their runtime
    environment (module docstring)."""

    def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
        key = os.environ.pop(WANDB_ENV_VAR, None)  # read by Ray only to build the runtime env
        try:
            super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)
        finally:
            if key is not None:
                os.environ[WANDB_ENV_VAR] = key
