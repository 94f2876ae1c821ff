"""The formulas of method.md on hand-computed cases and random tensors."""

import torch

from dpdmd.losses import diversity_loss, dmd_loss, fake_score_loss
from dpdmd.schedules import EpsSchedule, FlowSchedule


def test_flow_grids_match_the_reference():
    s = FlowSchedule(shift=3.0, teacher_steps=30, student_steps=4)
    assert torch.allclose(torch.tensor(s.student_levels), torch.tensor([1.0, 0.85769, 0.60215, 0.00893, 0.0]), atol=1e-5)
    got = [s.teacher_levels[k] for k in (5, 10, 15, 20, 25)]
    assert torch.allclose(torch.tensor(got), torch.tensor([0.9353, 0.8513, 0.7380, 0.5768, 0.3291]), atol=1e-4)
    assert len(s.dmd_levels) == 1000 and s.dmd_levels[0] == 1.0


def test_eps_student_grid_is_the_trailing_ddim_one():
    assert EpsSchedule().student_levels == [999, 749, 499, 249, -1]


def test_flow_velocity_target_hand_computed():
    s = FlowSchedule()
    x1 = torch.tensor([[[[2.0]]]])
    z_k = torch.tensor([[[[0.5]]]])
    # v_tgt = (x1 - z_K) / (1 - s_K) with s_K = 0.25: (2 - 0.5) / 0.75 = 2
    assert torch.allclose(s.first_step_target(x1, z_k, 0.25, None), torch.tensor([[[[2.0]]]]))
    # equivalently x0_tgt = (z_K - s_K x1) / (1 - s_K) = (0.5 - 0.5) / 0.75 = 0, and v = x1 - x0 = 2
    # K = T_steps means s_K = 0: the target is x1 - z_T
    assert torch.allclose(s.first_step_target(x1, z_k, 0.0, None), x1 - z_k)


def test_flow_velocity_target_is_exact_for_a_straight_teacher():
    """A teacher whose velocity is constant reaches z_K = x1 - (1 - s_K) v; the target recovers v."""
    s = FlowSchedule()
    x1, v = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    z = x1
    for j in range(10):
        z = s.step(z, v, s.teacher_levels[j], s.teacher_levels[j + 1])
    assert torch.allclose(s.first_step_target(x1, z, s.teacher_levels[10], None), v, atol=1e-5)


def test_flow_dmd_gradient_is_normalised_velocity_difference():
    s = FlowSchedule()
    v_r, v_f, x = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    grad = s.dmd_gradient(x, x, 0.5, v_r, v_f)
    expected = (v_r - v_f) / v_r.abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(grad, expected, atol=1e-6)


def test_dmd_gradient_zeroes_nans():
    s = FlowSchedule()
    v_r = torch.zeros(1, 1, 2, 2)  # mean |v_r| = 0 -> 0/0
    assert torch.isfinite(s.dmd_gradient(v_r, v_r, 0.5, v_r, v_r)).all()


def test_dmd_loss_gradient_is_grad_over_numel():
    x_s = torch.randn(2, 3, 4, 4, requires_grad=True)
    grad = torch.randn(2, 3, 4, 4)
    dmd_loss(x_s, grad).backward()
    assert torch.allclose(x_s.grad, grad / grad.numel(), atol=1e-7)


def test_diversity_loss_is_fp32_mse_with_stopped_target():
    pred = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    target = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = diversity_loss(pred, target)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, (pred.float() - target).pow(2).mean())
    loss.backward()
    assert target.grad is None and pred.grad is not None


def test_eps_x0_conversions_round_trip():
    s = EpsSchedule()
    x0, eps = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    for t in (999, 500, 10):
        x_t = s.add_noise(x0, eps, t)
        assert torch.allclose(s.to_x0(x_t, eps, t), x0, atol=1e-8)
        assert torch.allclose(s.to_eps(x_t, x0, t), eps, atol=1e-8)
    # the student's first-step prediction is x0 from eps at t = 999
    a = float(s.alphas_cumprod[999])
    x1 = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    e1 = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    assert torch.allclose(s.first_step_prediction(x1, e1), (x1 - (1 - a) ** 0.5 * e1) / a**0.5)


def test_eps_ddim_step_with_true_eps_lands_on_the_clean_sample():
    s = EpsSchedule()
    x0, eps = torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.randn(1, 2, 4, 4, dtype=torch.float64)
    x = s.add_noise(x0, eps, 999)
    for j in range(4):
        x = s.step(x, eps, s.student_levels[j], s.student_levels[j + 1])
    assert torch.allclose(x, x0, atol=1e-8)


def test_eps_dmd_gradient_follows_dmd2():
    s = EpsSchedule()
    x_s, x_t = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    e_r, e_f = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    x0_r, x0_f = s.to_x0(x_t, e_r, 400), s.to_x0(x_t, e_f, 400)
    expected = (x0_f - x0_r) / (x_s - x0_r).abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(s.dmd_gradient(x_s, x_t, 400, e_r, e_f), expected, atol=1e-5)


def test_fake_targets():
    x_s, eps = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    assert torch.equal(FlowSchedule().fake_target(x_s, eps), eps - x_s)
    assert torch.equal(EpsSchedule().fake_target(x_s, eps), eps)
    assert torch.allclose(fake_score_loss(eps, eps), torch.tensor(0.0))
