"""Data-parallel DP-DMD on two GPUs (NCCL): two workers train as one worker on the same global batch.

    python bench/two_gpu_ddp.py                     # needs 2 CUDA devices; digits-flow, shipped weights
    python bench/two_gpu_ddp.py --device cpu        # the same check with gloo on the CPU
    python bench/two_gpu_ddp.py --shard             # the two workers shard the networks (FSDP2)

Runs `dpdmd.train` once on one device with the global batch, then on two devices with
`dpdmd.parallel.distributed` (each worker half of the batch, gradients averaged; with ``--shard`` the
networks and optimiser states split over the two, `dpdmd.parallel.sharding`), and prints the largest
difference between the two runs' student and fake-score weights, how far training moved them,
and the wall time of each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from dpdmd import EvalConfig, TrainConfig, train
from dpdmd.parallel.distributed import destroy_process_group, init_process_group


def config(args, batch_size: int, device: str) -> TrainConfig:
    return TrainConfig(backbone="digits-flow", iterations=args.iterations, batch_size=batch_size, anchor_k=10,
                       lambda_div=0.05, device=device, eval=EvalConfig(every=0, seeds_per_prompt=4))


def exact_arithmetic() -> None:
    """No TF32 and deterministic cuDNN: batch 16 on one GPU and batch 8 on two then differ only by
    summation order, not by reduced-precision kernels chosen per shape."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True


def worker(rank: int, args, init_method: str, out_dir: str) -> None:
    exact_arithmetic()
    device = f"cuda:{rank}" if args.device == "cuda" else "cpu"
    if args.device == "cuda":
        torch.cuda.set_device(rank)
    context = init_process_group(rank=rank, world_size=2, init_method=init_method, device=device,
                                 shard_networks=args.shard)
    try:
        train(config(args, args.batch_size, device), out_dir=out_dir, progress=False, distributed=context)
    finally:
        destroy_process_group()


def weights(out_dir: Path) -> dict:
    return torch.load(out_dir / "checkpoint" / "state.pt", map_location="cpu", weights_only=False)["method"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8, help="per worker")
    parser.add_argument("--shard", action="store_true", help="shard the networks over the workers (FSDP2)")
    args = parser.parse_args()
    if args.device == "cuda" and torch.cuda.device_count() < 2:
        print(f"needs 2 CUDA devices, found {torch.cuda.device_count()}", file=sys.stderr)
        return 2
    backend = "NCCL" if args.device == "cuda" else "gloo"
    exact_arithmetic()
    device0 = "cuda:0" if args.device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.time()
        train(config(args, 2 * args.batch_size, device0), out_dir=tmp / "one", progress=False)
        one_s = time.time() - start
        # The control: what a worker that lost the other's gradients would compute (its own rows only).
        train(config(args, args.batch_size, device0), out_dir=tmp / "half", progress=False)
        start = time.time()
        mp.spawn(worker, args=(args, f"file://{tmp / 'rendezvous'}", str(tmp / "two")), nprocs=2)
        two_s = time.time() - start
        one, two, half = weights(tmp / "one"), weights(tmp / "two"), weights(tmp / "half")
    from dpdmd.training.build import build_backbone

    teacher = dict(build_backbone(config(args, 1, "cpu")).load_teacher().named_parameters())
    def distance(a, b):
        return max((a[n][k] - b[n][k]).abs().max().item() for n in ("student", "fake") for k in a[n])

    diff, control = distance(one, two), distance(one, half)
    moved = max((one[n][k] - teacher[k]).abs().max().item() for n in ("student", "fake") for k in one[n])
    kind = ", sharded" if args.shard else ""
    print(f"{backend}{kind}, 2 workers x batch {args.batch_size} vs 1 worker x batch {2 * args.batch_size}, "
          f"{args.iterations} iterations")
    print(f"max |weights(2 workers) - weights(1 worker)| = {diff:.2e}; training moved the weights by up to "
          f"{moved:.2e}; a worker on its own rows only ends {control:.2e} away")
    print(f"wall time: 1 worker {one_s:.1f} s, 2 workers {two_s:.1f} s (both include start-up)")
    return 0 if diff < 0.1 * control else 1


if __name__ == "__main__":
    sys.exit(main())
