"""Speed helpers the trainer can adopt: regional compilation, a shared compile cache, fused AdamW,
and freeing gradients between updates. (LoRA is peft's: `dpdmd/backbones/diffusers_backbone.py`.)

Measured with ``bench/gpu_step.py`` (results in ``bench/README_gpu.md``). Nothing here changes the
method: the same losses and updates run, only faster or in less memory.

- `compile_repeated_blocks(net)`: ``torch.compile`` each repeated block (SD3's
  ``JointTransformerBlock``, the UNet's ``BasicTransformerBlock``) instead of the whole model. The
  blocks share one compiled graph per (block variant, dtype, grad mode, shape), so compiling costs
  a few graphs instead of one huge one. diffusers 0.42's own ``compile_repeated_blocks`` refuses
  ``SD3Transformer2DModel`` (its ``_repeated_blocks`` list is empty), hence this helper.
- `configure_compile_cache(dir)`: point Inductor's (and Triton's) on-disk caches at one folder
  shared by all trials, so only the first trial on a machine pays the full compile.
- `use_fused_adamw(opt)`: the same AdamW with ``fused=True`` (one kernel set for all tensors and no
  full-size temporaries, unlike the default ``foreach`` path).
- `checkpoint_every(net, n)`: diffusers' gradient checkpointing on every n-th checkpointable block
  only (n = 1: all, as ``enable_gradient_checkpointing()``): less recompute for more memory.
- `free_grads(opt)`: drop gradients after a step. `DPDMD._step` zeroes them (set to None) before
  each backward anyway, so freeing them right after the step changes nothing but memory: with full
  fine-tuning it keeps only one network's gradients alive at a time (9 GB for SD3.5-M in fp32).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import torch
from torch import nn

# The repeated block classes of the diffusers backbones (class name of the model -> block classes).
REPEATED_BLOCKS: dict[str, tuple[str, ...]] = {
    "SD3Transformer2DModel": ("JointTransformerBlock",),
    "UNet2DConditionModel": ("BasicTransformerBlock",),
}

def configure_compile_cache(cache_dir: str | os.PathLike | None = None, *, recompile_limit: int = 64,
                            autotune_pointwise: bool = False) -> None:
    """Use one on-disk compile cache for every trial (call before the first compile).

    Args:
        cache_dir: folder for Inductor's FX-graph / AOTAutograd caches and Triton's kernels; a folder
            on the node's local disk shared by all trials (None: keep Inductor's default, which is
            per user under /tmp and already shared by the processes of one machine).
        recompile_limit: graphs kept per code object. Regional compilation of one block class yields
            one graph per (block variant, dtype, grad mode, shape): SD3.5-M has three variants
            (dual attention, plain, last) and DP-DMD runs each in three modes, more than the default 8.
        autotune_pointwise: let Inductor benchmark several launch configs of each elementwise kernel
            (its default). Off here: on the H100 (SD3.5-M full, 1024 px, batch 4) Inductor's
            benchmarking took 2.4 s of the cold compile without it against 8.8 s with it, and the
            cycle ran 8.79 s against 8.76 s (`bench/README_gpu.md`, section 4).
    """
    if cache_dir is not None:
        cache_dir = os.fspath(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(cache_dir, "triton"))
    import torch._dynamo  # noqa: F401  (imports the config modules)

    dynamo = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), recompile_limit))
    if hasattr(dynamo, "accumulated_recompile_limit"):
        dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 16 * recompile_limit)
    import torch._inductor.config as inductor

    inductor.triton.autotune_pointwise = autotune_pointwise
    if hasattr(inductor, "fx_graph_cache"):
        inductor.fx_graph_cache = True
    import torch._functorch.config as functorch

    if hasattr(functorch, "enable_autograd_cache"):
        functorch.enable_autograd_cache = True


def repeated_block_classes(net: nn.Module) -> tuple[str, ...]:
    """The repeated block class names of ``net`` (its own ``_repeated_blocks`` if set; through a
    peft wrapper to the model it wraps)."""
    if hasattr(net, "get_base_model"):
        net = net.get_base_model()
    own = tuple(getattr(net, "_repeated_blocks", ()) or ())
    return own or REPEATED_BLOCKS.get(type(net).__name__, ())


def compile_repeated_blocks(net: nn.Module, class_names: Iterable[str] | None = None, *,
                            exclude: Callable[[nn.Module], bool] | None = None, **compile_kwargs) -> int:
    """``torch.compile`` every submodule whose class is a repeated block, in place.

    Args:
        net: a diffusers model (or any module).
        class_names: block classes to compile (default: `repeated_block_classes(net)`).
        exclude: blocks for which this returns True stay eager (e.g. a variant used once, whose
            graphs would cost more compile time than they save).
        compile_kwargs: passed to ``nn.Module.compile`` (e.g. ``dynamic=False``, ``backend``, ``mode``).
    Returns:
        How many modules were compiled.
    """
    names = tuple(class_names) if class_names is not None else repeated_block_classes(net)
    if not names:
        raise ValueError(f"no repeated blocks known for {type(net).__name__}; pass class_names=(...)")
    count = 0
    for module in net.modules():
        if type(module).__name__ in names and not (exclude and exclude(module)):
            module.compile(**compile_kwargs)
            count += 1
    if count == 0:
        raise ValueError(f"{type(net).__name__} has no submodule of class {names}")
    return count


def checkpoint_every(net: nn.Module, every: int) -> None:
    """Gradient checkpointing on every ``every``-th block that the diffusers model checkpoints.

    diffusers hands each checkpointable block (SD3's transformer blocks; the UNet's resnets and
    attention blocks) to ``_gradient_checkpointing_func``; this one recomputes only the blocks whose
    first-seen position in the forward pass is a multiple of ``every`` and runs the others plainly,
    keeping their activations. The forward order is fixed, so the choice is the same every call.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    order: dict[int, int] = {}

    def maybe_checkpoint(module, *args):
        position = order.setdefault(id(module), len(order))
        if position % every:
            return module(*args)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    net.enable_gradient_checkpointing(maybe_checkpoint)


def use_fused_adamw(opt: torch.optim.Optimizer) -> torch.optim.AdamW:
    """A fused AdamW over the same parameter groups and settings as ``opt`` (before its first step)."""
    if len(opt.state):
        raise ValueError("use_fused_adamw must be called before the first optimiser step (state would be lost)")
    groups = [{k: v for k, v in g.items() if k not in ("foreach", "fused")} for g in opt.param_groups]
    return torch.optim.AdamW(groups, fused=True)


def free_grads(*opts: torch.optim.Optimizer) -> None:
    """Set the gradients of the optimisers' parameters to None (after the step)."""
    for opt in opts:
        opt.zero_grad(set_to_none=True)
