"""Data-parallel DP-DMD: one run over several processes, one per GPU (NCCL) or CPU process (gloo).

No Ray here. Whatever starts the processes and their `torch.distributed` process group (the
multi-worker Tune trial in `tune.trial.multi_gpu`, ``torchrun``, ``torch.multiprocessing.spawn`` in the
tests) passes each process's `DistributedContext` to ``dpdmd.train(config, distributed=...)``.

The rules, chosen so that W workers train exactly as one worker on the W-times larger batch:

1. **Batches.** Iteration ``i``'s *global* batch is drawn from the stream (`dpdmd.stream`) with
   ``config.batch_size * world_size`` rows, exactly as a one-worker run with that batch size draws
   it; rank ``r`` trains on rows ``r, r + W, r + 2W, ...`` (`DistributedContext.shard`). The DMD
   noise level is one per global batch, so every rank uses the same. ``config.batch_size`` is
   therefore *per worker*, as in the reference (4 per GPU on 8 GPUs).
2. **Gradients.** Every trainable parameter of the student and of the fake score is averaged over
   the ranks as soon as backward has accumulated its gradient (`GradientAverager`), before
   `DPDMD` clips the norm and steps AdamW. Each loss is a mean over equally sized shards, so the
   averaged gradient is the one-worker gradient of the global batch; the clip, the AdamW step and
   the weights are then the same on every rank (`attach` first copies rank 0's weights to all).
3. **Anchors.** Each rank asks its anchor provider for its own rows only, so the teacher's anchor
   pass is split over the ranks too. A provider that caches by iteration must therefore key by
   rank and world size as well (`tune.trial.multi_gpu` does).
4. **Outputs.** Rank 0 alone evaluates, writes ``out_dir`` (metrics, samples, checkpoints) and
   calls ``report``; the other ranks only train. On resume every rank loads the same checkpoint.
   A run stops on every rank together (`DistributedContext.any`): at each iteration the ranks
   agree whether any rank's loss was not finite, and at each evaluation whether rank 0 found the
   student diverged.
   Nothing in training draws from the global RNG, so rank 0's evaluation cannot desynchronise it.

Why gradient hooks and not `torch.nn.parallel.DistributedDataParallel`: DDP works by *wrapping*
the network, and `DPDMD` and the backbones use the network object itself: the digits backbone
dispatches on ``isinstance(net, SD3Transformer2DModel)``, checkpoints and ``save_pretrained`` use
its parameter names (DDP prefixes ``module.``), and rank 0 evaluates it alone (a DDP forward may
broadcast buffers, a collective). Hooks on the parameters leave the networks untouched, so the
method, the evaluation and the checkpoint format are the same as a one-worker run's. The cost is
DDP's bucketing and overlap: one all-reduce per parameter tensor, issued from the backward pass
(on NCCL it is queued on the communication stream without blocking the host). Full fine-tuning of
SD3.5-M over 8 GPUs averages ~9 GB of fp32 gradients per update this way, and every rank holds the
whole networks and AdamW states (~72 GB). ``DistributedContext(shard_networks=True)`` shards them
instead (FSDP2, `dpdmd.parallel.sharding`): rules 1 and 3 stay, rule 2 becomes a reduce-scatter, and rule 4
changes in one point: every rank takes part in the evaluation's sampling (collectives) and writes
its own shards of each checkpoint (``torch.distributed.checkpoint``, `dpdmd.parallel.sharded_checkpoint`),
while rank 0 alone scores, writes the rest and reports.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from . import sharding
from ..stream import Batch


def backend_for(device: torch.device | str) -> str:
    """NCCL for CUDA devices, gloo for the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedContext:
    """This process's place in a data-parallel run.

    Attributes:
        rank: 0..world_size-1; rank 0 evaluates, writes and reports.
        world_size: number of processes (workers) training together.
        shard_networks: split the student, the fake score and their optimiser states over the ranks
            (FSDP2, `dpdmd.parallel.sharding`) instead of replicating them (rule 2's gradient averaging).
            Then every rank takes part in the evaluation's sampling and writes its checkpoint shards.
    """

    rank: int
    world_size: int
    shard_networks: bool = False

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"DistributedContext: rank {self.rank} of world_size {self.world_size}; "
                             f"need world_size >= 1 and 0 <= rank < world_size")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Batch) -> Batch:
        """This rank's rows ``rank::world_size`` of a global batch (rule 1); B_global must be a
        multiple of world_size. The iteration and the DMD level index are shared."""
        rows = batch.x1.shape[0]
        if rows % self.world_size:
            raise ValueError(f"a global batch of {rows} rows does not split over {self.world_size} workers; "
                             f"draw it with batch_size * world_size rows")
        take = slice(self.rank, None, self.world_size)
        return dataclasses.replace(batch, prompts=batch.prompts[take], x1=batch.x1[take],
                                   dmd_eps=batch.dmd_eps[take])

    @property
    def sharded(self) -> bool:
        """Whether the networks are FSDP2-sharded (collective forward passes). A one-rank context
        that asks for it shards over its one rank (the sharded code path on one GPU)."""
        return self.shard_networks

    def prepare(self, backbone, optimizer: str = "adamw") -> None:
        """Before `DPDMD` builds the networks, on every rank: a sharded run of full fine-tuning
        builds the student and the fake score on the meta device (`dpdmd.parallel.sharding`: each rank then
        allocates and loads only its shards). ``optimizer``: the config's; the host-offloaded one
        keeps whole host copies of the parameters and is refused with sharding (a ConfigError)."""
        if not self.sharded:
            return
        if optimizer == "adamw_offload":
            from ..config import ConfigError

            raise ConfigError(["optimizer: 'adamw_offload' keeps whole host copies of the parameters and "
                               "cannot step FSDP2 shards; a sharded trial (workers > 1, shard: true) already "
                               "splits the AdamW states over its GPUs: use 'adamw' or 'adamw8bit'"])
        backbone.trainable_on_meta = sharding.builds_on_meta(backbone)

    def attach(self, method) -> GradientAverager | None:
        """Make `method` (a `dpdmd.method.DPDMD`) train over the ranks. Replicated (rule 2): copy
        rank 0's trainable weights of the student and the fake score to every rank, then average
        their gradients over the ranks in every backward pass. Sharded: `dpdmd.parallel.sharding.
        shard_networks` (the weights are the same on every rank already: built from the same
        teacher, whole or on the meta device: `prepare`). Call once, on every rank, before
        training and before loading a checkpoint."""
        if self.world_size == 1 and not self.shard_networks:
            return GradientAverager([], world_size=1)
        self._check_process_group()
        if self.shard_networks:
            sharding.shard_networks(method, world_size=self.world_size, device=method.backbone.device)
            return None
        params = [*method.trainable(method.student), *method.trainable(method.fake)]
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)
        return GradientAverager(params, world_size=self.world_size)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank: a collective (every rank calls it at the same
        point). How the ranks agree to stop together: a rank that stopped alone (its loss not
        finite, rank 0's evaluation diverged) would leave the others waiting in the next
        collective until its timeout."""
        if self.world_size == 1:
            return bool(flag)
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        votes = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return bool(votes.item())

    def method_state(self, method) -> dict | None:
        """The method's state whole (`DPDMD.state_dict()`'s format) on rank 0, None on the others.
        Sharded: gathered from every rank (a collective: every rank calls it); checkpoints gather
        only where the ranks do not share the checkpoint folder (`dpdmd.training.checkpoints`)."""
        if self.sharded:
            return sharding.full_state_dict(method)
        return method.state_dict() if self.is_main else None

    def load_method_state(self, method, state: dict) -> None:
        """Load a method state in `DPDMD.state_dict()`'s format (a ``state.pt``'s, written by a run of
        any number of workers; a sharded checkpoint's shards load through `dpdmd.training.checkpoints.resume`)."""
        if self.sharded:
            sharding.load_full_state_dict(method, state)
        else:
            method.load_state_dict(state)

    def _check_process_group(self) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(f"rank {self.rank} of {self.world_size}: no torch.distributed process group; "
                               f"call dpdmd.parallel.distributed.init_process_group(...) first")
        if dist.get_world_size() != self.world_size or dist.get_rank() != self.rank:
            raise RuntimeError(f"DistributedContext says rank {self.rank} of {self.world_size}, the process group "
                               f"rank {dist.get_rank()} of {dist.get_world_size()}")


