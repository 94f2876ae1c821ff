"""FP8 matrix products for the networks' linear layers (``TrainConfig.fp8``, ``TrainConfig.fp8_teacher``).

- ``fp8``: the student's and the fake score's linear layers train through torchao's float8
  training (``torchao.float8.convert_to_float8_training``): each targeted ``nn.Linear`` becomes a
  ``Float8Linear`` that casts its input, weight and output gradient to float8 (e4m3; dynamic
  scales) for the three matrix products of forward and backward and keeps the fp32 master weights,
  the optimiser and everything else as it was. ``"tensorwise"``: one scale per tensor (cuBLAS's FP8
  GEMM); ``"rowwise"``: one scale per row (CUTLASS's rowwise-scaled GEMM, torchao's more accurate
  recipe). ``"none"`` (default): bf16/fp32 as before.
- ``fp8_teacher``: the frozen teacher's linear layers (the anchor's and the real score's forwards)
  run as float8 inference (``torchao.quantization.quantize_`` with
  ``Float8DynamicActivationFloat8WeightConfig``, per-row scales): weights stored in float8,
  activations cast per call.

Which layers: `fp8_targets` — the ``nn.Linear`` layers inside the network's repeated blocks (SD3's
``JointTransformerBlock``: attention projections and feed-forwards; the UNet's
``BasicTransformerBlock``), whose in and out features are multiples of 16 (FP8 GEMMs need them).
Left in bf16: the AdaLN modulation layers (``norm*.linear``: a handful of rows, and they scale
every activation), LoRA's adapter factors (``lora_A``/``lora_B``: the weights LoRA trains; the
frozen base layer under them is converted), and everything outside the blocks (embeddings, the
output projection).

FP8 needs torchao and an NVIDIA GPU of compute capability >= 8.9 (Ada, Hopper, Blackwell);
`fp8_problem` says what is missing, and the trainer refuses the config with that message. It
changes the numerics by design: ``bench/fp8_check.py`` checks that DP-DMD learns the same within
seed spread, and ``bench/README_gpu.md`` section 5 has the measurements.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

FP8_MODES = ("none", "tensorwise", "rowwise")
TORCHAO_INSTALL = "pip install torchao"
MIN_CAPABILITY = (8, 9)


class FP8Error(RuntimeError):
    """FP8 cannot run here; the message says what to install or which value to use."""


def _blocks(net: nn.Module) -> tuple[str, ...]:
    from .acceleration import repeated_block_classes

    return repeated_block_classes(net)


def is_target(fqn: str, module: nn.Module, in_block: bool) -> bool:
    """Whether the linear layer ``module`` at ``fqn`` (inside a repeated block or not) runs in FP8."""
    if type(module) is not nn.Linear or not in_block:
        return False
    parts = fqn.split(".")
    if any(p.startswith("lora_") for p in parts):  # LoRA's trained factors stay in high precision
        return False
    if any(p.startswith("norm") for p in parts):  # AdaLN modulation: B rows, scales every activation
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def fp8_targets(net: nn.Module) -> list[str]:
    """Fully qualified names of the linear layers of ``net`` that `convert_training` and
    `quantize_teacher` convert (see the module's doc)."""
    blocks = _blocks(net)
    out: list[str] = []

    def walk(module: nn.Module, prefix: str, in_block: bool) -> None:
        for name, child in module.named_children():
            fqn = f"{prefix}.{name}" if prefix else name
            inside = in_block or type(child).__name__ in blocks
            if is_target(fqn, child, in_block):
                out.append(fqn)
            walk(child, fqn, inside)

    walk(net, "", False)
    return out


def fp8_problem(mode: str, device: torch.device | str) -> str | None:
    """Why FP8 ``mode`` cannot run on ``device`` (None: it can, or mode is "none")."""
    if mode not in FP8_MODES:
        return f"{mode!r} is not one of {', '.join(FP8_MODES)}"
    if mode == "none":
        return None
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"FP8 matrix products need an NVIDIA GPU of compute capability >= 8.9; the device is {device}"
    cap = torch.cuda.get_device_capability(device)
    if cap < MIN_CAPABILITY:
        return (f"FP8 matrix products need compute capability >= 8.9 (Ada, Hopper, Blackwell); this GPU "
                f"({torch.cuda.get_device_name(device)}) is {cap[0]}.{cap[1]}")
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return f"FP8 needs torchao ({TORCHAO_INSTALL})"
    return None


def training_config(mode: str):
    """torchao's ``Float8LinearConfig`` for ``mode`` ("tensorwise" or "rowwise")."""
    from torchao.float8 import Float8LinearConfig

    if mode not in ("tensorwise", "rowwise"):
        raise FP8Error(f"fp8 {mode!r}: use one of {', '.join(FP8_MODES)}")
    return Float8LinearConfig.from_recipe_name(mode)


def convert_training(net: nn.Module, mode: str) -> list[str]:
    """Swap `fp8_targets` of ``net`` for torchao's ``Float8Linear`` (in place; the parameters stay
    the same objects, so an optimiser built before keeps working). Returns the converted names.
    Needs torchao; runs on any device (the FP8 products themselves need a GPU: `fp8_problem`)."""
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError:
        raise FP8Error(f"fp8 {mode!r} needs torchao ({TORCHAO_INSTALL}); or use fp8 'none'") from None
    targets = set(fp8_targets(net))
    convert_to_float8_training(net, module_filter_fn=lambda module, fqn: fqn in targets,
                               config=training_config(mode))
    return sorted(targets)


def quantize_teacher(net: nn.Module) -> list[str]:
    """The frozen ``net``'s `fp8_targets` as float8 inference layers (torchao's dynamic activation,
    float8 weight, per-row scales), in place. Returns the converted names."""
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except ImportError:
        raise FP8Error(f"fp8_teacher needs torchao ({TORCHAO_INSTALL}); or set fp8_teacher false") from None
    targets = set(fp8_targets(net))
    quantize_(net, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
              filter_fn=lambda module, fqn: fqn in targets)
    return sorted(targets)


def apply_fp8(method, mode: str, *, teacher: bool = False) -> str:
    """FP8 on a built `DPDMD` (before ``torch.compile``): ``mode`` for the student and the fake
    score, and float8 inference for the teacher if ``teacher``. Raises `FP8Error` when it cannot
    run on the method's device. Returns a line for the log."""
    if mode == "none" and not teacher:
        return "fp8 none: the linear layers run in the networks' own precision"
    device = method.backbone.device
    problem = fp8_problem(mode if mode != "none" else "rowwise", device)
    if problem is not None:
        what, fix = (f"fp8 {mode!r}", "or use fp8 'none'") if mode != "none" else ("fp8_teacher", "or set fp8_teacher false")
        raise FP8Error(f"{what}: {problem}; {fix}")
    parts = []
    if mode != "none":
        n = [len(convert_training(net, mode)) for net in (method.student, method.fake)]
        parts.append(f"fp8 {mode}: {n[0]} linear layers of the student and {n[1]} of the fake score train "
                     "through torchao's float8")
    if teacher:
        n = len(quantize_teacher(method.teacher))
        parts.append(f"fp8_teacher: {n} linear layers of the teacher run float8 inference (per-row scales)")
    line = "; ".join(parts)
    log.info(line)
    return line
