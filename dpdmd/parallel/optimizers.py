"""The optimiser of the student and the fake score (``TrainConfig.optimizer``): `make_optimizer`.

All three are AdamW with the same settings; they differ in where the two moments live and in what
precision. Per trained parameter (fp32 weights, full fine-tuning), on the GPU:

- ``adamw`` (default): torch's AdamW, fused on a GPU; moments fp32 on the GPU (8 bytes).
- ``adamw8bit``: torchao's ``AdamW8bit``: both moments in 8 bits with one scale per block of 256
  (~2 bytes); tensors under 4096 elements keep fp32 moments. Its step is torch-compiled by torchao.
- ``adamw_offload``: torchao's ``CPUOffloadOptimizer`` around a fused CPU AdamW: moments and the
  step on the host (0 bytes on the GPU, 16 on the host incl. a pinned fp32 copy of the weights);
  each gradient is copied to the host as soon as backward produces it (overlapped with the rest
  of the backward), the updated weights come back after the step. CUDA only.

Measured on SD3.5-M (bench/README_gpu.md) and checked on the digits backbone that ``adamw8bit``
learns the same front (README). torchao is imported only when one of the last two is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = ("adamw", "adamw8bit", "adamw_offload")


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float,
                   betas: tuple[float, float], device: torch.device) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of `OPTIMIZERS`) over ``params``, which live on ``device``."""
    params = list(params)
    settings = dict(lr=lr, weight_decay=weight_decay, betas=betas)
    if name == "adamw":
        # Fused AdamW on a GPU: one kernel set and no full-size temporaries (bench/README_gpu.md).
        fused = {"fused": True} if device.type == "cuda" else {}
        return torch.optim.AdamW(params, **settings, **fused)
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
    if name == "adamw_offload" and device.type != "cuda":
        raise ValueError(f"optimizer 'adamw_offload' offloads GPU states to the host; device is {device}: "
                         "use 'adamw' on the CPU")
    try:
        import torchao.optim
    except ImportError:
        raise ValueError(f"optimizer {name!r} needs torchao (pip install torchao)") from None
    if name == "adamw8bit":
        return torchao.optim.AdamW8bit(params, **settings)
    return _HostAdamW(params, torch.optim.AdamW, **settings)


def _host_offload_class():
    from torchao.optim import CPUOffloadOptimizer

    class HostAdamW(CPUOffloadOptimizer):
        """torchao's offload whose ``param_groups`` (the host copies, which the step updates) are
        read only once every gradient copy to the host has finished: `DPDMD._step` clips the
        gradients of ``param_groups`` before the step, and would otherwise read them mid-copy."""

        @property
        def param_groups(self):
            for copied in self.queue.values():
                copied.synchronize()
            return super().param_groups

    return HostAdamW


def _HostAdamW(params, optimizer_class, **settings):  # noqa: N802 (a class, built lazily)
    return _host_offload_class()(params, optimizer_class, **settings)
