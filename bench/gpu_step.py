"""Time one DP-DMD iteration of the project's own code on a GPU (issue 4, section 5).

Runs `dpdmd.method.DPDMD` (``student_update``, ``fake_update``) and the teacher anchor from
`dpdmd.anchors` with random-weight networks of the real shapes:

- ``sd35m``: an SD3.5-Medium-shaped `SD3Transformer2DModel` (24 layers, 24 heads of 64, dual
  attention in layers 0-12, RMS qk-norm; 2.24 B parameters), prompts (B, 333, 4096) + (B, 2048);
- ``sdxl``: an SDXL-shaped `UNet2DConditionModel` (2.57 B), prompts (B, 77, 2048), text_embeds
  (B, 1280), time_ids (B, 6).

Teacher in bf16 weights; student and fake score train with fp32 master weights under bf16 autocast
(``DPDMD(mixed_precision="bf16")``), gradient checkpointing on their grad-mode forwards. Setups:
``full`` (full fine-tuning, AdamW over every weight) and ``lora`` (frozen bf16 base + fp32 LoRA
factors, peft's LoRA). For each (model, setup, resolution, batch) it reports the
phases of `DPDMD.seconds` (rollout, dmd, student_backward, fake), the anchor (K teacher steps with
CFG), peak memory, and TFLOP/s from ``FlopCounterMode`` against a bf16 matmul ceiling measured in
the same run. "model" FLOPs leave out the forward that gradient checkpointing recomputes; "hw"
FLOPs count it. A *cycle* is what the trainer does per student update: the anchor, one student
update and five fake-score updates (``fake_updates = 5``).

    python bench/gpu_step.py --smoke                       # CPU, tiny models, a minute
    python bench/gpu_step.py --models sd35m,sdxl --setups full,lora --configs 1024:4,512:1
    python bench/gpu_step.py --models sd35m --setups full --configs 1024:4 \
        --compile --fused-adamw --eager-baseline --compile-cache /tmp/cc   # regional compile

Results: a markdown table on stdout (last) and ``gpu_step_<tag>.{json,md}`` in ``--out`` ($OUT).
"""

from __future__ import annotations


import argparse
import contextlib
import copy
import gc
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from peft import LoraConfig, inject_adapter_in_model
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpdmd.parallel import acceleration as acc  # noqa: E402
from dpdmd.anchors import LocalAnchors, teacher_calls_for  # noqa: E402
from dpdmd.parallel.attention_impl import ATTENTION_BACKENDS, fa4_calls, use_attention_backend  # noqa: E402
from dpdmd.backbones.base import Backbone, Embeddings  # noqa: E402
from dpdmd.parallel.fp8 import FP8_MODES, apply_fp8  # noqa: E402
from dpdmd.method import DPDMD  # noqa: E402
from dpdmd.parallel.optimizers import OPTIMIZERS  # noqa: E402
from dpdmd.schedules import EpsSchedule, FlowSchedule  # noqa: E402
from dpdmd.stream import iteration_batch  # noqa: E402

# LoRA targets as in diffusers' SD3 / SDXL LoRA training scripts (attention projections).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "SD3Transformer2DModel": ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj",
                              "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out", "attn2.to_q",
                              "attn2.to_k", "attn2.to_v", "attn2.to_out.0"),
    "UNet2DConditionModel": ("to_q", "to_k", "to_v", "to_out.0"),
}

FAKE_UPDATES = 5  # fake-score updates per student update (method.md)
OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


# --- the networks, real shapes or tiny (smoke) -----------------------------------------------------
def sd35m_config(tiny: bool) -> dict:
    if tiny:
        return dict(sample_size=16, patch_size=2, in_channels=16, num_layers=3, attention_head_dim=16,
                    num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=32,
                    pooled_projection_dim=16, out_channels=16, pos_embed_max_size=32,
                    dual_attention_layers=(0,), qk_norm="rms_norm")
    return dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")


def sdxl_config(tiny: bool) -> dict:
    common = dict(in_channels=4, out_channels=4, layers_per_block=2, use_linear_projection=True,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  addition_embed_type="text_time", act_fn="silu", norm_num_groups=32)
    if tiny:
        return dict(common, sample_size=16, block_out_channels=(32, 64, 64), transformer_layers_per_block=(1, 1, 2),
                    cross_attention_dim=32, attention_head_dim=(2, 4, 4), addition_time_embed_dim=8,
                    projection_class_embeddings_input_dim=8 * 6 + 16)
    return dict(common, sample_size=128, block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
                cross_attention_dim=2048, attention_head_dim=(5, 10, 20), addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816)


