"""The DP-DMD algorithm's plumbing: anchors, the stop-gradient, the two updates."""

import pytest
import torch

from dpdmd.anchors import LocalAnchors, teacher_anchors, teacher_calls_for
from dpdmd.losses import dmd_loss
from dpdmd.method import DPDMD
from dpdmd.stream import is_student_iteration, iteration_batch

from .helpers import random_backbone, step_output_grads


def make_method(kind="flow", stop_grad=True, lambda_div=0.05):
    torch.manual_seed(0)
    return DPDMD(random_backbone(kind), lambda_div=lambda_div, stop_grad=stop_grad, lr_student=1e-4, lr_fake=1e-4)


def batch_for(backbone, iteration=0, batch_size=2):
    return iteration_batch(seed=0, iteration=iteration, prompts=["3", "7"], batch_size=batch_size,
                           latent_shape=backbone.latent_shape, num_dmd_levels=len(backbone.schedule.dmd_levels))


@pytest.mark.parametrize("kind", ["flow", "eps"])
def test_one_pass_gives_every_k_bit_for_bit(kind):
    m = make_method(kind)
    b = m.backbone
    batch = batch_for(b)
    cond, uncond = b.encode_prompts(batch.prompts), b.unconditional(2)
    together = teacher_anchors(b, m.teacher, batch.x1, cond, uncond, [5, 10, 20])
    for k in (5, 10, 20):
        alone = teacher_anchors(b, m.teacher, batch.x1, cond, uncond, [k])[k]
        assert torch.equal(together[k], alone)


def test_flow_anchor_is_k_guided_euler_steps():
    m = make_method("flow")
    b = m.backbone
    batch = batch_for(b)
    cond, uncond = b.encode_prompts(batch.prompts), b.unconditional(2)
    z = batch.x1
    levels = b.schedule.teacher_levels
    with torch.no_grad():
        for j in range(5):
            z = z + (levels[j + 1] - levels[j]) * b.guided(m.teacher, z, levels[j], cond, uncond)
    target = teacher_anchors(b, m.teacher, batch.x1, cond, uncond, [5])[5]
    assert torch.allclose(target, (batch.x1 - z) / (1 - levels[5]), atol=1e-5)


def test_anchor_k_out_of_range_is_refused_by_the_config_alone():
    """K <= teacher_steps is `TrainConfig`'s rule, checked there once: a config that exists has a K
    its backbone's teacher schedule reaches, so the anchor code does not check it again."""
    from dpdmd import ConfigError, TrainConfig
    from dpdmd.training.build import build_backbone

    with pytest.raises(ConfigError, match=r"anchor_k: 31 is not allowed; K must be an integer in 1\.\.teacher_steps "
                                          r"\(= 30\)"):
        TrainConfig(anchor_k=31)
    with pytest.raises(ConfigError, match=r"anchor_k: 0 is not allowed; K must be an integer in 1\.\.teacher_steps"):
        TrainConfig(anchor_k=0)
    config = TrainConfig(anchor_k=12, teacher_steps=12, device="cpu")
    assert build_backbone(config).schedule.teacher_steps == config.teacher_steps == config.anchor_k


def test_local_anchors_count_teacher_calls():
    m = make_method("eps")
    provider = LocalAnchors(m.backbone, m.teacher, anchor_k=10)
    batch = batch_for(m.backbone)
    provider(batch, m.backbone.encode_prompts(batch.prompts), m.backbone.unconditional(2))
    # eps needs the teacher's guided eps at z_K too: K + 1 evaluations
    assert provider.teacher_calls == 11 == teacher_calls_for([10], m.backbone.schedule)


def _step_output_grads(method):
    return step_output_grads(method, batch_for(method.backbone))


@pytest.mark.parametrize("kind", ["flow", "eps"])
def test_stop_gradient_blocks_dmd_at_the_first_step(kind):
    assert _step_output_grads(make_method(kind, stop_grad=True)) == [False, True, True, True]


@pytest.mark.parametrize("kind", ["flow", "eps"])
def test_without_stop_gradient_dmd_reaches_all_four_steps(kind):
    assert _step_output_grads(make_method(kind, stop_grad=False)) == [True, True, True, True]


def test_with_stop_gradient_and_no_div_the_first_step_gets_no_student_gradient():
    """Observable at the parameters: with lambda_div = 0 and the stop-gradient, the student's
    update is the same whether or not its first step's output is scaled (it carries no gradient)."""
    m = make_method("flow", stop_grad=True, lambda_div=0.0)
    b = m.backbone
    batch = batch_for(b)
    cond, uncond = b.encode_prompts(batch.prompts), b.unconditional(2)
    grads = []
    for scale in (1.0, 0.0):
        original = m._predict
        calls = []

        def hooked(net, x, level, emb, original=original, calls=calls, scale=scale):
            y = original(net, x, level, emb)
            if net is m.student and torch.is_grad_enabled():
                calls.append(1)
                if len(calls) == 1:  # the first step: keep its value, cut or keep its gradient
                    y = y.detach() + scale * (y - y.detach())
            return y

        m._predict = hooked
        m.opt_student.zero_grad()
        _, x_s = m.rollout(batch.x1, cond)
        dmd_loss(x_s, torch.randn(x_s.shape, generator=torch.Generator().manual_seed(1))).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.student.parameters() if p.grad is not None]).clone())
        m._predict = original
    assert torch.allclose(grads[0], grads[1])


def test_updates_change_only_their_own_network():
    m = make_method("flow")
    b = m.backbone
    batch = batch_for(b)
    cond, uncond = b.encode_prompts(batch.prompts), b.unconditional(2)
    snap = lambda net: torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    s0, f0, t0 = snap(m.student), snap(m.fake), snap(m.teacher)
    m.fake_update(batch, cond)
    assert torch.equal(snap(m.student), s0) and not torch.equal(snap(m.fake), f0)
    f1 = snap(m.fake)
    target = LocalAnchors(b, m.teacher, 10)(batch, cond, uncond)
    out = m.student_update(batch, cond, uncond, target)
    assert not torch.equal(snap(m.student), s0) and torch.equal(snap(m.fake), f1)
    assert torch.equal(snap(m.teacher), t0)
    assert out["loss_div"] > 0 and out["loss_dmd"] >= 0


def test_two_time_scale_rule():
    pattern = [is_student_iteration(i, 5) for i in range(12)]
    assert pattern == [False] * 5 + [True] + [False] * 5 + [True]


def test_regional_compile_keeps_the_numbers():
    """`compile: true` compiles each repeated block (aot_eager here: no C compiler needed) and the
    networks compute what they did eagerly."""
    from dpdmd.parallel.acceleration import compile_repeated_blocks

    m = make_method("flow")
    b = m.backbone
    batch = batch_for(b)
    cond = b.encode_prompts(batch.prompts)
    with torch.no_grad():
        eager = b.predict(m.student, batch.x1, 0.5, cond)
        assert compile_repeated_blocks(m.student, backend="aot_eager", dynamic=False) == 4
        compiled = b.predict(m.student, batch.x1, 0.5, cond)
    assert torch.allclose(eager, compiled, atol=1e-5)
