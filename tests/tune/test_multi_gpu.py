"""Multi-worker trials on the CPU (gloo): `dpdmd.parallel.distributed` (2 processes with replicas train as
1 on the same global batch; sharded workers: tests/dpdmd/test_sharding.py) and `tune.trial.multi_gpu` (a
2-worker sharded Tune trial in one placement group reports metrics and a checkpoint). The GPU path
differs only in the backend (NCCL) and the bundles' GPUs."""


import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from dpdmd import EvalConfig, TrainConfig
from dpdmd import train
from dpdmd.parallel.distributed import DistributedContext, backend_for, destroy_process_group, init_process_group
from dpdmd.stream import iteration_batch

from ..dpdmd.helpers import random_backbone, register_random_backbones

register_random_backbones()

# fake_updates=1: student updates at iterations 1, 3, 5; the last one evaluates and checkpoints.
EQUIVALENCE = dict(backbone="test-random-flow", iterations=6, teacher_steps=10, anchor_k=3, fake_updates=1,
                   eval=EvalConfig(prompts=["3"], seeds_per_prompt=4, every=0), device="cpu")
PER_WORKER_BATCH = 2


# --- dpdmd.parallel.distributed without processes --------------------------------------------------------

def test_shards_partition_the_global_batch():
    batch = iteration_batch(seed=0, iteration=3, prompts=[str(d) for d in range(10)], batch_size=6,
                            latent_shape=(16, 8, 8), num_dmd_levels=1000)
    shards = [DistributedContext(rank=r, world_size=3).shard(batch) for r in range(3)]
    for r, shard in enumerate(shards):
        assert torch.equal(shard.x1, batch.x1[r::3]) and torch.equal(shard.dmd_eps, batch.dmd_eps[r::3])
        assert shard.prompts == batch.prompts[r::3] and len(shard.prompts) == 2
        assert (shard.iteration, shard.dmd_level_index) == (batch.iteration, batch.dmd_level_index)
    with pytest.raises(ValueError, match="batch_size \\* world_size"):
        DistributedContext(rank=0, world_size=4).shard(batch)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        DistributedContext(rank=2, world_size=2)
    assert backend_for("cpu") == "gloo" and backend_for("cuda:3") == "nccl"


# --- two gloo processes train as one ----------------------------------------------------------------

def _data_parallel_worker(rank: int, world_size: int, init_method: str, out_dir: str) -> None:
    register_random_backbones()  # the spawned process has only what it imports
    torch.set_num_threads(1)
    context = init_process_group(rank=rank, world_size=world_size, init_method=init_method, device="cpu")
    try:
        metrics = train(TrainConfig(**EQUIVALENCE, batch_size=PER_WORKER_BATCH), out_dir=out_dir, progress=False,
                        distributed=context)
        assert (metrics != {}) == (rank == 0)  # rank 0 alone evaluates
    finally:
        destroy_process_group()


def _weights(out_dir):
    return torch.load(out_dir / "checkpoint" / "state.pt", map_location="cpu", weights_only=False)["method"]


def test_two_gloo_workers_train_as_one_worker_on_the_global_batch(tmp_path):
    world = 2
    train(TrainConfig(**EQUIVALENCE, batch_size=PER_WORKER_BATCH * world), out_dir=tmp_path / "one", progress=False)
    mp.spawn(_data_parallel_worker, args=(world, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "two")),
             nprocs=world)
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    teacher = dict(random_backbone("flow").load_teacher().named_parameters())  # both nets start from it
    for net in ("student", "fake"):
        assert one[net].keys() == two[net].keys()
        for name in one[net]:
            torch.testing.assert_close(two[net][name], one[net][name], rtol=0, atol=1e-5, msg=f"{net}.{name}")
        # Not vacuous: 3 AdamW steps of lr 1e-4 moved the weights by ~3e-4 (measured: the two runs
        # differ by < 1e-6; training rank 0's rows alone instead ends ~6e-4 away).
        moved = max((one[net][n] - teacher[n]).abs().max().item() for n in one[net])
        assert moved > 1e-4, f"{net} did not train ({moved})"


