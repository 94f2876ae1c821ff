"""Ray's per-trial W&B logger, without the W&B API key in a Ray runtime environment.

Ray's `WandbLoggerCallback` starts its logging actors with ``runtime_env={"env_vars":
{"WANDB_API_KEY": <key>}}``; Ray's runtime-env agent writes runtime environments in plain text
to ``runtime_env_agent.log`` (world-readable under the session directory). This subclass hides
the key from that one call, so the actors start with no runtime-env variables: on a local cluster
they inherit the key from the processes Ray started from the driver; on a remote cluster they
run on the driver's node (Ray places them there) and read the key from ``wandb login``'s
``~/.netrc`` (cluster/README.md).
"""

from __future__ import annotations

import os

from ray.air.integrations.wandb import WANDB_ENV_VAR, WandbLoggerCallback


class WandbLoggerWithoutKeyInRuntimeEnv(WandbLoggerCallback):
    def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
        key = os.environ.pop(WANDB_ENV_VAR, None)  # read by Ray only to build the runtime env
        try:
            super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)
        finally:
            if key is not None:
                os.environ[WANDB_ENV_VAR] = key
