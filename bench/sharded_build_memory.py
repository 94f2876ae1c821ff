"""Host memory per rank while a sharded run builds its networks: built whole then sharded, or on the meta device.

    python bench/sharded_build_memory.py                      # 1, 2 and 4 gloo processes, both builds
    python bench/sharded_build_memory.py --workers 2 --width 1536 --layers 4

A DP-DMD run of full fine-tuning holds the teacher (bf16 here, as the diffusers backbones load it)
and fp32 copies of it as the student and the fake score. Sharded over N ranks (`dpdmd.parallel.sharding`)
each rank keeps 1/N of the two copies; *building* them whole first (``--build whole``, what every
rank did before) costs each rank the teacher plus both whole copies (~97 GB for SD3.5-L), while
the meta-device build (``meta``, the default of a sharded run) allocates only the rank's shards and
fills them from the teacher.

On the CPU with gloo, each of N processes loads an SD3-shaped transformer (``--width``,
``--layers``: the joint blocks of SD3, random weights saved in bf16 in a tiny SD3 pipeline folder
of tests/dpdmd/tiny_pipelines.py, loaded by the real ``sd35m`` backbone), builds `DPDMD` and shards
it as a sharded trial does (``DistributedContext(shard_networks=True)``: ``prepare`` then
``attach``). Printed per (build, N), the largest over the ranks:

- ``held MiB``: the bytes of the tensors the rank holds after sharding (teacher + its shards of the
  student and the fake score, parameters and buffers), against the analytic ``2P + 8P / N``;
- ``build peak MiB``: how far the process's peak resident memory (``VmHWM``, reset to the current
  resident memory just before) rose above the memory before building, while building and sharding
  (teacher load included), against ``2P + 8P / N`` (meta) and ``10P`` (whole: the
  teacher, and each copy bf16 then fp32).

Output: the table on stdout and ``sharded_build_memory.json`` in ``--out`` ($OUT).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpdmd.backbones import get_backbone  # noqa: E402
from dpdmd.parallel.distributed import destroy_process_group, init_process_group  # noqa: E402
from dpdmd.method import DPDMD  # noqa: E402

MIB = 2**20


def write_pipeline(directory: Path, *, width: int, layers: int) -> int:
    """A tiny SD3 pipeline folder whose transformer is SD3-shaped with ``layers`` joint blocks of
    ``width`` (heads of 64), random, saved in bf16; returns its parameter count P."""
    from diffusers import SD3Transformer2DModel

    from tests.dpdmd.tiny_pipelines import PROJ_DIM, TEXT_DIM, make_tiny_sd3

    make_tiny_sd3(directory)
    torch.manual_seed(0)
    net = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=layers,
                                attention_head_dim=64, num_attention_heads=width // 64,
                                joint_attention_dim=2 * TEXT_DIM, caption_projection_dim=width,
                                pooled_projection_dim=2 * PROJ_DIM, pos_embed_max_size=32)
    net.to(torch.bfloat16).save_pretrained(directory / "transformer")
    return sum(p.numel() for p in net.parameters())


def held_bytes(*nets: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers this rank holds (a sharded parameter: its local shard)."""
    total = 0
    for tensor in itertools.chain(*(itertools.chain(n.parameters(), n.buffers()) for n in nets)):
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        total += local.numel() * local.element_size()
    return total


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS: resident now; VmHWM: its peak) in bytes."""
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def reset_peak_rss() -> int:
    """Reset the process's peak resident memory to the current one (Linux ``clear_refs`` 5), so the
    imports' and the pipeline loading's earlier peaks do not hide the build's; returns the current."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def worker(rank: int, world: int, init_method: str, pipeline: str, build: str, result: str) -> None:
    torch.set_num_threads(1)
    context = init_process_group(rank=rank, world_size=world, init_method=init_method, device="cpu",
                                 shard_networks=True)
    try:
        backbone = get_backbone("sd35m", path=pipeline, resolution=32, weights_dtype="bf16", max_sequence_length=16)
        if build == "meta":
            context.prepare(backbone)  # what a sharded trial does: student and fake score on the meta device
        before = reset_peak_rss()
        method = DPDMD(backbone, lambda_div=0.05, lr_student=1e-5, lr_fake=1e-5)
        context.attach(method)
        record = {"rank": rank, "peak_rise": _status_bytes("VmHWM") - before,
                  "held": held_bytes(method.teacher, method.student, method.fake)}
        records = [None] * world
        dist.all_gather_object(records, record)
        if rank == 0:
            Path(result).write_text(json.dumps(records))
    finally:
        destroy_process_group()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--builds", nargs="+", default=["whole", "meta"], choices=["whole", "meta"])
    ap.add_argument("--width", type=int, default=768, help="transformer width (a multiple of 64)")
    ap.add_argument("--layers", type=int, default=3, help="joint transformer blocks")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        params = write_pipeline(Path(tmp) / "sd3", width=args.width, layers=args.layers)
        for build, world in itertools.product(args.builds, args.workers):
            result = Path(tmp) / f"{build}-{world}.json"
            mp.spawn(worker, nprocs=world, args=(world, f"file://{tmp}/rdv-{build}-{world}", str(Path(tmp) / "sd3"),
                                                 build, str(result)))
            records = json.loads(result.read_text())
            expected_peak = 10 * params if build == "whole" else 2 * params + 8 * params / world
            rows.append({"build": build, "workers": world, "params": params,
                         "held_mib": max(r["held"] for r in records) / MIB,
                         "held_expected_mib": (2 * params + 8 * params / world) / MIB,
                         "peak_rise_mib": max(r["peak_rise"] for r in records) / MIB,
                         "peak_expected_mib": expected_peak / MIB, "ranks": records})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sharded_build_memory.json").write_text(json.dumps(rows, indent=1))
    print(f"SD3-shaped transformer, {args.layers} joint blocks of width {args.width}: P = {params / 1e6:.1f} M "
          f"parameters (bf16 teacher 2P = {2 * params / MIB:.0f} MiB, each fp32 copy 4P = {4 * params / MIB:.0f} MiB)")
    print("| build | ranks | held MiB per rank (2P + 8P/N) | build peak rise MiB per rank (expected) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['build']} | {r['workers']} | {r['held_mib']:.0f} ({r['held_expected_mib']:.0f}) | "
              f"{r['peak_rise_mib']:.0f} ({r['peak_expected_mib']:.0f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
