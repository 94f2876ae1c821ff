"""Sharded multi-worker training (`dpdmd.parallel.sharding`, FSDP2) on the CPU with gloo processes.

The same numbers as one worker on the same global batch, a checkpoint that resumes a sharded run
exactly and loads into a one-worker run, and the one-worker checkpoint format. The GPU path
differs only in the backend (NCCL): ``python bench/sharded_step.py`` runs it on N GPUs.

Tolerance: the sharded run reduces each gradient over the ranks (per-rank means, summed in another
order) and the gradient norm from per-shard partial norms, so it differs from one worker by fp32
summation order only, which AdamW's normalisation can lift towards lr * 1e-2 on near-zero
gradients. Measured (6 iterations: 3 student and 3 fake steps, 2 workers): 9.0e-7 on the student,
2.6e-7 on the fake score, while the steps moved the weights by more than 1e-4 (asserted) and, in
the replicated test, training one rank's rows alone ends ~6e-4 away. atol 1e-5 separates the two.
"""

import csv
import shutil

import pytest
import torch
import torch.multiprocessing as mp

from dpdmd import EvalConfig, TrainConfig, train
from dpdmd.parallel.distributed import destroy_process_group, init_process_group
from dpdmd.parallel.sharding import _indexed, _named

from .helpers import random_backbone, register_random_backbones

register_random_backbones()

# fake_updates=1: student updates at iterations 1 and 3, each evaluated and checkpointed.
CONFIG = dict(backbone="test-random-flow", iterations=4, teacher_steps=10, anchor_k=3, fake_updates=1,
              eval=EvalConfig(prompts=["3"], seeds_per_prompt=4, every=1), device="cpu")
PER_WORKER_BATCH = 2
ATOL = 1e-5


def _config(batch_size: int) -> TrainConfig:
    return TrainConfig(**CONFIG, batch_size=batch_size)


def _sharded_worker(rank: int, world: int, init_method: str, out_dir: str, resume_from: str | None,
                    keep_first_checkpoint: str | None) -> None:
    register_random_backbones()  # the spawned process has only what it imports
    torch.set_num_threads(1)
    context = init_process_group(rank=rank, world_size=world, init_method=init_method, device="cpu",
                                 shard_networks=True)

    def report(metrics, saved):  # rank 0 only: keep the first checkpoint to resume from
        if keep_first_checkpoint and metrics["student_updates"] == 1:
            shutil.copytree(saved.state, keep_first_checkpoint)

    try:
        metrics = train(_config(PER_WORKER_BATCH), out_dir=out_dir, progress=False, distributed=context,
                        resume_from=resume_from, report=report)
        assert (metrics != {}) == (rank == 0)  # rank 0 alone scores and reports
    finally:
        destroy_process_group()


def _spawn(tmp_path, name: str, *, world: int = 2, resume_from=None, keep_first_checkpoint=None):
    out = tmp_path / name
    mp.spawn(_sharded_worker, nprocs=world,
             args=(world, f"file://{tmp_path / f'rendezvous-{name}'}", str(out),
                   str(resume_from) if resume_from else None,
                   str(keep_first_checkpoint) if keep_first_checkpoint else None))
    return out


def _state(out_dir):
    return torch.load(out_dir / "checkpoint" / "state.pt", map_location="cpu", weights_only=False)


def _assert_same_method_state(got: dict, want: dict, atol: float) -> None:
    """Weights and AdamW states (the one-worker `DPDMD.state_dict()` layout) equal within atol."""
    for net in ("student", "fake"):
        assert got[net].keys() == want[net].keys()
        for name in want[net]:
            torch.testing.assert_close(got[net][name], want[net][name], rtol=0, atol=atol, msg=f"{net}.{name}")
    for opt in ("opt_student", "opt_fake"):
        assert _settings(got[opt]) == _settings(want[opt])
        assert got[opt]["state"].keys() == want[opt]["state"].keys()
        for index, slots in want[opt]["state"].items():
            for slot, value in slots.items():
                torch.testing.assert_close(got[opt]["state"][index][slot], value, rtol=0, atol=atol,
                                           msg=f"{opt}[{index}].{slot}")


def _settings(optimizer_state: dict) -> list[dict]:
    """Param groups with sequences as tuples (the distributed loader gives betas as a list)."""
    return [{k: tuple(v) if isinstance(v, list) else v for k, v in group.items()}
            for group in optimizer_state["param_groups"]]


