"""Multi-GPU trials: one Tune trial, one placement group, N data-parallel workers.

A backbone whose ``resources`` ask for ``workers: N > 1`` (full fine-tuning of sd35m on 8 GPUs)
trains data-parallel (`dpdmd.parallel.distributed`) over N worker processes. By default the student, the
fake score and their optimiser states are *sharded* over the workers (FSDP2, `dpdmd.parallel.sharding`):
each GPU holds 1/N of them, which is what lets SD3.5-L (8 B) train fully at all; ``shard: false``
replicates them instead (gradients averaged: less communication, for networks that fit one GPU).
The trial's resources are one placement group, ``[{}] + [{"CPU": cpu, "GPU": gpu}] * N``
(`trial_resources`), so Tune starts the trial only when all N workers fit, and never half of one. Inside it:

- the Tune trial itself (the empty head bundle: Ray puts it on the node of the first worker
  bundle, with no resources of its own) is the *coordinator*: it starts one worker actor per
  worker bundle, waits, forwards rank 0's reports to ``tune.report`` and kills the workers when
  it ends, fails or is stopped (actors die with the trial that owns them anyway);
- each worker joins a process group (NCCL on a GPU, gloo on the CPU; rendezvous on rank 0's
  address) and runs ``dpdmd.train(..., distributed=DistributedContext(rank, N))``;
- rank 0 evaluates and writes the trial's ``run/`` directory (teacher reference, metrics, the saved
  student and state), asks the trial's saves rule what to save (`tune.trial.saves`: the student at a
  new best, the state at the cadence), hands each evaluation to the coordinator through a queue and
  waits for the coordinator's acknowledgement, so Tune has the checkpoint and the resume store the
  state before training (and the next save) goes on; the other ranks meet it at the next collective
  (sharded: they sample the evaluation set and gather the student with rank 0, which alone scores
  and writes it, and each writes its own shards of the state into rank 0's ``run/checkpoint``,
  `dpdmd.training.checkpoints`: nothing is gathered);
- **where the ranks write**: every worker gets the coordinator's workspace path as ``out_dir``
  (a local folder on the first worker's node). Ranks on that node see it; a rank placed on
  another node (PACK spreads the bundles over nodes when one has too few GPUs) does not, and
  cannot write its shards where the coordinator uploads them, so there the checkpoint falls back
  to the state gathered on rank 0 (``state.pt``, with a warning; the ranks find out at each
  save). So a sharded trial should ask for at most one node's GPUs (PACK then keeps it on one
  node), unless the workspace is on storage every node shares;
- a restarted trial's workers all resume from the trial's resume store (`tune.trial.saves.ResumeStore`,
  downloaded into rank 0's workspace, which every rank must see, as above; either layout, whatever
  the number of workers or sharding: a trial may resume another's state);
- each rank's anchors come from the search's shared anchor cache, keyed by (rank, N) since each
  rank asks for its own rows (`tune.trial.trainable.shared_caches`); the teacher is replicated, so a
  cache miss on one rank needs no other rank.

Why this and not Ray Train's ``TorchTrainer`` inside the trial: in Ray 2.60 Train V2 is the
default, and a ``TorchTrainer`` launched from a Tune function trainable creates *its own*
placement group for its workers, outside the trial's
(``ray/train/v2/_internal/execution/worker_group/worker_group.py``), so Tune would reserve the
trial's head and the workers separately: trials can hold a head while waiting for GPUs that other
trials hold. Its checkpoints go to Train's storage and reach Tune only as a path in the metrics
(``TuneReportCallback``), not as the trial's ``tune.Checkpoint`` that ``CheckpointConfig``,
failure retries and ``--resume`` use here; and every trial would pay a Train controller actor.
Not accelerate per trial either: something must still start the N processes inside the trial's
bundles (these actors, or ``accelerate launch``, which knows nothing of placement groups), and
``Accelerator.prepare`` wraps the networks in DDP and the optimisers, which `dpdmd.parallel.distributed`
and `dpdmd.parallel.sharding` avoid (their docstrings say why; for FSDP accelerate calls the same
``fully_shard`` that `dpdmd.parallel.sharding` calls). The workers here are a few dozen lines of plain Ray actors around
`dpdmd.parallel.distributed`, which runs as well under torchrun or ``torch.multiprocessing``.

Wiring into the search (``tune.run.tuner.build_tuner``)::

    trainable = build_trainable(space, cache, experiment=join_uri(storage, name))  # each trial: its placement group
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

import ray
import torch
from ray import tune
from ray.util.placement_group import get_current_placement_group
from ray.util.queue import Empty, Queue
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dpdmd.config import TrainConfig

from ..space.schema import SearchSpace
from .saves import ResumeStore
from .trainable import TrialReporter, run_trial, shared_caches, trial_storage, trial_workspace
from .restore import RestoreWithoutCheckpoint
from .worker_exit import QuietExitOnSigterm, quiet_sigterm

POLL_SECONDS = 0.5  # how often the coordinator checks its workers while no report is waiting


# --- resources ------------------------------------------------------------------------------------

def multi_worker_resources(*, workers: int, cpu: float = 1.0, gpu: float = 0.0, head_cpu: float = 0.0,
                           strategy: str = "PACK") -> tune.PlacementGroupFactory:
    """One placement group for a trial of ``workers`` workers: a head bundle (the coordinator;
    empty by default, which puts it on the first worker's node) and a bundle per worker.

    Args:
        cpu, gpu: per worker (the backbone's ``resources.cpu`` / ``resources.gpu``).
        head_cpu: CPUs reserved for the coordinator (it only waits; 0 is enough). Above 0 the
            head is a bundle of its own: then ask ``strategy="STRICT_PACK"`` (one node) so rank 0
            writes its checkpoints where the coordinator hands them to Tune.
        strategy: Ray's placement strategy; "PACK" keeps the workers on as few nodes as fit.
    """
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers: {workers!r} must be an integer >= 1")
    worker = {"CPU": float(cpu), "GPU": float(gpu)}
    return tune.PlacementGroupFactory([{"CPU": float(head_cpu)}] + [worker] * int(workers), strategy=strategy)


def shards_networks(resources: Mapping[str, float]) -> bool:
    """Whether a multi-worker trial shards its networks (``resources.shard``; default true)."""
    return bool(resources.get("shard", True))


def trial_resources(resources: Mapping[str, float]) -> tune.PlacementGroupFactory:
    """A backbone's ``resources`` ({cpu, gpu[, workers, shard]}) as the trial's placement group:
    one bundle for one worker, `multi_worker_resources` for several."""
    workers = int(resources.get("workers", 1))
    cpu, gpu = float(resources.get("cpu", 1)), float(resources.get("gpu", 0))
    if workers == 1:
        return tune.PlacementGroupFactory([{"CPU": cpu, "GPU": gpu}])
    return multi_worker_resources(workers=workers, cpu=cpu, gpu=gpu)


def trial_backbone(space: SearchSpace, config: dict) -> str:
    return config.get("backbone", space.backbone_names()[0])


def build_trainable(space: SearchSpace, cache: dict, *, experiment: str):
    """The search's trainable: `run_search_trial` with each backbone's placement group
    (``experiment``: the search's folder, STORAGE/NAME, where each trial keeps its resumable state;
    its actor ends quietly on SIGTERM: `tune.trial.worker_exit`; it resumes when its Ray checkpoint
    is gone: `tune.trial.restore`)."""
    run_search_trial.__mixins__ = (QuietExitOnSigterm, RestoreWithoutCheckpoint)  # wrap_function subclasses these
    return tune.with_resources(tune.with_parameters(run_search_trial, space=space, cache=cache, experiment=experiment),
                               lambda config: trial_resources(space.backbones[trial_backbone(space, config)].resources))


def run_search_trial(config: dict, *, space: SearchSpace, cache: dict, experiment: str) -> None:
    """Ray Tune function trainable: `run_multi_worker_trial` if the trial's backbone asks for
    several workers, else `tune.trial.trainable.run_trial`."""
    workers = int(space.backbones[trial_backbone(space, config)].resources.get("workers", 1))
    if workers > 1:
        return run_multi_worker_trial(config, space=space, cache=cache, workers=workers, experiment=experiment)
    return run_trial(config, space=space, cache=cache, experiment=experiment)


# --- the coordinator (the Tune trial) -------------------------------------------------------------

def run_multi_worker_trial(config: dict, *, space: SearchSpace, cache: dict, workers: int, experiment: str) -> None:
    """One trial trained data-parallel by ``workers`` worker actors in the trial's placement group
    (built by `multi_worker_resources`; its last ``workers`` bundles are the workers')."""
    train_config = space.train_config(config)
    resources = space.backbones[train_config.backbone].resources
    pg = get_current_placement_group()
    if pg is None or len(pg.bundle_specs) < workers:
        raise RuntimeError(f"a {workers}-worker trial needs its placement group from "
                           f"trial_resources / multi_worker_resources(workers={workers}); got {pg}")
    out_dir = trial_workspace()
    resume = ResumeStore(trial_storage(experiment))
    pointer = resume.download(out_dir / "resume")  # a restarted or resumed trial: its last state (rank 0's node)
    best = pointer["best_shown_objective"] if pointer else float("-inf")
    reporter = TrialReporter(space=space, train_config=train_config, out_dir=out_dir, resume=resume, best=best,
                             extra={"workers": workers, "sharded": shards_networks(resources)})
    first = len(pg.bundle_specs) - workers
    actors = [_Worker.options(num_cpus=float(resources.get("cpu", 1)), num_gpus=float(resources.get("gpu", 0)),
                              scheduling_strategy=PlacementGroupSchedulingStrategy(
                                  placement_group=pg, placement_group_bundle_index=first + rank)).remote()
              for rank in range(workers)]
    reports, acks = Queue(actor_options={"num_cpus": 0}), Queue(actor_options={"num_cpus": 0})
    try:
        init_method = ray.get(actors[0].rendezvous.remote())
        runs = [actor.run.remote(train_config, rank=rank, world_size=workers, init_method=init_method,
                                 shard_networks=shards_networks(resources), out_dir=str(out_dir),
                                 resume_from=str(out_dir / "resume") if pointer else None, best=best,
                                 space=space, cache=cache,
                                 threads=max(1, int(resources.get("cpu", 1))), reports=reports, acks=acks)
                for rank, actor in enumerate(actors)]
        pending = list(runs)
        while pending:
            try:
                metrics, saved = reports.get(timeout=POLL_SECONDS)
            except Empty:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                ray.get(done)  # a worker's exception ends the trial here (Tune may retry it)
                continue
            reporter(metrics, saved)  # persisted (checkpoint and state) before rank 0 is told to go on
            acks.put(True)
    finally:
        for actor in actors:
            ray.kill(actor)  # a rank left waiting in a collective would otherwise wait out its timeout
        reports.shutdown(force=True)
        acks.shutdown(force=True)


# --- the workers ----------------------------------------------------------------------------------

@ray.remote
class _Worker:
    """One rank of a multi-worker trial: a process with its bundle's CPUs and GPU."""

    def __init__(self):
        quiet_sigterm()  # the actor's creation task runs on the main thread

    def rendezvous(self) -> str:
        """``tcp://HOST:PORT`` on this (rank 0's) node, a port free now, for the process group."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"tcp://{ray.util.get_node_ip_address()}:{port}"

    def run(self, train_config: TrainConfig, *, rank: int, world_size: int, init_method: str, shard_networks: bool,
            out_dir: str, resume_from: str | None, best: float, space: SearchSpace, cache: dict, threads: int,
            reports: Queue, acks: Queue) -> None:
        from dpdmd.parallel.distributed import destroy_process_group, init_process_group
        from dpdmd.training.build import resolve_device
        from dpdmd.training.loop import train

        torch.set_num_threads(threads)
        # Ray shows each worker only its own GPU: "auto" / "cuda" is that one, and NCCL is used.
        context = init_process_group(rank=rank, world_size=world_size, init_method=init_method,
                                     device=resolve_device(train_config.device), shard_networks=shard_networks)

        def report(metrics: dict, saved) -> None:  # rank 0 only (train() drops it elsewhere)
            reports.put((metrics, saved))
            acks.get()  # wait until Tune has the checkpoint: the next one replaces this directory

        # rank 0 asks the trial's saves rule (the same as a one-worker trial's); the other ranks follow it
        rule = TrialReporter(space=space, train_config=train_config, out_dir=Path(out_dir), resume=None, best=best)

        try:
            anchors, embeddings = _shared_caches(train_config, space, cache, rank=rank, world_size=world_size)
            train(train_config, report=report, out_dir=out_dir, resume_from=resume_from, saves=rule.saves,
                  anchors=anchors, embeddings=embeddings, progress=False, distributed=context)
        finally:
            destroy_process_group()


def _shared_caches(train_config: TrainConfig, space: SearchSpace, cache: dict, *, rank: int, world_size: int):
    """The search's anchor and prompt caches for one rank (None, None when disabled)."""
    if not cache["enabled"]:
        return None, None
    return shared_caches(train_config, space, cache, shard=(rank, world_size))
