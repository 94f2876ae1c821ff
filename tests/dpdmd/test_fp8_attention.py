"""`TrainConfig.attention_backend` / `fp8` / `fp8_teacher` (`dpdmd.parallel.attention_impl`, `dpdmd.parallel.fp8`): the config
checks, the errors where the kernel or library is missing, and which linear layers FP8 converts.
(The GPU numbers are in bench/README_gpu.md, section 5.)"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from dpdmd.parallel import attention_impl, fp8
from dpdmd.backbones.digits_net import build_network
from dpdmd.config import ConfigError, TrainConfig, from_mapping
from dpdmd.training.build import build_backbone, check

torchao = pytest.importorskip("torchao")


def _fake_gpu(monkeypatch, capability):
    """torch reports a CUDA GPU of ``capability`` (the checks read only these)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")


# --- config ----------------------------------------------------------------------------------------
def test_defaults_leave_the_numerics_alone():
    config = TrainConfig()
    assert (config.attention_backend, config.fp8, config.fp8_teacher) == ("sdpa", "none", False)


def test_unknown_values_are_refused_naming_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError) as err:
        from_mapping({"attention_backend": "flash", "fp8": "e5m2"})
    text = str(err.value)
    assert "attention_backend: 'flash' is not allowed; use one of sdpa, fa4" in text
    assert "fp8: 'e5m2' is not allowed; use one of none, tensorwise, rowwise" in text
    with pytest.raises(ConfigError, match="fp8_teacher: expected bool"):
        from_mapping({"fp8_teacher": "yes"})


def test_fa4_needs_bf16_autocast():
    with pytest.raises(ConfigError, match="attention_backend: 'fa4' runs bf16 attention only.*mixed_precision 'bf16'"):
        TrainConfig(attention_backend="fa4")
    assert TrainConfig(attention_backend="fa4", mixed_precision="bf16").attention_backend == "fa4"


def test_the_trainer_refuses_fp8_and_fa4_on_the_cpu_saying_which_value_to_use():
    config = TrainConfig(device="cpu", mixed_precision="bf16", attention_backend="fa4", fp8="rowwise", fp8_teacher=True)
    with pytest.raises(ConfigError) as err:
        check(config, build_backbone(config))
    problems = err.value.problems
    assert any(p.startswith("attention_backend: 'fa4' cannot run: FlashAttention-4 runs on CUDA GPUs only")
               and p.endswith("use 'sdpa'") for p in problems)
    assert any(p.startswith("fp8: 'rowwise' cannot run: FP8 matrix products need an NVIDIA GPU of compute "
                            "capability >= 8.9; the device is cpu") and p.endswith("use 'none'") for p in problems)
    assert any(p.startswith("fp8_teacher: True cannot run") and p.endswith("set it false") for p in problems)


# --- FlashAttention-4: what is missing is named, nothing falls back silently -----------------------
def test_fa4_on_the_cpu_is_an_error_naming_sdpa():
    with pytest.raises(attention_impl.AttentionBackendError, match="runs on CUDA GPUs only.*; use attention_backend 'sdpa'"):
        attention_impl.use_attention_backend("fa4", "cpu")
    assert attention_impl.current_attention_backend() == "sdpa"


def test_fa4_on_a_gpu_before_hopper_names_the_compute_capability(monkeypatch):
    _fake_gpu(monkeypatch, (8, 0))
    problem = attention_impl.fa4_problem("cuda")
    assert "compute capability 9.x (Hopper: H100, H200) and 10.x" in problem and "is 8.0" in problem


def test_fa4_missing_says_what_to_install(monkeypatch):
    _fake_gpu(monkeypatch, (9, 0))
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import flash_attn.cute fails
    monkeypatch.setitem(sys.modules, "flash_attn.cute", None)
    with pytest.raises(attention_impl.AttentionBackendError) as err:
        attention_impl.use_attention_backend("fa4", "cuda")
    assert "pip install flash-attn-4" in str(err.value) and "use attention_backend 'sdpa'" in str(err.value)
    assert attention_impl.current_attention_backend() == "sdpa"
    assert torch.backends.cuda.cudnn_sdp_enabled()  # nothing was switched


def test_sdpa_is_the_noop_choice():
    assert "chooses the kernel" in attention_impl.use_attention_backend("sdpa", "cpu")
    with pytest.raises(attention_impl.AttentionBackendError, match="use one of sdpa, fa4"):
        attention_impl.use_attention_backend("cudnn", "cpu")