def test_shard_is_a_boolean_that_defaults_to_true(tmp_path):
    from tune.trial.multi_gpu import shards_networks
    from tune.space import SpaceError, load_space

    assert shards_networks({"workers": 2}) and not shards_networks({"workers": 2, "shard": False})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "backbones": {"digits-flow": {"resources": {"workers": 2, "shard": "yes"}}}}))
    with pytest.raises(SpaceError, match="backbones.digits-flow.resources.shard: 'yes' must be true"):
        load_space(path)


# --- a 2-worker Tune trial --------------------------------------------------------------------------

SPACE = {
    "name": "multi-gpu", "method": "grid", "seed": 0, "baseline": False,
    "backbones": {"digits-flow": {"resources": {"cpu": 1, "workers": 2}}},
    "parameters": {"anchor_k": {"value": 2}, "lambda_div": {"value": 0.05}},
    "train": {"iterations": 4, "batch_size": 2, "teacher_steps": 10, "fake_updates": 1},
    "eval": {"prompts": ["3", "7"], "seeds_per_prompt": 4, "every": 1},
    "checkpoint": {"state_every_minutes": 0},  # the resumable state at every report
    "objective": {"min_quality": 0.0},  # every report eligible: each new best keeps its student
    "scheduler": {"type": "fifo"}, "wandb": {"enabled": False},
}


def test_two_worker_trial_reports_through_tune_with_a_checkpoint(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray import tune

    from tune.trial.anchor_store import get_or_create_store
    from tune.trial.multi_gpu import build_trainable, multi_worker_resources, trial_resources
    from tune.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    space = load_space(path)
    pgf = trial_resources(space.backbones["digits-flow"].resources)
    assert pgf.head_bundle_is_empty and pgf.bundles == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert trial_resources({"cpu": 2, "gpu": 1}).bundles == [{"CPU": 2.0, "GPU": 1.0}]
    assert multi_worker_resources(workers=8, cpu=4, gpu=1).required_resources == {"CPU": 32.0, "GPU": 8.0}

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, namespace="dpdmd-tune")
    try:
        spill_uri = str(tmp_path / "anchor_cache")
        store = get_or_create_store(spill_uri)
        cache = {"enabled": True, "spill_uri": spill_uri, "ks": [2]}
        tuner = tune.Tuner(build_trainable(space, cache, experiment=str(tmp_path / "runs" / "mg")),
                           param_space={"anchor_k": 2, "lambda_div": 0.05},
                           run_config=tune.RunConfig(name="mg", storage_path=str(tmp_path / "runs"), verbose=0),
                           tune_config=tune.TuneConfig(num_samples=1))
        results = tuner.fit()
        anchors = ray.get(store.computed_counts.remote("anchor/"))
        ray.kill(store)
    finally:
        ray.shutdown()
    assert results.num_errors == 0, results.errors
    result = results[0]
    history = result.metrics_dataframe
    assert list(history["student_updates"]) == [1, 2]  # 4 iterations, fake_updates 1, eval every update
    assert history["workers"].eq(2).all() and history["diversity"].between(0, 2).all()
    assert history["sharded"].all()  # the default for workers > 1: FSDP2 shards, all ranks evaluate
    assert history["quality"].notna().all() and history["objective"].notna().all()
    # the checkpoint is the new best's student (the gathered whole network); the resumable state, at
    # every report here (state_every_minutes 0), is in the trial's resume store
    from dpdmd.student import read_manifest

    assert read_manifest(result.checkpoint.path)["config"]["batch_size"] == 2
    resume = Path(result.path) / "resume"
    pointer = json.loads((resume / "latest.json").read_text())
    state = torch.load(resume / pointer["folder"] / "state.pt", map_location="cpu", weights_only=False)
    assert state["iteration"] == 4 and pointer["iteration"] == 4
    # each rank computed the anchor of its own rows at both student iterations: 2 ranks x 2 keys
    assert len(anchors) == 4 and set(anchors.values()) == {1}
