"""`dpdmd.parallel.acceleration.checkpoint_every`: checkpointing a subset of blocks changes memory, not math."""

import pytest
import torch
from diffusers import SD3Transformer2DModel

from dpdmd.parallel.acceleration import checkpoint_every


def _tiny_sd3(num_layers: int = 4) -> SD3Transformer2DModel:
    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=num_layers,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                 caption_projection_dim=16, pooled_projection_dim=8, pos_embed_max_size=16).train()


def _grads(net: SD3Transformer2DModel) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 16, generator=g)
    pooled, t = torch.randn(2, 8, generator=g), torch.tensor([500.0, 250.0])
    out = net(hidden_states=x, timestep=t, encoder_hidden_states=text, pooled_projections=pooled, return_dict=False)[0]
    out.square().mean().backward()
    return [p.grad.clone() for p in net.parameters()]


def test_every_n_checkpoints_every_nth_block_and_keeps_gradients(monkeypatch):
    plain = _grads(_tiny_sd3())
    recomputed = []
    original = torch.utils.checkpoint.checkpoint

    def counting(fn, *args, **kwargs):
        recomputed.append(fn.__self__)
        return original(fn, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    for every, expected_blocks in ((1, [0, 1, 2, 3]), (2, [0, 2]), (3, [0, 3])):
        net = _tiny_sd3()
        checkpoint_every(net, every)
        recomputed.clear()
        grads = _grads(net)
        assert [list(net.transformer_blocks).index(b) for b in recomputed] == expected_blocks
        for a, b in zip(plain, grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every must be >= 1"):
        checkpoint_every(_tiny_sd3(1), 0)