class GradientAverager:
    """Averages each parameter's gradient over the process group as backward accumulates it.

    Uses ``Tensor.register_post_accumulate_grad_hook``: the hook runs once per parameter and
    backward pass, after the gradient is complete (a parameter used in several student steps is
    summed first). The ranks run the same graph, so the hooks, and the all-reduces they issue,
    come in the same order on every rank.
    """

    def __init__(self, params: Iterable[nn.Parameter], *, world_size: int):
        self.world_size = world_size
        self._handles = [p.register_post_accumulate_grad_hook(self._average) for p in params]

    def _average(self, param: torch.Tensor) -> None:
        param.grad.div_(self.world_size)  # sum of grad / W: gloo has no AVG reduction
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)

    def remove(self) -> None:
        """Stop averaging (the parameters train locally again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def init_process_group(*, rank: int, world_size: int, init_method: str, device: torch.device | str,
                       timeout_s: float = 1800.0, shard_networks: bool = False) -> DistributedContext:
    """Join the process group (NCCL on CUDA, gloo on the CPU) and return this rank's context.

    Args:
        init_method: rendezvous URL, ``tcp://HOST:PORT`` (HOST: rank 0's address) or ``file://PATH``.
        device: this process's device; a CUDA device becomes the current one, so ``"cuda"`` in
            the training config means it.
        timeout_s: how long a collective waits for a rank that stopped (a crashed worker ends the
            others after this).
        shard_networks: the context's ``shard_networks`` (FSDP2 sharding instead of replicas).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return DistributedContext(rank=rank, world_size=world_size, shard_networks=shard_networks)


def destroy_process_group() -> None:
    """Leave the process group, if any (safe to call twice)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
