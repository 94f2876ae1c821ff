"""GPU memory of one DP-DMD trial, per GPU: weights, gradients, optimiser, activations, teacher.

`estimate(model, train_mode, optimizer, gpus, batch, pixels)` is analytic from parameter counts,
with the activations calibrated against peaks measured by ``bench/gpu_step.py`` (bench/README_gpu.md);
`memory_table` prints it for SD3.5-M, SD3.5-L and SDXL, and ``python -m tune.search --dry-run``
uses `fit_line` to say whether a space's trial fits its share of a GPU.

What each term holds (P: the network's parameters; L: its LoRA parameters; N: GPUs of the trial):

- teacher: bf16 frozen weights, 2P bytes, one replica per GPU.
- weights: ``full``: student + fake score, fp32 master weights, 2 x 4P, sharded over N (FSDP);
  ``lora``: their frozen bf16 bases (2 x 2P, replicated) + fp32 adapters (2 x 4L).
- gradients: fp32, of one network at a time (the trainer frees them after each step): 4P / N or 4L.
- optimizer: both networks' AdamW moments: ``adamw`` 2 x 8 bytes a trained parameter,
  ``adamw8bit`` 2 x 2 (+ a 4-byte scale per 256), ``adamw_offload`` 0 (on the host).
- activations: what one update keeps alive with gradient checkpointing, calibrated per sample at
  1024 px from the measured peak (peak - the terms above), scaled with batch x (pixels / 1024)^2
  (tokens; attention is flash, linear in tokens), and for SD3.5-L by its width x depth against
  SD3.5-M's. It also holds the allocator's transients (e.g. the optimiser step's).

- build: the peak while the networks are built, before training: the teacher plus the student's
  and the fake score's weights as each GPU holds them (``teacher + weights``). Sharded full
  fine-tuning builds the copies on the meta device and allocates only each GPU's shards
  (`dpdmd.parallel.sharding`), so the build never exceeds the training ``total``; built whole before
  sharding (as before) it was ``2P + 8P`` on every GPU, 75 GiB for SD3.5-L whatever N.
  `fit_line` and `memory_table` compare ``max(total, build)`` with the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from .optimizers import OPTIMIZERS

GIB = 2**30
GPU_GIB = 79.0  # what torch can allocate on an "80 GB" H100 (torch.cuda.mem_get_info: 79.1 GiB)


@dataclass(frozen=True)
class Shape:
    """A network's size. params: all weights; lora: LoRA rank-64 parameters on the attention
    projections (bench/gpu_step.py targets); act_gib_per_sample: activations at 1024 px (see module doc)."""

    params: float
    lora: float
    act_gib_per_sample: float


# Calibration (H200, bench/gpu_step.py, 1024 px, batch 4, eager, fused AdamW, checkpointing):
# sd35m full 72.4 GiB peak -> 9.8 GiB activations; sd35m LoRA 22.0 -> 9.1; sdxl full 81.0 -> 9.2;
# sdxl LoRA 26.5 -> 10.7. Per sample: the mean of full and LoRA of each model, / 4.
_SD35M_ACT = (9.8 + 9.1) / 2 / 4
SHAPES: dict[str, Shape] = {
    "sd35m": Shape(params=2.24e9, lora=47.8e6, act_gib_per_sample=_SD35M_ACT),
    # 38 layers of width 2432 against SD3.5-M's 24 of 1536: x 2.51 activations per token (estimate).
    "sd35l": Shape(params=8.06e9, lora=(2432 * 38) / (1536 * 24) * 47.8e6,
                   act_gib_per_sample=_SD35M_ACT * (2432 * 38) / (1536 * 24)),
    "sdxl": Shape(params=2.57e9, lora=92.9e6, act_gib_per_sample=(9.2 + 10.7) / 2 / 4),
}
OPT_BYTES = {"adamw": 8.0, "adamw8bit": 2.0 + 8.0 / 256, "adamw_offload": 0.0}  # per trained param, per network


def estimate(model: str, train_mode: str = "full", optimizer: str = "adamw", gpus: int = 1,
             batch: int = 4, pixels: int = 1024) -> dict[str, float]:
    """GiB per GPU of each term and their ``total`` (see the module doc).

    Args:
        model: a key of `SHAPES` ("sd35m", "sd35l", "sdxl").
        train_mode: "full" (sharded over ``gpus`` when > 1, as FSDP does) or "lora" (replicated).
        optimizer: one of `dpdmd.parallel.optimizers.OPTIMIZERS`.
        gpus: GPUs of the trial. batch: samples per GPU. pixels: image side.
    """
    if model not in SHAPES:
        raise ValueError(f"model {model!r}: the memory model knows {', '.join(SHAPES)}")
    if train_mode not in ("full", "lora"):
        raise ValueError(f"train_mode {train_mode!r}: use 'full' or 'lora'")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    s = SHAPES[model]
    if train_mode == "full":
        trained, shard = s.params, gpus
        weights = 2 * 4 * s.params / shard
    else:
        trained, shard = s.lora, 1
        weights = 2 * 2 * s.params + 2 * 4 * s.lora
    terms = {"teacher": 2 * s.params, "weights": weights, "gradients": 4 * trained / shard,
             "optimizer": 2 * OPT_BYTES[optimizer] * trained / shard}
    out = {k: v / GIB for k, v in terms.items()}
    out["activations"] = s.act_gib_per_sample * batch * (pixels / 1024) ** 2
    out["total"] = sum(out.values())
    out["build"] = out["teacher"] + out["weights"]  # shards only: the meta-device build (module doc)
    return out


def memory_table(models=("sd35m", "sd35l", "sdxl"), gpus=(1, 2, 8), batch: int = 4, pixels: int = 1024,
                 gpu_gib: float = GPU_GIB) -> str:
    """Markdown table of `estimate` for every model, mode, optimiser and GPU count."""
    head = ("| model | mode | optimizer | GPUs | teacher | weights | gradients | optimizer | activations | "
            "total GiB/GPU | build GiB/GPU | fits |")
    rows = [head, "|" + "---|" * 12]
    for model in models:
        for mode in ("full", "lora"):
            for opt in OPTIMIZERS:
                for n in gpus:
                    e = estimate(model, mode, opt, n, batch, pixels)
                    cells = [model, mode, opt, str(n)] + [f"{e[k]:.1f}" for k in
                             ("teacher", "weights", "gradients", "optimizer", "activations", "total", "build")]
                    fits = max(e["total"], e["build"]) <= gpu_gib
                    rows.append("| " + " | ".join(cells + ["yes" if fits else "no"]) + " |")
    return "\n".join(rows)


def fit_line(backbone: str, options: dict, train: dict, resources: dict, gpu_gib: float = GPU_GIB) -> str | None:
    """One line for ``--dry-run``: the trial's estimated GiB per GPU against its share of a GPU.

    ``options``: the backbone's options (train_mode, resolution); ``train``: the trial's training
    settings (batch_size, optimizer); ``resources``: the space's per-trial resources (gpu: a
    fraction shares one GPU; workers: N GPUs). None for backbones the model does not know."""
    if backbone not in SHAPES:
        return None
    mode = options.get("train_mode", "full")
    workers = int(resources.get("workers", 1) or 1)
    share = float(resources.get("gpu", 0) or 0)
    e = estimate(backbone, mode, train.get("optimizer", "adamw"), workers,
                 int(train.get("batch_size", 4)), int(options.get("resolution", 1024)))
    room = min(share, 1.0) * gpu_gib
    verdict = "fits" if max(e["total"], e["build"]) <= room else "DOES NOT FIT"
    return (f"memory ({backbone}, {mode}, {train.get('optimizer', 'adamw')}, {workers} GPU(s), batch "
            f"{train.get('batch_size', 4)}): ~{e['total']:.1f} GiB per GPU against {room:.1f} GiB "
            f"(gpu {share:g} of {gpu_gib:g} GiB): {verdict}")


if __name__ == "__main__":
    print(memory_table())
