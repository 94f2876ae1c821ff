"""Time the DP-DMD cycle sharded over N GPUs (FSDP2, `dpdmd.parallel.sharding`): cycle time, peak memory per GPU.

    python bench/sharded_step.py --smoke                                  # CPU, gloo, 2 processes, tiny
    python bench/sharded_step.py --model sd35m --setup full --workers 2   # 2 GPUs, NCCL, 1024 px, 4 per GPU
    python bench/sharded_step.py --model sd35m --setup full --nproc 1     # one GPU: FSDP2 over one rank, NCCL
    python bench/sharded_step.py --model sd35m --nproc 1 --whole-build    # the same, built whole before sharding
    python bench/sharded_step.py --model sd35m --nproc 1 --replicated     # one GPU, no sharding (the reference)
    python bench/sharded_step.py --model sd35l --setup full --workers 8   # SD3.5-Large shape (8.1 B)
    python bench/sharded_step.py --model sd35m --workers 2 --replicated   # replicas + averaged gradients

Each of N processes (one per GPU) builds the random-weight networks of `bench/gpu_step.py`
(``sd35m``, ``sdxl``, and here ``sd35l``: 38 layers, 38 heads of 64), wraps them exactly as a
sharded trial does (``DistributedContext(shard_networks=True)``: ``prepare``, so full fine-tuning
builds the student and fake score on the meta device and each rank allocates only its shards,
then ``attach``), and runs cycles of the
trainer's work: the teacher anchor (K steps with CFG, on the rank's rows), one student update and
``--fake-reps`` fake-score updates, on a global batch of ``--batch * N`` rows (rank r: rows r::N).
A cycle is timed between barriers, so it is the slowest rank's. Reported: the first cycle, the
median of ``--reps`` steady cycles and its phases (rank 0), samples per second, and per GPU the
peak memory while building and while training. ``--nproc 1`` (an alias of ``--workers``) runs the
sharded path on one GPU: NCCL, FSDP2's CUDA all-gathers and reduce-scatters over a mesh of one,
the meta-device build and its shards loaded from the teacher (``--whole-build``: built whole
before sharding, as before, to compare the build peak). The build peak includes the random
teacher's fp32 initialisation (`bench/gpu_step.py` builds it in fp32 on the GPU, then casts it to
bf16: 4P bytes, 32 GB for SD3.5-L, before the student exists). Issue #12 runs it; the percentage of the bf16 ceiling follows from
`bench/gpu_step.py`'s FLOP counts of the same (model, setup, pixels, batch per GPU) on one GPU:
``flops_one_gpu_cycle * N / (cycle_s * N * ceiling)``.

Prints three lines and a table, e.g.::

    sd35m full 1024 px, 4 per GPU x 1 (sharded, meta build, cuda): first cycle S s, steady cycle S s, R samples/s
    phases (rank 0, s): anchor S, ... (the median steady cycle's `DPDMD.seconds`)
    | rank | build s | build peak GiB | train peak GiB | train reserved GiB |   (one row per GPU)

and writes the same as ``sharded_step_<tag>.json`` in ``--out`` ($OUT).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_step  # noqa: E402  (bench/gpu_step.py: the random-weight backbones)

from dpdmd.parallel import acceleration as acc  # noqa: E402
from dpdmd.anchors import LocalAnchors  # noqa: E402
from dpdmd.parallel.distributed import destroy_process_group, init_process_group  # noqa: E402
from dpdmd.method import DPDMD  # noqa: E402
from dpdmd.stream import iteration_batch  # noqa: E402


def sd35l_config(tiny: bool) -> dict:
    """SD3.5-Large's transformer shape (8.1 B): 38 joint blocks, 38 heads of 64, no dual attention."""
    if tiny:
        return dict(gpu_step.sd35m_config(True), dual_attention_layers=())
    return dict(sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
                num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, qk_norm="rms_norm")


class Backbone(gpu_step.RandomDiffusersBackbone):
    """`gpu_step.RandomDiffusersBackbone` plus the ``sd35l`` shape (same schedule and prompts as sd35m)."""

    def __init__(self, *, model: str, **kwargs):
        super().__init__(model="sd35m" if model == "sd35l" else model, **kwargs)
        self.name = self.model = model

    def load_teacher(self):
        if self.model != "sd35l":
            return super().load_teacher()
        from diffusers import SD3Transformer2DModel

        torch.manual_seed(self.seed)
        with torch.device(self.device):
            return SD3Transformer2DModel(**sd35l_config(self.tiny))


def gib(device: torch.device, reserved: bool = False) -> float:
    if device.type != "cuda":
        return float("nan")
    return (torch.cuda.max_memory_reserved() if reserved else torch.cuda.max_memory_allocated()) / 2**30


def worker(rank: int, args, init_method: str, result_path: str) -> None:
    world = args.workers
    device = torch.device(f"cuda:{rank}" if args.device == "cuda" else "cpu")
    if args.device == "cpu":
        torch.set_num_threads(1)
    context = init_process_group(rank=rank, world_size=world, init_method=init_method, device=device,
                                 shard_networks=not args.replicated)
    try:
        record = run_rank(args, context, device)
        records = [None] * world
        dist.all_gather_object(records, record)
        if rank == 0:
            Path(result_path).write_text(json.dumps(records))
    finally:
        destroy_process_group()


