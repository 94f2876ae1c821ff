"""Sharded multi-worker training (`dpdmd.parallel.sharding`, FSDP2) on the CPU with gloo processes.

The same numbers as one worker on the same global batch; a checkpoint written by every rank with
``torch.distributed.checkpoint`` (`dpdmd.parallel.sharded_checkpoint`: one ``.distcp`` file a rank,
never gathered) that resumes a sharded run exactly and loads into a one-worker run; a one-worker
``state.pt`` that resumes a sharded run; and ranks that do not share the checkpoint folder falling
back to the gathered ``state.pt``. The GPU path differs only in the backend (NCCL):
``python bench/sharded_step.py`` runs it on N GPUs.

Tolerance: the sharded run reduces each gradient over the ranks (per-rank means, summed in another
order) and the gradient norm from per-shard partial norms, so it differs from one worker by fp32
summation order only, which AdamW's normalisation can lift towards lr * 1e-2 on near-zero
gradients. Measured (6 iterations: 3 student and 3 fake steps, 2 workers): 9.0e-7 on the student,
2.6e-7 on the fake score, while the steps moved the weights by more than 1e-4 (asserted) and, in
the replicated test, training one rank's rows alone ends ~6e-4 away. atol 1e-5 separates the two.
"""

import csv
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from dpdmd import EvalConfig, TrainConfig, train
from dpdmd.parallel.distributed import destroy_process_group, init_process_group
from dpdmd.parallel import sharding
from dpdmd.parallel.sharding import _indexed, _named
from dpdmd.config import ConfigError
from dpdmd.training.checkpoints import META, PREVIOUS, WHOLE, load_checkpoint, read_checkpoint

from .helpers import random_backbone, register_random_backbones

register_random_backbones()

# fake_updates=1: student updates at iterations 1 and 3, each evaluated and checkpointed.
CONFIG = dict(backbone="test-random-flow", iterations=4, teacher_steps=10, anchor_k=3, fake_updates=1,
              eval=EvalConfig(prompts=["3"], seeds_per_prompt=4, every=1), device="cpu")
PER_WORKER_BATCH = 2
ATOL = 1e-5


def _config(batch_size: int) -> TrainConfig:
    return TrainConfig(**CONFIG, batch_size=batch_size)


def _sharded_worker(rank: int, world: int, batch: int, init_method: str, out_dir: str, resume_from: str | None,
                    keep_first_checkpoint: str | None, apart: bool) -> None:
    register_random_backbones()  # the spawned process has only what it imports
    torch.set_num_threads(1)
    if apart:  # as on another node without shared storage: rank 1 cannot see rank 0's folder
        out_dir = out_dir if rank == 0 else f"{out_dir}-rank{rank}"
    else:  # DCP: no rank gathers the state to save it
        def gathered(method):
            raise AssertionError("a sharded checkpoint gathered the whole state (full_state_dict)")

        sharding.full_state_dict = gathered
    context = init_process_group(rank=rank, world_size=world, init_method=init_method, device="cpu",
                                 shard_networks=True)

    def report(metrics, saved):  # rank 0 only: keep the first checkpoint to resume from
        if keep_first_checkpoint and metrics["student_updates"] == 1:
            shutil.copytree(saved.state, keep_first_checkpoint)

    try:
        metrics = train(_config(batch), out_dir=out_dir, progress=False, distributed=context,
                        resume_from=resume_from, report=report)
        assert (metrics != {}) == (rank == 0)  # rank 0 alone scores and reports
    finally:
        destroy_process_group()


def _spawn(tmp_path, name: str, *, world: int = 2, batch: int = PER_WORKER_BATCH, resume_from=None,
           keep_first_checkpoint=None, apart=False):
    out = tmp_path / name
    mp.spawn(_sharded_worker, nprocs=world,
             args=(world, batch, f"file://{tmp_path / f'rendezvous-{name}'}", str(out),
                   str(resume_from) if resume_from else None,
                   str(keep_first_checkpoint) if keep_first_checkpoint else None, apart))
    return out


def _state(out_dir):
    """A run's last checkpoint whole, in the one-worker layout (either layout on disk)."""
    return read_checkpoint(out_dir / "checkpoint")


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


def test_two_sharded_workers_write_their_own_shards(runs):
    """Each rank wrote its own shards with torch.distributed.checkpoint: one .distcp file a rank,
    none of them (nor the metadata) the whole state, no state.pt; and no rank gathered the state
    (the workers' `full_state_dict` raises)."""
    for folder in (runs["two"] / "checkpoint", runs["first"]):
        assert (folder / META).is_file() and not (folder / WHOLE).exists()
        files = sorted((folder / "state").glob("*.distcp"))
        assert [f.name for f in files] == ["__0_0.distcp", "__1_0.distcp"]
        held, total = _elements_per_file(folder / "state")
        assert sum(held.values()) == total and all(n < 0.6 * total for n in held.values()), (held, total)  # ~half each
        whole = sum(t.numel() * t.element_size() for t in _tensors(read_checkpoint(folder)["method"]))
        sizes = [f.stat().st_size for f in files]  # half the bytes, and torch.save's header for each of ~500 tensors
        assert all(size < 0.7 * whole for size in sizes), (sizes, whole)
        assert (folder / "state" / ".metadata").stat().st_size < 0.1 * whole


def test_sharded_checkpoint_resumes_a_one_worker_run(runs):
    """The sharded run's first checkpoint (DCP, read whole without a process group): one worker
    on the global batch resumes it and ends where the uninterrupted one-worker run ends. (The
    checkpoint's config says batch_size 2 per worker; a one-worker run of the same global batch
    says 4, so it is told so, as a user continuing a 2-worker run on one GPU would.)"""
    first = _checkpoint_as(runs["first"], runs["tmp"] / "first-as-one", _config(2 * PER_WORKER_BATCH))
    single = runs["tmp"] / "single"
    train(_config(2 * PER_WORKER_BATCH), out_dir=single, progress=False, resume_from=first)
    _assert_same_method_state(_state(single)["method"], _state(runs["one"])["method"], ATOL)


