"""Which kernel runs the networks' attention (``TrainConfig.attention_backend``).

- ``"sdpa"`` (default): PyTorch's ``scaled_dot_product_attention`` picks its kernel as it always
  did (cuDNN's fused flash kernel on an H100/H200 in bf16).
- ``"fa4"``: FlashAttention-4 (the ``flash-attn-4`` package, ``flash_attn.cute``: CuTe-DSL kernels
  for Hopper, compute capability 9.x, and Blackwell, 10.x) runs the attention. It is installed as
  the CUDA kernel of SDPA's flash path (``aten::_scaled_dot_product_flash_attention`` and its
  backward; the mechanism PyTorch documents as ``torch.nn.attention.activate_flash_attention_impl``
  since 2.13) and SDPA's cuDNN path is switched off, so that SDPA takes the flash path. Nothing
  in diffusers changes, ``torch.compile`` sees the same aten operator (with its own shape rules) and
  calls the kernel at run time, and gradient checkpointing recomputes through it.

`use_attention_backend(name, device)` applies a choice for the whole process (the kernel override
and the cuDNN switch are process-wide) and returns what it did, for the log. What cannot run is an
`AttentionBackendError` naming what to install or which value to use: FA4 needs a CUDA GPU of
compute capability 9.x or 10.x and the package; it never falls back silently. Only SDPA calls that
the flash path takes run on FA4: bf16/fp16 inputs (so ``mixed_precision: bf16``, which the trainer
checks), no mask, no dropout; the rest (e.g. a float32 VAE decode) run SDPA's other kernels, as
they did before. `fa4_calls` counts the kernel's forward and backward calls, so a caller (the
benchmarks) can check that FA4 did run.

Measured on an H200 at SD3.5-M's shapes: ``bench/attention_backends.py``, ``bench/README_gpu.md``
section 5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("sdpa", "fa4")

#: what ``fa4`` needs; the CUDA 12 libraries (``nvidia-cutlass-dsl-libs-cu12``) serve as well. Installed
#: without pip's resolver (e.g. wheels carried with ``--no-deps``), ``-libs-core`` is easy to miss: then
#: ``import flash_attn.cute`` fails with "No module named 'cutlass.cute'" (seen on the H200, README_gpu section 5).
FA4_INSTALL = ("pip install flash-attn-4 (it brings nvidia-cutlass-dsl with nvidia-cutlass-dsl-libs-base, -libs-core "
               "(the Python DSL, cutlass.cute) and -libs-cu13 or -cu12, apache-tvm-ffi, torch-c-dlpack-ext, "
               "quack-kernels, einops)")

#: forward and backward calls of the FA4 kernel in this process (the benchmarks check it ran)
fa4_calls = {"forward": 0, "backward": 0}


class AttentionBackendError(RuntimeError):
    """The attention backend asked for cannot run here; the message says what to do."""


@dataclass
class _Active:
    name: str = "sdpa"
    library: object = None  # the torch.library.Library holding the kernel override (kept alive)
    cudnn_was: bool | None = None


_ACTIVE = _Active()


def current_attention_backend() -> str:
    return _ACTIVE.name


def fa4_problem(device: torch.device | str) -> str | None:
    """Why FA4 cannot run on ``device`` (None: it can)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"FlashAttention-4 runs on CUDA GPUs only; the device is {device}"
    if not torch.cuda.is_available():
        return "FlashAttention-4 runs on CUDA GPUs only; torch sees no CUDA device"
    major, minor = torch.cuda.get_device_capability(device)
    if major not in (9, 10):
        return (f"FlashAttention-4's kernels are for compute capability 9.x (Hopper: H100, H200) and 10.x "
                f"(Blackwell); this GPU ({torch.cuda.get_device_name(device)}) is {major}.{minor}")
    module = fa4_module()
    if isinstance(module, str):
        return module
    return None


def fa4_module():
    """FA4's ``flash_attn.cute.interface`` module, or why it cannot be imported (a str)."""
    try:
        from flash_attn.cute import interface
    except Exception as err:  # noqa: BLE001  (ImportError, or a library of the CuTe DSL that fails to load)
        return f"FlashAttention-4 is not importable ({type(err).__name__}: {str(err).splitlines()[0][:200]}); {FA4_INSTALL}"
    if not (hasattr(interface, "_flash_attn_fwd") and hasattr(interface, "_flash_attn_bwd")):
        return f"flash_attn.cute.interface has no _flash_attn_fwd/_flash_attn_bwd (not FlashAttention-4?); {FA4_INSTALL}"
    return interface


