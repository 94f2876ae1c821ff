"""Test doubles: the built-in backbones with a randomly initialised teacher (no pretraining)."""

from dpdmd.backbones.digits import DigitsBackbone, build_network


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