def run_rank(args, context, device: torch.device) -> dict:
    """Build, shard, and time the cycles on one rank; returns this rank's numbers."""
    backbone = Backbone(model=args.model, setup=args.setup, device=device, tiny=args.smoke,
                        lora_rank=args.lora_rank, grad_ckpt=not args.no_grad_ckpt)
    backbone.set_resolution(args.pixels)
    t0 = time.perf_counter()
    if not args.whole_build:
        context.prepare(backbone)  # sharded full fine-tuning: the student and fake score on the meta device
    method = DPDMD(backbone, lambda_div=0.05, lr_student=1e-5, lr_fake=1e-5, mixed_precision="bf16")
    context.attach(method)
    build_s, build_peak = time.perf_counter() - t0, gib(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    anchors = LocalAnchors(backbone, method.teacher, args.anchor_k)
    per_cycle = 1 + args.fake_reps
    global_batch = args.batch * context.world_size
    batches = [context.shard(iteration_batch(seed=0, iteration=i, prompts=backbone.default_prompts,
                                             batch_size=global_batch, latent_shape=backbone.latent_shape,
                                             num_dmd_levels=len(backbone.schedule.dmd_levels)))
               for i in range((1 + args.reps) * per_cycle)]
    cond, uncond = backbone.encode_prompts(batches[0].prompts), backbone.unconditional(args.batch)
    cycles = []
    for c in range(1 + args.reps):  # the first cycle (allocator growth, kernel loading), then steady ones
        method.seconds.clear()
        dist.barrier()
        start = time.perf_counter()
        batch = batches[c * per_cycle]
        with method.phase("anchor"):
            target = anchors(batch, cond, uncond)
        method.student_update(batch, cond, uncond, target)
        acc.free_grads(method.opt_student)
        for j in range(args.fake_reps):
            method.fake_update(batches[c * per_cycle + 1 + j], cond)
        acc.free_grads(method.opt_fake)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        cycles.append({"cycle_s": time.perf_counter() - start, **method.seconds})
    return {"rank": context.rank, "build_s": build_s, "build_peak_gib": build_peak, "train_peak_gib": gib(device),
            "train_reserved_gib": gib(device, reserved=True), "cycles": cycles}


def summarise(args, records: list[dict]) -> dict:
    steady = records[0]["cycles"][1:]
    median = {k: statistics.median(c[k] for c in steady) for k in steady[0]}
    return {"model": args.model, "setup": args.setup, "pixels": args.pixels, "batch_per_gpu": args.batch,
            "workers": args.workers, "sharded": not args.replicated, "device": args.device,
            "build": "whole" if args.whole_build or args.replicated or args.setup == "lora" else "meta",
            "first_cycle_s": records[0]["cycles"][0]["cycle_s"], "cycle_s": median["cycle_s"],
            "phases_s": {k: v for k, v in median.items() if k != "cycle_s"},
            "samples_per_s": args.batch * args.workers / median["cycle_s"],
            "per_gpu": [{k: r[k] for k in ("rank", "build_s", "build_peak_gib", "train_peak_gib",
                                           "train_reserved_gib")} for r in records]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, gloo, 2 processes, tiny networks (checks the script)")
    ap.add_argument("--model", default="sd35m", choices=["sd35m", "sd35l", "sdxl"])
    ap.add_argument("--setup", default="full", choices=["full", "lora"])
    ap.add_argument("--workers", "--nproc", type=int, default=None, help="processes (default: every visible GPU)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--pixels", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4, help="per GPU")
    ap.add_argument("--anchor-k", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2, help="steady cycles after the first")
    ap.add_argument("--fake-reps", type=int, default=5, help="fake-score updates per cycle (the trainer's fake_updates)")
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--no-grad-ckpt", action="store_true")
    ap.add_argument("--replicated", action="store_true", help="replicas and averaged gradients instead of shards")
    ap.add_argument("--whole-build", action="store_true",
                    help="build the student and fake score whole before sharding (the old build) instead of on meta")
    ap.add_argument("--tag", default="run")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.pixels, args.batch, args.anchor_k, args.fake_reps = "cpu", 128, 1, 2, 1
        args.workers = args.workers or 2
    if args.workers is None:
        args.workers = max(1, torch.cuda.device_count())
    if args.device == "cuda" and torch.cuda.device_count() < args.workers:
        print(f"--workers {args.workers} needs that many CUDA devices, found {torch.cuda.device_count()}",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "records.json"
        mp.spawn(worker, args=(args, f"file://{tmp}/rendezvous", str(result)), nprocs=args.workers)
        summary = summarise(args, json.loads(result.read_text()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sharded_step_{args.tag}.json").write_text(json.dumps(summary, indent=1))
    kind = f"sharded, {summary['build']} build" if summary["sharded"] else "replicated"
    print(f"{args.model} {args.setup} {args.pixels} px, {args.batch} per GPU x {args.workers} "
          f"({kind}, {args.device}): first cycle {summary['first_cycle_s']:.2f} s, steady cycle "
          f"{summary['cycle_s']:.2f} s, {summary['samples_per_s']:.2f} samples/s")
    print("phases (rank 0, s): " + ", ".join(f"{k} {v:.2f}" for k, v in summary["phases_s"].items()))
    print("| rank | build s | build peak GiB | train peak GiB | train reserved GiB |")
    print("|---|---|---|---|---|")
    for r in summary["per_gpu"]:
        print(f"| {r['rank']} | {r['build_s']:.1f} | {r['build_peak_gib']:.1f} | {r['train_peak_gib']:.1f} | "
              f"{r['train_reserved_gib']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
