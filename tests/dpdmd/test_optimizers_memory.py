"""The optimiser options (`dpdmd.parallel.optimizers`, TrainConfig.optimizer) and the memory model
(`dpdmd.parallel.memory`, used by ``tune.search --dry-run``)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dpdmd.config import ConfigError, from_mapping
from dpdmd.parallel.memory import estimate, fit_line
from dpdmd.parallel.optimizers import make_optimizer

SETTINGS = dict(lr=1e-3, weight_decay=0.01, betas=(0.9, 0.99), device=torch.device("cpu"))


def test_default_is_torch_adamw_with_the_configured_settings():
    params = [torch.nn.Parameter(torch.randn(3, 3))]
    opt = make_optimizer("adamw", params, **SETTINGS)
    assert type(opt) is torch.optim.AdamW
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"]) == (1e-3, 0.01, (0.9, 0.99))
    assert not group["fused"]  # fused only on a GPU


def test_default_step_is_numerically_the_plain_adamw_step():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(4, 4))
    b = torch.nn.Parameter(a.detach().clone())
    ours = make_optimizer("adamw", [a], **SETTINGS)
    plain = torch.optim.AdamW([b], lr=1e-3, weight_decay=0.01, betas=(0.9, 0.99))
    for p, opt in ((a, ours), (b, plain)):
        for _ in range(3):
            opt.zero_grad()
            (p ** 3).sum().backward()
            opt.step()
    assert torch.equal(a, b)


def test_unknown_optimizer_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as err:
        from_mapping({"optimizer": "sgd"})
    assert "optimizer" in str(err.value) and "adamw8bit" in str(err.value)
    with pytest.raises(ValueError, match="adamw_offload"):
        make_optimizer("lion", [torch.nn.Parameter(torch.zeros(2))], **SETTINGS)


def test_offload_needs_a_gpu():
    with pytest.raises(ValueError, match="CPU|cpu"):
        make_optimizer("adamw_offload", [torch.nn.Parameter(torch.zeros(2))], **SETTINGS)


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_adamw8bit_is_torchaos():
    import torchao.optim

    opt = make_optimizer("adamw8bit", [torch.nn.Parameter(torch.zeros(4096))], **SETTINGS)
    assert isinstance(opt, torchao.optim.AdamW8bit)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)


# Measured on an H100 (bench/README_gpu.md): SD3.5-M full fine-tuning, 1024 px, batch 4, eager.
# The activations are calibrated on the adamw row alone; the other two rows are predictions.
@pytest.mark.parametrize("optimizer, measured_gib", [("adamw", 72.4), ("adamw8bit", 47.5), ("adamw_offload", 39.0)])
def test_memory_model_matches_the_measured_peaks(optimizer, measured_gib):
    total = estimate("sd35m", "full", optimizer, gpus=1, batch=4, pixels=1024)["total"]
    assert abs(total - measured_gib) / measured_gib < 0.03


def test_memory_model_shards_full_training_and_scales_activations():
    one, eight = estimate("sd35l", "full", "adamw", 1), estimate("sd35l", "full", "adamw", 8)
    assert one["total"] > 80 and eight["total"] < 80  # SD3.5-L full needs sharding
    assert eight["optimizer"] == pytest.approx(one["optimizer"] / 8)
    assert eight["teacher"] == one["teacher"]  # replicated
    # built on the meta device, a GPU holds only its shards while building: 15 + 7.5 GiB, not 15 + 60
    assert eight["build"] == pytest.approx(eight["teacher"] + 8 * 8.06e9 / 8 / 2**30) and eight["build"] < eight["total"]
    small = estimate("sd35m", "lora", "adamw", 1, batch=1, pixels=512)
    assert small["activations"] == pytest.approx(estimate("sd35m", "lora", "adamw", 1)["activations"] / 16)
    with pytest.raises(ValueError, match="sd35m"):
        estimate("flux", "full")


def test_fit_line_compares_against_the_gpu_share():
    full = {"train_mode": "full", "resolution": 1024}
    assert "DOES NOT FIT" in fit_line("sd35m", full, {"batch_size": 4}, {"gpu": 0.5})
    assert ": fits" in fit_line("sd35m", full, {"batch_size": 4}, {"gpu": 1})
    assert ": fits" in fit_line("sd35m", full, {"batch_size": 4, "optimizer": "adamw8bit"}, {"gpu": 1})
    assert fit_line("digits-flow", {}, {}, {"gpu": 0}) is None
