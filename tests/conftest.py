"""Shared test setup: an isolated disk cache, and no network for W&B or the hubs."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point the dpdmd cache at a per-session directory (shipped teacher weights are still used)."""
    old = os.environ.get("DPDMD_CACHE")
    os.environ["DPDMD_CACHE"] = str(tmp_path_factory.mktemp("dpdmd-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    yield
    if old is None:
        os.environ.pop("DPDMD_CACHE", None)
    else:
        os.environ["DPDMD_CACHE"] = old


@pytest.fixture(autouse=True)
def ray_shut_down_after_each_test():
    """A test that started Ray leaves it shut down, passed or failed: the next test's
    ``ray.init`` would otherwise fail with "Maybe you called ray.init twice by accident?"."""
    yield
    import sys

    ray = sys.modules.get("ray")  # never import Ray for the tests that do not use it
    if ray is not None and ray.is_initialized():
        ray.shutdown()
