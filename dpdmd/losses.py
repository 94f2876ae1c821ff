"""The three losses of DP-DMD (method.md, "One training iteration"), as pure functions.

Shapes: every tensor is (B, C, H, W). Losses are scalars, computed in float32.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def diversity_loss(first_step_prediction: Tensor, first_step_target: Tensor) -> Tensor:
    """Step 4: ``L_div = mean((pred - sg(target))^2)`` over batch, channels and pixels, in fp32.

    Flow: pred is the student's first-step velocity v1, target ``v_tgt``. Eps: pred is the
    student's first-step x0, target the teacher's x0 at the anchor.
    """
    return (first_step_prediction.float() - first_step_target.detach().float()).pow(2).mean()


def dmd_loss(x_s: Tensor, grad: Tensor) -> Tensor:
    """Step 5: ``L_dmd = 0.5 * mean((x_s - sg(x_s - grad))^2)``.

    Its gradient with respect to x_s is ``grad / numel``: the normalised distribution-matching
    direction, pushed back through the student's rollout.
    """
    x_s = x_s.float()
    return 0.5 * (x_s - (x_s - grad.float()).detach()).pow(2).mean()


def fake_score_loss(fake_out: Tensor, target: Tensor) -> Tensor:
    """Fake-score step 3: ``mean((F(x_t, s) - sg(target))^2)``; target ``eps - x_s`` (flow) or eps."""
    return (fake_out.float() - target.detach().float()).pow(2).mean()