def test_sharded_checkpoint_resumes_a_sharded_run_of_another_world_size(runs):
    """The 2-rank DCP checkpoint loads into a 1-rank sharded run (DCP reshards: the one rank reads
    both files), which ends where the one-worker run on the same global batch ends."""
    first = _checkpoint_as(runs["first"], runs["tmp"] / "first-as-one-rank", _config(2 * PER_WORKER_BATCH))
    one_rank = _spawn(runs["tmp"], "one-rank", world=1, batch=2 * PER_WORKER_BATCH, resume_from=first)
    assert [f.name for f in (one_rank / "checkpoint" / "state").glob("*.distcp")] == ["__0_0.distcp"]
    _assert_same_method_state(_state(one_rank)["method"], _state(runs["one"])["method"], ATOL)


def test_a_damaged_sharded_checkpoint_falls_back_to_the_previous_one(runs):
    """A rank's file cut short (a copy interrupted) is found from the DCP metadata alone, before
    any shard is read; the previous checkpoint is used, and without one the checkpoint is refused."""
    folder = runs["tmp"] / "damaged" / "checkpoint"
    previous = folder.with_name("checkpoint" + PREVIOUS)
    shutil.copytree(runs["first"], folder)
    shutil.copytree(runs["first"], previous)
    shard = folder / "state" / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.warns(UserWarning, match=r"__1_0.distcp has 1000 bytes.*resuming from the previous checkpoint"):
        state = load_checkpoint(folder, _config(PER_WORKER_BATCH))
    assert state["iteration"] == 2 and state["method"].folder == previous / "state"
    shutil.rmtree(previous)
    with pytest.raises(ConfigError, match=r"meta.pt is damaged and cannot be read"):
        load_checkpoint(folder, _config(PER_WORKER_BATCH))


def test_sharded_run_resumes_as_uninterrupted(runs):
    """2 sharded workers resume their first checkpoint (DCP) and end where the uninterrupted sharded
    run ended (same arithmetic: only the load in between), with the same metrics rows after it."""
    resumed = _spawn(runs["tmp"], "resumed", resume_from=runs["first"])
    _assert_same_method_state(_state(resumed)["method"], _state(runs["two"])["method"], 1e-6)
    got, want = _rows(resumed), [row for row in _rows(runs["two"]) if int(row["iteration"]) > 2]
    assert got == want and len(got) == 1


def test_ranks_apart_gather_a_state_pt_and_a_state_pt_resumes_a_sharded_run(runs):
    """Ranks that do not see one checkpoint folder (rank 1's out_dir elsewhere, as on another node
    without shared storage) fall back to the gathered state.pt; and a state.pt (the first
    checkpoint in the one-worker layout) resumes a sharded run where the uninterrupted one ends."""
    whole = runs["tmp"] / "first-whole"
    whole.mkdir()
    torch.save(read_checkpoint(runs["first"]), whole / WHOLE)
    apart = _spawn(runs["tmp"], "apart", resume_from=whole, apart=True)
    assert (apart / "checkpoint" / WHOLE).is_file() and not (apart / "checkpoint" / "state").exists()
    assert not (runs["tmp"] / "apart-rank1").exists()  # rank 1 wrote nothing of its own
    _assert_same_method_state(_state(apart)["method"], _state(runs["two"])["method"], 1e-6)


@pytest.mark.slow
def test_four_sharded_workers_train_as_one_worker(tmp_path):
    world = 4
    one = tmp_path / "one"
    train(_config(world * PER_WORKER_BATCH), out_dir=one, progress=False)
    four = _spawn(tmp_path, "four", world=world)
    _assert_same_method_state(_state(four)["method"], _state(one)["method"], ATOL)


def _state_iteration(checkpoint_dir) -> int:
    return read_checkpoint(checkpoint_dir)["iteration"]


def _checkpoint_as(checkpoint: Path, target: Path, config: TrainConfig) -> Path:
    """A copy of the DCP checkpoint ``checkpoint`` saying ``config`` (a run of another number of
    workers on the same global batch: a config's batch_size is per worker)."""
    shutil.copytree(checkpoint, target)
    meta = torch.load(target / META, weights_only=False)
    meta["config"] = config.to_dict()
    torch.save(meta, target / META)
    return target


def _elements_per_file(folder: Path) -> tuple[Counter, int]:
    """How many of a DCP checkpoint's tensor elements each of its files holds, and how many there are."""
    metadata = dcp.FileSystemReader(str(folder)).read_metadata()
    held = Counter()
    for index, info in metadata.storage_data.items():
        item = metadata.state_dict_metadata[index.fqn]
        if isinstance(item, TensorStorageMetadata):
            chunk = next(c for c in item.chunks if tuple(c.offsets) == tuple(index.offset))
            held[info.relative_path] += math.prod(chunk.sizes)
    total = sum(math.prod(item.size) for item in metadata.state_dict_metadata.values()
                if isinstance(item, TensorStorageMetadata))
    return held, total


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _tensors(value)


def _rows(out_dir) -> list[dict]:
    """metrics.csv's rows without the times and the prompts encoded (a resumed run encodes again)."""
    with open(out_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("seconds") and k != "prompts_encoded"}
                for row in csv.DictReader(f)]


def _last_metrics(out_dir) -> dict:
    with open(out_dir / "metrics.csv", newline="") as f:
        row = list(csv.DictReader(f))[-1]
    return {k: float(v) for k, v in row.items() if v not in ("", None)}