def _moved(state: dict) -> float:
    teacher = dict(random_backbone("flow").load_teacher().named_parameters())  # both nets start from it
    return min(max((state[net][n] - teacher[n]).abs().max().item() for n in state[net]) for net in ("student", "fake"))


def test_optimizer_state_names_round_trip():
    indexed = {"state": {0: {"step": torch.tensor(3.0)}, 2: {"step": torch.tensor(1.0)}},
               "param_groups": [{"lr": 1e-4, "params": [0, 1]}, {"lr": 2e-4, "params": [2]}]}
    named = _named(indexed, [["a.weight", "a.bias"], ["b.weight"]])
    assert named["param_groups"][1] == {"lr": 2e-4, "params": ["b.weight"]}
    assert set(named["state"]) == {"a.weight", "b.weight"}
    assert _indexed(named) == indexed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One worker on the global batch; 2 sharded workers, their first checkpoint kept."""
    tmp = tmp_path_factory.mktemp("sharded")
    one_metrics = train(_config(2 * PER_WORKER_BATCH), out_dir=tmp / "one", progress=False)
    two = _spawn(tmp, "two", keep_first_checkpoint=tmp / "first-checkpoint")
    return {"tmp": tmp, "one": tmp / "one", "two": two, "first": tmp / "first-checkpoint",
            "one_metrics": one_metrics}


def test_two_sharded_workers_train_as_one_worker(runs):
    want, got = _state(runs["one"]), _state(runs["two"])
    assert got["iteration"] == CONFIG["iterations"] and _state_iteration(runs["first"]) == 2
    _assert_same_method_state(got["method"], want["method"], ATOL)
    assert _moved(want["method"]) > 1e-4  # not vacuous: the steps moved both networks
    # rank 0 sampled with the gathered student: the same scores as one worker
    last = _last_metrics(runs["two"])
    for key in ("diversity", "quality"):
        assert abs(last[key] - runs["one_metrics"][key]) < 1e-4, key
    # the final student that save_pretrained wrote is the gathered one
    from diffusers import SD3Transformer2DModel

    saved = dict(SD3Transformer2DModel.from_pretrained(runs["two"] / "student" / "transformer").named_parameters())
    for name, weight in got["method"]["student"].items():
        torch.testing.assert_close(saved[name], weight, rtol=0, atol=0)


def test_sharded_checkpoint_resumes_a_one_worker_run(runs):
    """The sharded run's first checkpoint is a one-worker checkpoint: one worker on the global
    batch resumes it and ends where the uninterrupted one-worker run ends. (The checkpoint's
    config says batch_size 2 per worker; a one-worker run of the same global batch says 4, so it
    is told so, as a user continuing a 2-worker run on one GPU would.)"""
    state = torch.load(runs["first"] / "state.pt", map_location="cpu", weights_only=False)
    state["config"] = _config(2 * PER_WORKER_BATCH).to_dict()
    (runs["tmp"] / "first-as-one").mkdir()
    torch.save(state, runs["tmp"] / "first-as-one" / "state.pt")
    single = runs["tmp"] / "single"
    train(_config(2 * PER_WORKER_BATCH), out_dir=single, progress=False, resume_from=runs["tmp"] / "first-as-one")
    _assert_same_method_state(_state(single)["method"], _state(runs["one"])["method"], ATOL)


@pytest.mark.slow
def test_sharded_run_resumes_as_uninterrupted(runs):
    """2 sharded workers resume their first checkpoint and end where the uninterrupted sharded
    run ended (same arithmetic: only the load in between)."""
    resumed = _spawn(runs["tmp"], "resumed", resume_from=runs["first"])
    _assert_same_method_state(_state(resumed)["method"], _state(runs["two"])["method"], 1e-6)


@pytest.mark.slow
def test_four_sharded_workers_train_as_one_worker(tmp_path):
    world = 4
    one = tmp_path / "one"
    train(_config(world * PER_WORKER_BATCH), out_dir=one, progress=False)
    four = _spawn(tmp_path, "four", world=world)
    _assert_same_method_state(_state(four)["method"], _state(one)["method"], ATOL)


def _state_iteration(checkpoint_dir) -> int:
    return torch.load(checkpoint_dir / "state.pt", map_location="cpu", weights_only=False)["iteration"]


def _last_metrics(out_dir) -> dict:
    with open(out_dir / "metrics.csv", newline="") as f:
        row = list(csv.DictReader(f))[-1]
    return {k: float(v) for k, v in row.items() if v not in ("", None)}