# --- FP8: which layers, and the errors ------------------------------------------------------------
def _linear_names(net):
    return {n for n, m in net.named_modules() if type(m) is nn.Linear}


def test_fp8_targets_are_the_block_projections_and_feed_forwards():
    net = build_network("flow")  # digits-flow: SD3Transformer2DModel, 4 blocks, width 64
    targets = set(fp8.fp8_targets(net))
    kept = _linear_names(net) - targets
    assert targets and all(t.startswith("transformer_blocks.") for t in targets)
    assert all(".attn." in t or ".ff." in t or ".ff_context." in t for t in targets)
    assert "transformer_blocks.0.attn.to_q" in targets and "transformer_blocks.0.ff.net.2" in targets
    # left in high precision: AdaLN modulation, embeddings, the output layers
    assert {"transformer_blocks.0.norm1.linear", "context_embedder", "proj_out", "norm_out.linear",
            "time_text_embed.timestep_embedder.linear_1"} <= kept
    assert all(not n.startswith("transformer_blocks.") or ".norm" in n for n in kept)


def test_convert_training_swaps_exactly_the_targets_and_keeps_the_parameters():
    from torchao.float8.float8_linear import Float8Linear

    net = build_network("flow")
    params = {n: p for n, p in net.named_parameters()}
    converted = fp8.convert_training(net, "rowwise")
    assert sorted(n for n, m in net.named_modules() if isinstance(m, Float8Linear)) == converted
    assert converted == sorted(fp8.fp8_targets(build_network("flow")))
    assert all(p is params[n] for n, p in net.named_parameters())  # an optimiser built before still steps them
    assert all(type(m) is nn.Linear for n, m in net.named_modules() if n not in converted and isinstance(m, nn.Linear))


def test_converted_network_computes_the_same_function_to_fp8_precision():
    net = build_network("flow").eval()
    g = torch.Generator().manual_seed(0)
    args = dict(hidden_states=torch.randn(2, 16, 8, 8, generator=g), timestep=torch.tensor([500.0, 100.0]),
                encoder_hidden_states=torch.randn(2, 1, 16, generator=g), pooled_projections=torch.randn(2, 16, generator=g))
    with torch.no_grad():
        ref = net(**args, return_dict=False)[0]
        fp8.convert_training(net, "tensorwise")
        got = net(**args, return_dict=False)[0]
    rel = float((got - ref).norm() / ref.norm())
    assert 1e-4 < rel < 0.1  # e4m3 products: not bitwise the same, and not broken


def test_lora_adapters_stay_high_precision_their_frozen_base_goes_fp8():
    from peft import LoraConfig, get_peft_model

    net = build_network("flow").requires_grad_(False)
    lora = get_peft_model(net, LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    targets = fp8.fp8_targets(lora)
    assert "base_model.model.transformer_blocks.0.attn.to_q.base_layer" in targets
    assert not [t for t in targets if "lora_" in t]
    assert len(targets) == len(fp8.fp8_targets(build_network("flow")))


def test_fp8_problems_name_what_is_missing(monkeypatch):
    assert fp8.fp8_problem("none", "cpu") is None
    assert "the device is cpu" in fp8.fp8_problem("rowwise", "cpu")
    _fake_gpu(monkeypatch, (8, 0))
    assert "compute capability >= 8.9" in fp8.fp8_problem("tensorwise", "cuda") and "is 8.0" in fp8.fp8_problem("tensorwise", "cuda")
    _fake_gpu(monkeypatch, (9, 0))
    monkeypatch.setitem(sys.modules, "torchao.float8", None)
    assert fp8.fp8_problem("rowwise", "cuda") == "FP8 needs torchao (pip install torchao)"


def test_apply_fp8_on_the_cpu_raises_and_changes_nothing():
    from dpdmd.method import DPDMD

    config = TrainConfig(device="cpu")
    method = DPDMD(build_backbone(config), lambda_div=0.05, lr_student=1e-4, lr_fake=1e-4)
    before = _linear_names(method.student)
    with pytest.raises(fp8.FP8Error, match="fp8 'rowwise': .*the device is cpu; or use fp8 'none'"):
        fp8.apply_fp8(method, "rowwise")
    with pytest.raises(fp8.FP8Error, match="fp8_teacher: .*or set fp8_teacher false"):
        fp8.apply_fp8(method, "none", teacher=True)
    assert _linear_names(method.student) == before
    assert "own precision" in fp8.apply_fp8(method, "none")
