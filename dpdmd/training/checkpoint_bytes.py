"""The bytes of what a DP-DMD run writes, from parameter counts: its resumable state and its student.

- **state** (``state.pt``, `dpdmd.training.checkpoints.save_checkpoint` of `DPDMD.state_dict`): the trainable
  weights of the student and of the fake score in float32 (4 bytes each) and both networks'
  optimiser moments (AdamW: two float32 moments, 8 bytes a trained parameter; ``adamw8bit``:
  two 8-bit moments plus a float32 scale per 256 values; ``adamw_offload``: float32 moments,
  held on the host but saved all the same). Full fine-tuning trains every weight; LoRA only the
  adapters. So ``2 x T x (4 + moments)``: 24 bytes a trained parameter with AdamW.
- **student** (`dpdmd.student.save_student`): full fine-tuning, the whole network in the dtype it
  is served in (the teacher's ``weights_dtype``, bf16 by default; the digits backbones float32);
  LoRA, the adapter alone, in float32 as trained.

Config files, the scheduler and the manifest add a few kilobytes (measured in
``docs/results/checkpoint-sizes.md``). `count_parameters` counts a diffusers network's weights and
its LoRA adapters on the meta device, from its config alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["DTYPE_BYTES", "MOMENT_BYTES", "count_parameters", "state_bytes", "student_bytes"]

#: Bytes of both optimiser moments, per trained parameter, as saved.
MOMENT_BYTES = {"adamw": 8.0, "adamw8bit": 2.0 + 8.0 / 256, "adamw_offload": 8.0}
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


def state_bytes(trainable: int, *, optimizer: str = "adamw") -> int:
    """Bytes of one resumable state: student + fake score, ``trainable`` parameters each."""
    if optimizer not in MOMENT_BYTES:
        raise ValueError(f"optimizer {optimizer!r}: use one of {', '.join(MOMENT_BYTES)}")
    return int(round(2 * trainable * (4 + MOMENT_BYTES[optimizer])))


def student_bytes(*, params: int, train_mode: str = "full", lora: int | None = None, dtype: str = "bfloat16") -> int:
    """Bytes of one saved student: ``params`` weights in ``dtype`` (full), or the ``lora`` adapter
    parameters in float32 (``train_mode="lora"``)."""
    if train_mode == "lora":
        if lora is None:
            raise ValueError("a LoRA student's size needs its adapter's parameter count (lora=...)")
        return 4 * int(lora)
    if train_mode != "full":
        raise ValueError(f"train_mode {train_mode!r}: use 'full' or 'lora'")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype {dtype!r}: use one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype] * int(params)


def count_parameters(class_name: str, config: Mapping, *, lora_rank: int | None = None,
                     lora_targets: Sequence[str] = ()) -> dict[str, int]:
    """``{"params": P, "lora": L}``: the weights of the diffusers network ``class_name`` built from
    ``config`` (its ``config.json``) on the meta device, and those of LoRA adapters of rank
    ``lora_rank`` on ``lora_targets`` as `DiffusersBackbone.make_trainable` adds them (peft's
    `get_peft_model`); L is 0 without a rank. Nothing is allocated."""
    import diffusers
    import torch

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise ValueError(f"{class_name!r} is not a diffusers model class (e.g. SD3Transformer2DModel, "
                         "UNet2DConditionModel)")
    with torch.device("meta"):
        net = cls(**dict(config))
        params = sum(p.numel() for p in net.parameters())
        lora = 0
        if lora_rank:
            from peft import LoraConfig, get_peft_model

            peft = get_peft_model(net, LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=list(lora_targets)))
            lora = sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n)
    return {"params": int(params), "lora": int(lora)}
