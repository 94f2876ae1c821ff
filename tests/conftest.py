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
