"""`dpdmd.parallel.acceleration`: which blocks the regional compile leaves eager, and the compile settings."""

import os

import torch
import torch._dynamo
import torch._inductor.config as inductor

from dpdmd.parallel.acceleration import compile_repeated_blocks, configure_compile_cache

from .test_checkpointing import _tiny_sd3


def _forward(net):
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 16, generator=g)
    pooled, t = torch.randn(2, 8, generator=g), torch.tensor([500.0, 250.0])
    with torch.no_grad():
        return net(hidden_states=x, timestep=t, encoder_hidden_states=text, pooled_projections=pooled,
                   return_dict=False)[0]


def test_excluded_blocks_stay_eager_and_the_numbers_stay():
    net = _tiny_sd3(num_layers=4).eval()
    eager = _forward(net)
    count = compile_repeated_blocks(net, backend="aot_eager", dynamic=False,
                                    exclude=lambda block: block.context_pre_only)
    assert count == 3  # SD3's last block is its own variant (context_pre_only): left eager
    compiled = [b._compiled_call_impl is not None for b in net.transformer_blocks]
    assert compiled == [True, True, True, False]
    assert torch.allclose(_forward(net), eager, atol=1e-5)


def test_compile_cache_settings(tmp_path, monkeypatch):
    import torch._functorch.config as functorch

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    dynamo = torch._dynamo.config
    limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    # config.patch restores every setting afterwards (the function sets process-wide config)
    with dynamo.patch(**{limit: 8, "accumulated_recompile_limit": dynamo.accumulated_recompile_limit}), \
            inductor.patch({"triton.autotune_pointwise": True, "fx_graph_cache": inductor.fx_graph_cache}), \
            functorch.patch(enable_autograd_cache=functorch.enable_autograd_cache):
        configure_compile_cache(tmp_path / "cc")
        assert inductor.triton.autotune_pointwise is False  # no benchmarking of elementwise kernels
        assert getattr(dynamo, limit) >= 64  # SD3.5-M's 9+ block graphs all stay compiled
        assert (tmp_path / "cc").is_dir() and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc")
        configure_compile_cache(None, autotune_pointwise=True)
        assert inductor.triton.autotune_pointwise is True