def fa4_version() -> str:
    try:
        from importlib.metadata import version

        return version("flash-attn-4")
    except Exception:  # noqa: BLE001
        return "?"


def use_attention_backend(name: str, device: torch.device | str) -> str:
    """Make ``name`` (one of `ATTENTION_BACKENDS`) the attention kernel of this process; returns a
    line for the log. Call it before the networks run (and before ``torch.compile`` traces them:
    a compiled graph keeps the SDPA path chosen when it was traced)."""
    if name not in ATTENTION_BACKENDS:
        raise AttentionBackendError(f"attention_backend {name!r}: use one of {', '.join(ATTENTION_BACKENDS)}")
    if name == "sdpa":
        _restore()
        return "attention_backend sdpa: PyTorch's scaled_dot_product_attention chooses the kernel"
    problem = fa4_problem(device)
    if problem is not None:
        raise AttentionBackendError(f"attention_backend 'fa4': {problem}; use attention_backend 'sdpa'")
    if _ACTIVE.name != "fa4":
        _ACTIVE.library = _register_fa4_kernels()
        _ACTIVE.cudnn_was = torch.backends.cuda.cudnn_sdp_enabled()
        torch.backends.cuda.enable_cudnn_sdp(False)  # so SDPA takes its flash path, now FA4's
        _ACTIVE.name = "fa4"
    line = (f"attention_backend fa4: SDPA's flash path runs FlashAttention-4 (flash-attn-4 {fa4_version()}); "
            "SDPA's cuDNN path is off")
    log.info(line)
    return line


def _restore() -> None:
    if _ACTIVE.name == "fa4":
        _ACTIVE.library = None  # dropping the Library removes the kernel override
        if _ACTIVE.cudnn_was is not None:
            torch.backends.cuda.enable_cudnn_sdp(_ACTIVE.cudnn_was)
    _ACTIVE.name, _ACTIVE.cudnn_was = "sdpa", None


# --- the kernels: aten's flash SDPA ops, (B, H, S, D) in and out, run by FA4 in (B, S, H, D) ---------
def _bshd(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2)


def _sdpa_flash_forward(query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *, scale=None):
    if dropout_p != 0.0 or return_debug_mask:
        raise AttentionBackendError("attention_backend 'fa4': FlashAttention-4 has no dropout or debug mask; "
                                    "use attention_backend 'sdpa'")
    interface = fa4_module()
    # Outputs laid out as aten's shape rules say (like the query), which compiled graphs rely on.
    out = torch.empty_like(query)
    result = interface._flash_attn_fwd(_bshd(query), _bshd(key), _bshd(value), softmax_scale=scale,
                                       causal=is_causal, return_lse=True, out=_bshd(out))
    _into(out, result[0])
    lse = result[1]  # (B, H, S) float32
    fa4_calls["forward"] += 1
    seed = torch.zeros(2, dtype=torch.uint64, device=query.device)
    offset = torch.zeros((), dtype=torch.uint64, device=query.device)
    debug = torch.empty(0, dtype=query.dtype, device=query.device)
    return out, lse.contiguous(), None, None, query.size(2), key.size(2), seed, offset, debug


def _sdpa_flash_backward(grad_out, query, key, value, out, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k,
                         dropout_p, is_causal, philox_seed, philox_offset, *, scale=None):
    interface = fa4_module()
    dq, dk, dv = (torch.empty_like(t) for t in (query, key, value))
    grads = interface._flash_attn_bwd(_bshd(query), _bshd(key), _bshd(value), _bshd(out), _bshd(grad_out),
                                      logsumexp.contiguous(), softmax_scale=scale, causal=is_causal,
                                      dq=_bshd(dq), dk=_bshd(dk), dv=_bshd(dv))
    for mine, got in zip((dq, dk, dv), grads[:3]):
        _into(mine, got)
    fa4_calls["backward"] += 1
    return dq, dk, dv


def _into(mine: torch.Tensor, got: torch.Tensor) -> None:
    """FA4 wrote into the (B, S, H, D) view of ``mine`` unless it returned another tensor: copy that."""
    if got.data_ptr() != mine.data_ptr():
        mine.copy_(_bshd(got))


def _register_fa4_kernels():
    import inspect

    lib = torch.library.Library("aten", "IMPL", "CUDA")  # noqa: TOR901  (overrides aten's CUDA kernels)
    override = {"allow_override": True} if "allow_override" in inspect.signature(lib.impl).parameters else {}
    lib.impl("_scaled_dot_product_flash_attention", _sdpa_flash_forward, "CUDA", **override)
    lib.impl("_scaled_dot_product_flash_attention_backward", _sdpa_flash_backward, "CUDA", **override)
    return lib