class RandomDiffusersBackbone(Backbone):
    """The `Backbone` interface over a random-weight SD3.5-M- or SDXL-shaped network.

    Teacher: bf16 weights, frozen. Student / fake score: ``setup="full"``: fp32 copies, all weights
    trained; ``setup="lora"``: bf16 frozen copies with fp32 LoRA factors. Every network call runs
    under bf16 autocast (so the anchor and the DMD step use the same teacher kernels).
    """

    def __init__(self, *, model: str, setup: str, device: torch.device, tiny: bool = False,
                 lora_rank: int = 64, grad_ckpt: bool = True, ckpt_every: int = 1, seed: int = 0):
        if model not in ("sd35m", "sdxl"):
            raise ValueError(f"model must be sd35m or sdxl, got {model!r}")
        if setup not in ("full", "lora"):
            raise ValueError(f"setup must be full or lora, got {setup!r}")
        self.name, self.model, self.setup, self.device, self.tiny = model, model, setup, device, tiny
        self.lora_rank, self.grad_ckpt, self.ckpt_every, self.seed = lora_rank, grad_ckpt, ckpt_every, seed
        if model == "sd35m":
            self.schedule = FlowSchedule(shift=3.0, teacher_steps=30)
            self.channels, self.cfg_scale = 16, 3.5
            self.text_len = 8 if tiny else 333
            self.dims = (32, 16) if tiny else (4096, 2048)  # joint_attention_dim, pooled
        else:
            self.schedule = EpsSchedule(teacher_steps=30)
            self.channels, self.cfg_scale = 4, 5.0
            self.text_len = 8 if tiny else 77
            self.dims = (32, 16) if tiny else (2048, 1280)  # cross_attention_dim, text_embeds
        self.latent_shape = (self.channels, 16, 16)
        self.default_lr = 1e-5
        self.default_prompts = tuple(f"prompt {i}" for i in range(16))

    def set_resolution(self, pixels: int) -> None:
        self.latent_shape = (self.channels, pixels // 8, pixels // 8)

    # --- prompts: random embeddings of the real shapes ---
    def validate_prompts(self, prompts: Sequence[str]) -> None:
        return None

    def encode_prompts(self, prompts: Sequence[str]) -> Embeddings:
        g = torch.Generator().manual_seed(self.seed + 7919 * len(prompts) + (0 if prompts == [""] else 1))
        b, (d_text, d_pool) = len(prompts), self.dims
        emb = {"encoder_hidden_states": torch.randn(b, self.text_len, d_text, generator=g)}
        if self.model == "sd35m":
            emb["pooled_projections"] = torch.randn(b, d_pool, generator=g)
        else:
            emb["text_embeds"] = torch.randn(b, d_pool, generator=g)
            size = 8 * self.latent_shape[1]
            emb["time_ids"] = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32).repeat(b, 1)
        return {k: v.to(self.device) for k, v in emb.items()}

    # --- networks ---
    def load_teacher(self) -> nn.Module:
        from diffusers import SD3Transformer2DModel, UNet2DConditionModel

        torch.manual_seed(self.seed)
        cls, cfg = ((SD3Transformer2DModel, sd35m_config(self.tiny)) if self.model == "sd35m"
                    else (UNet2DConditionModel, sdxl_config(self.tiny)))
        with torch.device(self.device):  # initialise on the GPU: seconds instead of minutes
            return cls(**cfg)

    @property
    def trains_teacher_copies(self) -> bool:
        return self.setup == "full"

    def build_networks(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        base = self.load_teacher()  # fp32
        # bf16 teacher (and LoRA bases); on the meta device (FLOP counting, `meta_flops`) all stay
        # fp32: the counts do not depend on the dtype, and meta tensors have no autocast.
        low = torch.float32 if self.device.type == "meta" else torch.bfloat16
        if self.setup == "full" and self.trainable_on_meta:  # sharded: shapes only, shards loaded from the teacher
            teacher = base.to(low)
            student, fake = (self.copy_teacher(teacher).to(torch.float32).train() for _ in range(2))
        elif self.setup == "full":
            student, fake = copy.deepcopy(base).train(), copy.deepcopy(base).train()
            teacher = base.to(low)
        else:
            teacher = base.to(low)
            student, fake = copy.deepcopy(teacher).train(), copy.deepcopy(teacher).train()
            for net in (student, fake):  # peft's LoRA, as the diffusers backbones use
                net.requires_grad_(False)
                inject_adapter_in_model(LoraConfig(r=self.lora_rank, lora_alpha=self.lora_rank,
                                                   target_modules=list(LORA_TARGETS[type(net).__name__])), net)
                for p in net.parameters():
                    if p.requires_grad:
                        p.data = p.data.float()  # fp32 master weights for the adapters
        for net in (student, fake):
            if self.setup == "full":
                net.requires_grad_(True)
            if self.grad_ckpt:
                acc.checkpoint_every(net, self.ckpt_every)
        teacher.requires_grad_(False).eval()
        return teacher, student, fake

    def predict(self, net: nn.Module, x: torch.Tensor, level, emb: Embeddings) -> torch.Tensor:
        t = torch.full((x.shape[0],), self.schedule.net_timestep(level), device=x.device)
        bf16 = x.device.type != "meta"
        with torch.autocast(x.device.type if bf16 else "cpu", dtype=torch.bfloat16, enabled=bf16):
            if self.model == "sd35m":
                out = net(hidden_states=x, timestep=t, encoder_hidden_states=emb["encoder_hidden_states"],
                          pooled_projections=emb["pooled_projections"], return_dict=False)[0]
            else:
                out = net(x, t, encoder_hidden_states=emb["encoder_hidden_states"], return_dict=False,
                          added_cond_kwargs={"text_embeds": emb["text_embeds"], "time_ids": emb["time_ids"]})[0]
        return out.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the benchmark backbone has no VAE")


# --- measurement helpers --------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_ceiling(device: torch.device, n: int, reps: int = 20, *, warmup_s: float = 0.0, batch: int = 1) -> float:
    """bf16 n x n x n matmul rate in TFLOP/s (median over ``reps`` timings of ``batch`` back-to-back
    products, random data), after ``warmup_s`` seconds of products (the GPU's clocks ramp up under
    load). The defaults (no warm-up, one product per timing) are how every row before issue 11's
    `--ceiling-check` was measured."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        for _ in range(10):
            a @ b
        sync(device)
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(batch):
            a @ b
        sync(device)
        times.append((time.perf_counter() - t0) / batch)
    return 2 * n**3 / statistics.median(times) / 1e12


def ceiling_check(device: torch.device, n: int, repeats: int, warmup_s: float = 2.0) -> dict[str, list[float]]:
    """The ceiling measured ``repeats`` times each way: as the rows are (no warm-up, one product per
    timing) and steady (``warmup_s`` of warm-up, 20 back-to-back products per timing)."""
    out: dict[str, list[float]] = {"as_rows": [], "steady": []}
    for _ in range(repeats):
        out["as_rows"].append(matmul_ceiling(device, n))
        out["steady"].append(matmul_ceiling(device, n, warmup_s=warmup_s, batch=20))
    return out


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def stance(eager: bool):
    """Force eager execution of compiled blocks (FLOP counting, eager baseline in one process)."""
    if eager and hasattr(torch, "compiler") and hasattr(torch.compiler, "set_stance"):
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()


def meta_flops(args, model: str, setup: str, pixels: int, batch: int) -> dict[str, int]:
    """FLOPs of one guided teacher call, one plain forward, the anchor and each DP-DMD phase.

    Counted with ``FlopCounterMode`` on the meta device: networks of the same shapes whose tensors
    hold no data, so counting costs no GPU memory and never competes with training for it. (The
    earlier count ran on the GPU next to the training state: ``FlopCounterMode``'s module tracker
    hooks every module output, and the SD3.5-M full update ran out of memory on an 80 GB H100
    under it although training alone fits.) The phases mirror `DPDMD.student_update` and
    `DPDMD.fake_update` through the same methods (rollout, guided teacher, fake score, losses,
    backward with the same gradient checkpointing); the optimiser step has no FLOPs counted
    (elementwise) and needs real numbers, so it is left out. Returns {phase: FLOPs} at ``batch``.
    """
    from dpdmd.losses import diversity_loss, dmd_loss, fake_score_loss

    meta = torch.device("meta")
    # With --ckpt-every > 1 the count runs without checkpointing: model FLOPs only (the recompute of
    # a block subset is not separated out; the "hw" column then equals "model").
    bb = RandomDiffusersBackbone(model=model, setup=setup, device=meta, tiny=args.smoke, lora_rank=args.lora_rank,
                                 grad_ckpt=not args.no_grad_ckpt and args.ckpt_every == 1)
    bb.set_resolution(pixels)
    dp = DPDMD(bb, lambda_div=0.05, lr_student=1e-5, lr_fake=1e-5)  # fp32 on meta: no autocast there
    sched = bb.schedule
    b = iteration_batch(seed=0, iteration=0, prompts=bb.default_prompts, batch_size=batch,
                        latent_shape=bb.latent_shape, num_dmd_levels=len(sched.dmd_levels))
    cond, uncond = bb.encode_prompts(b.prompts), bb.unconditional(batch)
    x1, eps = b.x1.to(meta), b.dmd_eps.to(meta)
    level = sched.dmd_levels[b.dmd_level_index]
    flops: dict[str, int] = {}

    @contextlib.contextmanager
    def count(name: str):
        with FlopCounterMode(display=False) as c:
            yield
        flops[name] = c.get_total_flops()

    with torch.no_grad():
        with count("guided"):
            dp._guided_teacher(x1, sched.teacher_levels[0], cond, uncond)
        with count("forward"):
            dp._predict(dp.student, x1, sched.student_levels[0], cond)
    with count("rollout"):
        out1, x_s = dp.rollout(x1, cond)
        loss_div = diversity_loss(sched.first_step_prediction(x1, out1), torch.zeros_like(x1))
    with count("dmd"), torch.no_grad():
        x_t = sched.add_noise(x_s.detach(), eps, level)
        real_out = dp._guided_teacher(x_t, level, cond, uncond)
        fake_out = dp._predict(dp.fake, x_t, level, cond)
        grad = sched.dmd_gradient(x_s.detach(), x_t, level, real_out, fake_out)
    with count("student_backward"):
        (dmd_loss(x_s, grad) + dp.lambda_div * loss_div).backward()
    with count("fake"):
        x_s = dp.sample(x1, cond)
        x_t = sched.add_noise(x_s, eps, level)
        fake_score_loss(dp._predict(dp.fake, x_t, level, cond), sched.fake_target(x_s, eps)).backward()
    flops["anchor"] = flops["guided"] * teacher_calls_for([args.anchor_k], sched)
    return flops


class Runner:
    """One (model, setup): builds the networks once and measures each (resolution, batch)."""

    def __init__(self, args, model: str, setup: str, device: torch.device):
        self.args, self.device = args, device
        self.backbone = RandomDiffusersBackbone(model=model, setup=setup, device=device, tiny=args.smoke,
                                                lora_rank=args.lora_rank, grad_ckpt=not args.no_grad_ckpt, ckpt_every=args.ckpt_every)
        t0 = time.perf_counter()
        self.dp = DPDMD(self.backbone, lambda_div=0.05, lr_student=1e-5, lr_fake=1e-5,
                        mixed_precision="bf16", optimizer=args.optimizer)
        self.build_s = time.perf_counter() - t0
        self.dp.synchronize = True
        if args.fused_adamw and args.optimizer == "adamw":
            self.dp.opt_student = acc.use_fused_adamw(self.dp.opt_student)
            self.dp.opt_fake = acc.use_fused_adamw(self.dp.opt_fake)
        self.fp8_log = ""
        if args.fp8 != "none" or args.fp8_teacher:  # the library's own function (TrainConfig.fp8, fp8_teacher)
            self.fp8_log = apply_fp8(self.dp, args.fp8, teacher=args.fp8_teacher)
            print("#", self.fp8_log, flush=True)
        self.anchors = LocalAnchors(self.backbone, self.dp.teacher, args.anchor_k)
        self.compiled_blocks = 0
        self.trainable = sum(p.numel() for p in DPDMD.trainable(self.dp.student))

    def compile(self) -> None:
        kwargs = dict(dynamic=False, backend=self.args.compile_backend)
        if self.args.compile_mode != "default":
            kwargs["mode"] = self.args.compile_mode
        if self.args.eager_last_block:
            kwargs["exclude"] = lambda block: getattr(block, "context_pre_only", False)
        for net in (self.dp.teacher, self.dp.student, self.dp.fake):
            self.compiled_blocks += acc.compile_repeated_blocks(net, **kwargs)

    # --- the pieces of one iteration ---
    def anchor(self, batch, cond, uncond) -> tuple[torch.Tensor, float]:
        sync(self.device)
        t0 = time.perf_counter()
        target = self.anchors(batch, cond, uncond)
        sync(self.device)
        return target, time.perf_counter() - t0

    def student(self, batch, cond, uncond, target) -> dict[str, float]:
        self.dp.seconds.clear()
        self.dp.student_update(batch, cond, uncond, target)
        acc.free_grads(self.dp.opt_student)  # DPDMD zeroes them before the next backward anyway
        return dict(self.dp.seconds)

    def fake(self, batch, cond) -> float:
        self.dp.seconds.clear()
        self.dp.fake_update(batch, cond)
        acc.free_grads(self.dp.opt_fake)
        return self.dp.seconds["fake"]

    def count_flops(self, batch: int) -> dict[str, int]:
        """FLOPs of each phase, counted on the meta device (`meta_flops`): no GPU memory at all."""
        pixels = 8 * self.backbone.latent_shape[1]
        return meta_flops(self.args, self.backbone.model, self.backbone.setup, pixels, batch)

    def iteration(self, batches, i, cond, uncond, fakes: int, target=None) -> tuple[dict, torch.Tensor]:
        """Anchor (unless ``target`` is given) + one student update + ``fakes`` fake updates.

        Returns seconds per phase and the anchor's target."""
        anchor_s = 0.0
        if target is None:
            target, anchor_s = self.anchor(batches[i], cond, uncond)
        stu = self.student(batches[i], cond, uncond, target)
        fake = [self.fake(batches[i + 1 + j], cond) for j in range(fakes)]
        return {"anchor": anchor_s, **{k: stu.get(k, 0.0) for k in ("rollout", "dmd", "student_backward")},
                "student": sum(stu.values()), "fake": fake}, target

    def profile(self, pixels: int, batch: int) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        """GPU milliseconds per kernel class (`kernel_class`) in each phase of one more iteration
        (anchor, student update, one fake update; after `measure`, so every graph is compiled), and
        per kernel name."""
        from torch.profiler import ProfilerActivity, profile

        bb = self.backbone
        b = iteration_batch(seed=1, iteration=0, prompts=bb.default_prompts, batch_size=batch,
                            latent_shape=bb.latent_shape, num_dmd_levels=len(bb.schedule.dmd_levels))
        cond, uncond = bb.encode_prompts(b.prompts), bb.unconditional(batch)
        out, by_name, target = {}, {}, None

        def run(name):
            nonlocal target
            if name == "anchor":
                target = self.anchors(b, cond, uncond)
            elif name == "student":
                self.student(b, cond, uncond, target)
            else:
                self.fake(b, cond)

        cuda = self.device.type == "cuda"  # on the CPU (--smoke) ops' self times stand in for kernels
        for name in ("anchor", "student", "fake"):
            sync(self.device)
            with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
                run(name)
                sync(self.device)
            ms: dict[str, float] = {}
            names: dict[str, float] = {}
            for e in prof.events():
                if cuda and e.device_type == torch.autograd.DeviceType.CUDA:
                    us = e.device_time_total
                elif not cuda and e.device_type == torch.autograd.DeviceType.CPU:
                    us = e.self_cpu_time_total
                else:
                    continue
                kind = kernel_class(e.name)
                ms[kind] = ms.get(kind, 0.0) + us / 1e3
                names[e.name] = names.get(e.name, 0.0) + us / 1e3
            out[name], by_name[name] = ms, names
        return out, by_name

    def measure(self, pixels: int, batch: int, mode: str, flops: dict | None) -> tuple[dict, dict]:
        """Time the first iteration, one untimed and ``--reps`` steady ones at (pixels, batch) in
        ``mode`` ("eager" or "compiled"); returns the record and the FLOP counts (reused per mode)."""
        args, bb = self.args, self.backbone
        bb.set_resolution(pixels)
        n = 2 + args.reps * (1 + args.fake_reps) + 1 + args.fake_reps
        batches = [iteration_batch(seed=0, iteration=i, prompts=bb.default_prompts, batch_size=batch,
                                   latent_shape=bb.latent_shape, num_dmd_levels=len(bb.schedule.dmd_levels))
                   for i in range(n)]
        if flops is None:
            flops = self.count_flops(batch)
        cond, uncond = bb.encode_prompts(batches[0].prompts), bb.unconditional(batch)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with stance(mode == "eager"):
            t0 = time.perf_counter()
            first, target = self.iteration(batches, 0, cond, uncond, 1)
            first_wall = time.perf_counter() - t0
            # One untimed iteration more (anchor reused): one-off work that the first iteration
            # left (kernel loading, allocator growth) stays out of the steady numbers.
            self.iteration(batches, 0, cond, uncond, 1, target=target)
            steady, i = [], 2
            for _ in range(args.reps):
                steady.append(self.iteration(batches, i, cond, uncond, args.fake_reps)[0])
                i += 1 + args.fake_reps
        rec = {"first": first, "first_wall_s": first_wall, "steady": steady, "flops": flops}
        if mode == "compiled":
            rec["compile_counters"] = compile_counters()
            rec["compile_times"] = compile_times()
        rec.update(summarise(first, steady, flops, recomputed=(len(bb.schedule.student_levels) - 1
                                                                if bb.grad_ckpt and bb.ckpt_every == 1 else 0)))
        if self.device.type == "cuda":
            rec["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            rec["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        return rec, flops


def compile_counters() -> dict:
    """Dynamo / Inductor counters so far in this process (graphs, cache hits and misses)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    keep = ("stats", "inductor", "aot_autograd", "frames")
    out = {k: {str(kk): vv for kk, vv in counters[k].items() if isinstance(vv, (int, float))}
           for k in keep if k in counters}
    out["graph_breaks"] = sum(counters["graph_break"].values()) if "graph_break" in counters else 0
    return out


SDPA_BACKENDS = ("cudnn", "flash", "efficient")


@contextlib.contextmanager
def prefer_attention(name: str):
    """``scaled_dot_product_attention`` tries backend ``name`` first; the others stay enabled after
    it. Enter before the first compiled call: compiled regions take the choice when traced."""
    from torch.nn.attention import SDPBackend, _cur_sdpa_kernel_backends, sdpa_kernel

    first = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]
    rest = [b for b in _cur_sdpa_kernel_backends(with_priority=True) if b != first]
    with sdpa_kernel([first, *rest], set_priority=True):
        yield


# How often each profiled phase runs in one cycle.
CYCLE_WEIGHTS = {"anchor": 1, "student": 1, "fake": FAKE_UPDATES}


def kernel_class(name: str) -> str:
    """attention (cuDNN / flash SDPA), gemm (cuBLAS / CUTLASS), triton (Inductor's fused
    elementwise and reductions), optimizer (fused AdamW, clipping), other (eager elementwise, copies)."""
    low = name.lower()
    if low.startswith("triton"):  # before attention: fused names can mention the attention op they feed
        return "triton"
    if any(k in low for k in ("sdpa", "fmha", "flash", "attention")):
        return "attention"
    if any(k in low for k in ("gemm", "xmma", "nvjet", "cutlass", "cublas", "wgmma")):
        return "gemm"
    if any(k in low for k in ("adam", "multi_tensor", "lpnorm")):  # AdamW; clip_grad_norm's foreach norm
        return "optimizer"
    return "other"


def profile_table(prof: dict[str, dict[str, float]], flops: dict, ceiling: float) -> str:
    """Kernel-class milliseconds per phase (cycle = anchor + student + 5 fake) and the share of the
    ceiling that the cycle would reach if only attention and GEMM kernels took time."""
    kinds = ("attention", "gemm", "triton", "optimizer", "other")
    model = {"anchor": flops["anchor"], "fake": flops["fake"],
             "student": flops["rollout"] + flops["dmd"] + flops["student_backward"]}
    lines = ["| phase | " + " | ".join(f"{k} ms" for k in kinds) + " | kernels ms | attention+gemm % of ceiling |",
             "|---|" + "---|" * (len(kinds) + 2)]
    tot = {k: 0.0 for k in kinds}
    for phase, ms in prof.items():
        busy = sum(ms.values())
        core = ms.get("attention", 0.0) + ms.get("gemm", 0.0)
        for k in kinds:
            tot[k] += CYCLE_WEIGHTS[phase] * ms.get(k, 0.0)
        lines.append(f"| {phase} | " + " | ".join(f"{ms.get(k, 0.0):.0f}" for k in kinds)
                     + f" | {busy:.0f} | {100 * model[phase] / (core / 1e3) / 1e12 / ceiling:.0f} |")
    cycle_flops = sum(CYCLE_WEIGHTS[p] * model[p] for p in prof)
    core = tot["attention"] + tot["gemm"]
    lines.append("| cycle | " + " | ".join(f"{tot[k]:.0f}" for k in kinds)
                 + f" | {sum(tot.values()):.0f} | {100 * cycle_flops / (core / 1e3) / 1e12 / ceiling:.0f} |")
    return "\n".join(lines)


def top_kernels(by_name: dict[str, dict[str, float]], n: int) -> list[dict]:
    """The ``n`` kernels that take the most GPU time per cycle (anchor + student + 5 fake updates)."""
    total: dict[str, float] = {}
    for phase, names in by_name.items():
        for name, ms in names.items():
            total[name] = total.get(name, 0.0) + CYCLE_WEIGHTS[phase] * ms
    ranked = sorted(total.items(), key=lambda item: -item[1])[:n]
    return [{"name": name, "class": kernel_class(name), "cycle_ms": ms} for name, ms in ranked]


def compile_times() -> str:
    """Dynamo's table of seconds spent per compile phase in this process (where a cold compile goes)."""
    try:
        from torch._dynamo.utils import compile_times as times
        return str(times(repr="str", aggregate=True))
    except (ImportError, TypeError):
        return ""


def summarise(first: dict, steady: list[dict], flops: dict, recomputed: int) -> dict:
    """Medians per phase, FLOPs per phase (model / hw), and the cycle (anchor + student + 5 fake)."""
    s = {k: median([r[k] for r in steady]) for k in ("anchor", "rollout", "dmd", "student_backward", "student")}
    s["fake"] = median([f for r in steady for f in r["fake"]])
    fwd = flops["forward"] if recomputed else 0
    hw = {"anchor": flops["anchor"], "rollout": flops["rollout"], "dmd": flops["dmd"],
          "student_backward": flops["student_backward"], "fake": flops["fake"]}
    model = dict(hw, student_backward=hw["student_backward"] - recomputed * fwd, fake=hw["fake"] - (1 if recomputed else 0) * fwd)
    for f in (hw, model):
        f["student"] = f["rollout"] + f["dmd"] + f["student_backward"]
        f["cycle"] = f["anchor"] + f["student"] + FAKE_UPDATES * f["fake"]
        f["cycle_no_anchor"] = f["student"] + FAKE_UPDATES * f["fake"]
    s["cycle"] = s["anchor"] + s["student"] + FAKE_UPDATES * s["fake"]
    s["cycle_no_anchor"] = s["student"] + FAKE_UPDATES * s["fake"]
    tflops = {k: model[k] / s[k] / 1e12 for k in model}
    tflops_hw = {k: hw[k] / s[k] / 1e12 for k in hw}
    first_total = first["anchor"] + first["student"] + first["fake"][0]
    return {"seconds": s, "model_flops": model, "hw_flops": hw, "tflops": tflops, "tflops_hw": tflops_hw,
            "first_iteration_s": first_total,
            "first_minus_steady_s": first_total - (s["anchor"] + s["student"] + s["fake"])}


# --- the table ------------------------------------------------------------------------------------
COLUMNS = ("model", "setup", "px", "B", "mode", "anchor K s", "rollout s", "DMD s", "stu bwd+step s",
           "student s", "fake s", "cycle s", "peak GiB", "TF/s stu", "TF/s fake", "TF/s anchor",
           "cycle % ceil (model/hw)", "no-anchor %", "1st-iter extra s")


def table(rows: list[dict]) -> str:
    """Markdown table of result rows (each carries the ceiling measured in its own run)."""
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        head = [r["model"], r["setup"], str(r["px"]), str(r["B"]), r["mode"]]
        if r.get("status", "ok") != "ok":
            out.append("| " + " | ".join(head + [r["status"]] + [""] * (len(COLUMNS) - 6)) + " |")
            continue
        s, tf, th, ceiling = r["seconds"], r["tflops"], r["tflops_hw"], r["ceiling_tflops"]
        cells = [f"{s['anchor']:.3f}", f"{s['rollout']:.3f}", f"{s['dmd']:.3f}", f"{s['student_backward']:.3f}",
                 f"{s['student']:.3f}", f"{s['fake']:.3f}", f"{s['cycle']:.2f}",
                 f"{r['peak_gib']:.1f}" if "peak_gib" in r else "-",
                 num(tf["student"]), num(tf["fake"]), num(tf["anchor"]),
                 f"{100 * tf['cycle'] / ceiling:.0f} / {100 * th['cycle'] / ceiling:.0f}",
                 f"{100 * tf['cycle_no_anchor'] / ceiling:.0f}", f"{r['first_minus_steady_s']:.1f}"]
        out.append("| " + " | ".join(head + cells) + " |")
    return "\n".join(out)


def num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.3g}"


def merge(paths: Sequence[str], out: Path) -> None:
    """Print and save (``gpu_step_merged.md``) one table over several result files."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    rows = [dict(r, ceiling_tflops=r.get("ceiling_tflops", d["ceiling_tflops"])) for d in docs for r in d["rows"]]
    devices = sorted({d["device"] for d in docs})
    ceilings = ", ".join(f"{d['ceiling_tflops']:.0f}" for d in docs)
    text = f"device: {', '.join(devices)}; bf16 matmul ceiling per run: {ceilings} TFLOP/s\n\n{table(rows)}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_step_merged.md").write_text(text)
    print(text)


def parse_configs(text: str) -> list[tuple[int, int]]:
    """``"1024:4,512:1"`` -> [(1024, 4), (512, 1)]."""
    try:
        return [(int(p), int(b)) for p, b in (item.split(":") for item in text.split(",") if item)]
    except ValueError:
        raise SystemExit(f"--configs wants PIXELS:BATCH[,PIXELS:BATCH...], got {text!r}") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models and sizes (checks the script)")
    ap.add_argument("--models", default="sd35m,sdxl")
    ap.add_argument("--setups", default="full,lora", help="full (fp32 master, all weights) and/or lora")
    ap.add_argument("--configs", default="1024:4,1024:1,512:4,512:1,1024:2", help="PIXELS:BATCH list, in run order")
    ap.add_argument("--anchor-k", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2, help="steady iterations (anchor + student + fake-reps fakes)")
    ap.add_argument("--fake-reps", type=int, default=2)
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--no-grad-ckpt", action="store_true")
    ap.add_argument("--ckpt-every", type=int, default=1,
                    help="checkpoint every N-th block only (1: all; dpdmd.parallel.acceleration.checkpoint_every)")
    ap.add_argument("--fused-adamw", action="store_true")
    ap.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS, help="dpdmd.parallel.optimizers (TrainConfig.optimizer)")
    ap.add_argument("--compile", action="store_true", help="torch.compile each repeated block (regional)")
    ap.add_argument("--eager-baseline", action="store_true", help="with --compile: time eager first, same process")
    ap.add_argument("--compile-backend", default=None, help="default: inductor (aot_eager with --smoke)")
    ap.add_argument("--compile-mode", default="default")
    ap.add_argument("--compile-cache", default=None, help="Inductor cache folder shared by trials")
    ap.add_argument("--eager-last-block", action="store_true",
                    help="with --compile: leave SD3's last block (its own variant, context_pre_only) uncompiled: fewer graphs")
    ap.add_argument("--autotune-pointwise", action="store_true",
                    help="Inductor benchmarks several configs per pointwise kernel (its own default; "
                         "dpdmd.parallel.acceleration.configure_compile_cache turns it off)")
    ap.add_argument("--activation-budget", type=float, default=None,
                    help="torch._functorch activation_memory_budget for compiled blocks (with --no-grad-ckpt: "
                         "the compiled backward recomputes what it does not keep)")
    ap.add_argument("--profile", action="store_true",
                    help="after timing, profile one iteration: GPU ms per kernel class and phase")
    ap.add_argument("--profile-top", type=int, default=25, help="with --profile: how many kernels to list by time")
    ap.add_argument("--ceiling-check", type=int, default=0, metavar="N",
                    help="only measure the bf16 ceiling N times each way (as the rows, and steady) and exit")
    ap.add_argument("--sdpa", default="default", choices=("default", *SDPA_BACKENDS),
                    help="attention backend tried first (default: PyTorch's order; cuDNN's on the H100)")
    ap.add_argument("--attention-backend", default="sdpa", choices=ATTENTION_BACKENDS,
                    help="dpdmd.parallel.attention_impl (TrainConfig.attention_backend): sdpa, or fa4 = FlashAttention-4")
    ap.add_argument("--fp8", default="none", choices=FP8_MODES,
                    help="dpdmd.parallel.fp8 (TrainConfig.fp8): student and fake score linear layers in float8 training")
    ap.add_argument("--fp8-teacher", action="store_true",
                    help="dpdmd.parallel.fp8 (TrainConfig.fp8_teacher): the teacher's linear layers in float8 inference")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip configs once this much wall time has passed")
    ap.add_argument("--simulate-oom", default="", help="PIXELS:BATCH to fail with a fake OOM (tests the handler)")
    ap.add_argument("--merge", nargs="+", default=None, help="result JSON files: print one table of them")
    ap.add_argument("--tag", default="run")
    ap.add_argument("--no-md", action="store_true", help="write only the JSON (fewer files in $OUT)")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = ap.parse_args(argv)
    if args.merge:
        merge(args.merge, Path(args.out))
        return 0
    start = time.perf_counter()
    if args.ceiling_check:
        dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
        found = ceiling_check(dev, 8192 if dev.type == "cuda" else 64, args.ceiling_check,
                              warmup_s=2.0 if dev.type == "cuda" else 0.01)
        for way, values in found.items():
            print(f"# ceiling {way}: " + ", ".join(f"{v:.0f}" for v in values)
                  + f" TFLOP/s (median {statistics.median(values):.0f})", flush=True)
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"ceiling_{args.tag}.json").write_text(json.dumps(found, indent=1))
        return 0
    if args.smoke:
        args.configs = "128:2,64:1" if args.configs == ap.get_default("configs") else args.configs
    args.compile_backend = args.compile_backend or ("aot_eager" if args.smoke else "inductor")
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.compile:
        acc.configure_compile_cache(args.compile_cache, autotune_pointwise=args.autotune_pointwise)
        if args.activation_budget is not None:
            import torch._functorch.config as functorch
            functorch.activation_memory_budget = args.activation_budget
    run_scope = contextlib.ExitStack()  # held until main returns: the settings below last the whole run
    if args.sdpa != "default":
        run_scope.enter_context(prefer_attention(args.sdpa))
    attention_log = use_attention_backend(args.attention_backend, device)  # before any compile traces
    print("#", attention_log, flush=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "argv": sys.argv, "args": vars(args), "attention_backend": attention_log}
    try:
        import diffusers
        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    info["ceiling_tflops"] = matmul_ceiling(device, 256 if device.type == "cpu" else 8192)
    print(f"# device {info['device']}, torch {info['torch']}, bf16 matmul ceiling {info['ceiling_tflops']:.1f} TFLOP/s",
          flush=True)
    rows: list[dict] = []

    def save():
        doc = dict(info, rows=rows, elapsed_s=time.perf_counter() - start)
        (out_dir / f"gpu_step_{args.tag}.json").write_text(json.dumps(doc, indent=1, default=str))
        if not args.no_md:
            (out_dir / f"gpu_step_{args.tag}.md").write_text(table(rows) + "\n")

    configs = parse_configs(args.configs)
    for model in args.models.split(","):
        for setup in args.setups.split(","):
            head = {"model": model, "setup": setup}
            runner = None
            try:
                if time.perf_counter() - start > args.budget_s:
                    raise TimeoutError("time budget")
                runner = Runner(args, model, setup, device)
                print(f"## {model} {setup}: built in {runner.build_s:.1f} s, trainable {runner.trainable / 1e6:.1f} M "
                      f"per network", flush=True)
            except (OOM, TimeoutError) as err:
                status = "OOM (build)" if isinstance(err, OOM) else "skipped (time)"
                rows += [dict(head, px=p, B=b, mode="-", status=status) for p, b in configs]
                print(f"## {model} {setup}: {status}", flush=True)
                runner = None
                cleanup()
                save()
                continue
            for pixels, batch in configs:
                modes = (["eager", "compiled"] if args.eager_baseline else ["compiled"]) if args.compile else ["eager"]
                flops = None
                for mode in modes:
                    label = mode + ("+fused" if args.fused_adamw and args.optimizer == "adamw" else "")
                    label += "" if args.optimizer == "adamw" else f"+{args.optimizer}"
                    label += "" if args.sdpa == "default" else f"+{args.sdpa}"
                    label += "" if args.attention_backend == "sdpa" else f"+{args.attention_backend}"
                    label += "" if args.fp8 == "none" else f"+fp8 {args.fp8}"
                    label += "+fp8 teacher" if args.fp8_teacher else ""
                    label += "" if args.ckpt_every == 1 else f"+ckpt/{args.ckpt_every}"
                    label += "+no-ckpt" if args.no_grad_ckpt else ""
                    label += "" if args.activation_budget is None else f"+budget {args.activation_budget:g}"
                    label += "+eager-last" if args.eager_last_block else ""
                    label += "+pw-autotune" if args.autotune_pointwise else ""
                    row = dict(head, px=pixels, B=batch, mode=label, trainable=runner.trainable,
                               build_s=runner.build_s, ceiling_tflops=info["ceiling_tflops"],
                               fused_adamw=args.fused_adamw, grad_ckpt=not args.no_grad_ckpt)
                    t0 = time.perf_counter()
                    try:
                        if time.perf_counter() - start > args.budget_s:
                            raise TimeoutError("time budget")
                        if args.simulate_oom == f"{pixels}:{batch}":
                            raise OOM("simulated")
                        if mode == "compiled" and not runner.compiled_blocks:
                            runner.compile()  # lazy: the first call of each graph compiles it
                            row["compiled_blocks"] = runner.compiled_blocks
                        rec, flops = runner.measure(pixels, batch, mode, flops)
                        row.update(rec, status="ok", fp8=runner.fp8_log, fa4_calls=dict(fa4_calls))
                        if args.attention_backend == "fa4" and not fa4_calls["forward"]:
                            raise RuntimeError("attention_backend fa4 asked for, but the FA4 kernel never ran")
                        if args.profile:
                            row["profile_ms"], by_name = runner.profile(pixels, batch)
                            row["profile_top_kernels"] = top_kernels(by_name, args.profile_top)
                            print(profile_table(row["profile_ms"], row["model_flops"], info["ceiling_tflops"]), flush=True)
                            for kernel in row["profile_top_kernels"]:
                                print(f"  {kernel['cycle_ms']:8.1f} ms  {kernel['class']:9s}  {kernel['name'][:110]}")
                    except OOM as err:
                        row.update(status="OOM", error=str(err)[:300])
                    except TimeoutError:
                        row.update(status="skipped (time)")
                    except Exception as err:  # record, keep going with the other configs
                        row.update(status=f"error: {type(err).__name__}", error=traceback.format_exc()[-2000:])
                        print(row["error"], flush=True)
                    row["wall_s"] = time.perf_counter() - t0
                    rows.append(row)
                    cleanup(runner)
                    print(table([row]).splitlines()[-1], f"({row['wall_s']:.0f} s)", flush=True)
                    if row.get("compile_times"):
                        print(row["compile_times"], flush=True)
                    save()
            del runner
            cleanup()
    save()
    print(f"\n# {info['device']}; bf16 matmul ceiling {info['ceiling_tflops']:.0f} TFLOP/s; "
          f"K={args.anchor_k}, teacher_steps=30, cycle = anchor + 1 student + {FAKE_UPDATES} fake updates; "
          f"TF/s are model FLOPs (checkpoint recompute excluded); elapsed {time.perf_counter() - start:.0f} s\n")
    print(table(rows))
    return 0


def cleanup(runner: Runner | None = None) -> None:
    if runner is not None:
        acc.free_grads(runner.dp.opt_student, runner.dp.opt_fake)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
