"""A diverging data-parallel run stops on every rank (issue 13): a rank that stopped alone would
leave the others waiting in the next collective. Two gloo processes on the CPU, replicated and
sharded networks; the divergence is injected on one rank only (a NaN loss on rank 1, or rank 0's
evaluation finding the student not finite), so only the ranks' agreement can stop the other."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import time
import warnings

import pytest
import torch

from dpdmd import EvalConfig, TrainConfig

# fake_updates=1: fake updates at iterations 0, 2, ...; student updates (each evaluated) at 1, 3, ...
CONFIG = dict(backbone="test-random-flow", iterations=12, batch_size=2, teacher_steps=10, anchor_k=3, fake_updates=1,
              eval=EvalConfig(prompts=["3"], seeds_per_prompt=4, every=1), device="cpu")
COLLECTIVE_TIMEOUT_S = 60  # a rank left waiting fails after this instead of hanging the test run
JOIN_S = 600


def _worker(rank: int, world: int, init_method: str, out_dir: str, fault: str, shard: bool, result: str) -> None:
    from dpdmd import method as method_module
    from dpdmd.training import loop
    from dpdmd.parallel.distributed import destroy_process_group, init_process_group
    from dpdmd.training.loop import train
    from tests.dpdmd.helpers import register_random_backbones

    register_random_backbones()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    if fault == "loss" and rank == 1:  # the third fake update's loss is NaN, on this rank only
        fake_update, calls = method_module.DPDMD.fake_update, []

        def nan_on_third(self, *args, **kwargs):
            losses = fake_update(self, *args, **kwargs)
            calls.append(1)
            return {**losses, "loss_fake": math.nan} if len(calls) == 3 else losses

        method_module.DPDMD.fake_update = nan_on_third
    if fault == "evaluation" and rank == 0:  # the second evaluation finds the student not finite
        divergence, calls = loop._divergence, []

        def broken_at_second(method, images, where):
            calls.append(1)
            return f"student weight w is not finite {where}" if len(calls) == 2 else divergence(method, images, where)

        loop._divergence = broken_at_second
    context = init_process_group(rank=rank, world_size=world, init_method=init_method, device="cpu",
                                 timeout_s=COLLECTIVE_TIMEOUT_S, shard_networks=shard)
    try:
        metrics = train(TrainConfig(**CONFIG), out_dir=out_dir, progress=False, distributed=context)
    finally:
        destroy_process_group()
    with open(result, "w") as f:
        json.dump({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}, f)


@pytest.mark.parametrize("fault, shard", [
    ("loss", False),  # the default run keeps one case (~1 min on 2 loaded cores); the rest are slow
    pytest.param("evaluation", False, marks=pytest.mark.slow),
    pytest.param("loss", True, marks=pytest.mark.slow),
    pytest.param("evaluation", True, marks=pytest.mark.slow)])
def test_every_rank_stops_when_one_diverges(tmp_path, fault, shard):
    ctx = multiprocessing.get_context("spawn")
    out = tmp_path / "run"
    results = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [ctx.Process(target=_worker, args=(r, 2, f"file://{tmp_path / 'rendezvous'}", str(out), fault, shard,
                                               str(results[r]))) for r in range(2)]
    started = time.time()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=JOIN_S)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"rank(s) {hung} still running after {JOIN_S} s"
    # a rank left alone in a collective fails after COLLECTIVE_TIMEOUT_S: exit code non-zero
    assert [p.exitcode for p in procs] == [0, 0], f"exit codes {[p.exitcode for p in procs]} after " \
                                                  f"{time.time() - started:.0f} s"
    rank0, rank1 = (json.loads(r.read_text()) for r in results)
    assert rank1 == {}  # only rank 0 reports
    assert rank0["diverged"] == 1
    if fault == "loss":  # rank 0's own loss was finite: it stopped because rank 1 did, at the same iteration
        assert rank0["diverged_reason"].startswith("another rank stopped at iteration 5")
    else:
        assert rank0["diverged_reason"] == "student weight w is not finite at iteration 4"
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["diverged"] == "1" and all(r["diverged"] == "0" for r in rows[:-1])
    assert int(rows[-1]["iteration"]) < CONFIG["iterations"]  # stopped early, not run to the end
