"""Test doubles: the built-in backbones with a randomly initialised teacher (no pretraining)."""

from dpdmd.backbones.digits import DigitsBackbone
from dpdmd.backbones.digits_net import build_network


class RandomTeacherDigits(DigitsBackbone):
    """A digits backbone whose teacher is the untrained network: fast, and enough for checks of
    the algorithm's plumbing (formulas, gradients, determinism)."""

    def load_teacher(self):
        return build_network(self.kind)


def random_backbone(kind="flow", **kwargs):
    return RandomTeacherDigits(kind=kind, **kwargs)


def register_random_backbones():
    """Register ``test-random-flow`` / ``test-random-eps`` so `train()` can build them by name."""
    from dpdmd.backbones import register_backbone

    register_backbone("test-random-flow", "tests.dpdmd.helpers:RandomTeacherDigits", kind="flow")
    register_backbone("test-random-eps", "tests.dpdmd.helpers:RandomTeacherDigits", kind="eps")


def step_output_grads(method, batch):
    """Backpropagate L_dmd alone through the student's rollout on ``batch`` and return, for each
    student step, whether gradient reached that step's network output."""
    import torch

    from dpdmd.losses import dmd_loss

    outputs = []
    original = method._predict

    def recording(net, x, level, emb):
        y = original(net, x, level, emb)
        if net is method.student and y.requires_grad:
            y.retain_grad()
            outputs.append(y)
        return y

    method._predict = recording
    try:
        _, x_s = method.rollout(batch.x1, method.backbone.encode_prompts(batch.prompts))
        dmd_loss(x_s, torch.randn_like(x_s)).backward()
    finally:
        method._predict = original
    return [o.grad is not None and o.grad.abs().sum().item() > 0 for o in outputs]
