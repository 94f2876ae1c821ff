"""Sharded DP-DMD (FSDP2): the student, the fake score and their optimiser states split over the ranks.

`dpdmd.parallel.distributed` replicates the networks on every rank and averages gradients; that needs the
whole student, fake score, their gradients and AdamW states on each GPU (16 bytes per trainable
parameter and network: ~72 GB for SD3.5-M, ~260 GB for SD3.5-L's 8 B). Here
(``DistributedContext(..., shard_networks=True)``) each of those is split over the W ranks with
PyTorch's FSDP2, ``torch.distributed.fsdp.fully_shard``:

1. **What is sharded.** The student and the fake score: every repeated block (SD3's
   ``JointTransformerBlock``, SDXL's ``BasicTransformerBlock``, `acceleration.repeated_block_classes`)
   is one FSDP unit, the rest of the network the root unit. Parameters become ``DTensor`` shards
   (dim 0 split over the ranks); a unit's full weights exist only while its forward or backward
   runs (all-gathered, freed after). Gradients are reduce-scattered (averaged over the ranks, as
   `dpdmd.parallel.distributed`'s rule 2), so the AdamW states, created at the first step, are shards too.
   **What is replicated:** the frozen teacher (bf16 in the diffusers backbones), the VAE and the
   prompt embeddings. The teacher stays whole because each rank runs it alone: its anchor pass on
   its own rows (possibly a cache hit on one rank and a miss on another) and rank 0's teacher
   reference, neither of which may wait for collectives from ranks that do not run them.
2. **Same numbers as one worker.** Batches and anchors follow `dpdmd.parallel.distributed`'s rules 1 and 3.
   The reduce-scatter averages the per-rank mean losses' gradients (the global batch's gradient);
   ``clip_grad_norm_`` on the ``DTensor`` gradients reduces the squared norms over the ranks (the
   global norm), and AdamW is elementwise, so each shard steps as its slice of the one-worker step.
   Differences are fp32 summation order only.
3. **Every rank in the collectives.** The student's forward passes all-gather, so the evaluation's
   sampling runs on every rank (rank 0 alone scores, writes and reports), and a
   checkpoint is gathered by every rank (`full_state_dict`: ``get_model_state_dict`` /
   ``get_optimizer_state_dict`` with ``full_state_dict=True``, kept on rank 0 in CPU memory).
4. **One checkpoint format.** `full_state_dict` returns exactly `DPDMD.state_dict()`'s layout
   (trainable weights by name, optimiser states indexed as ``Optimizer.state_dict()`` does), so a
   sharded run's checkpoint resumes a one-worker run and the other way round (`load_full_state_dict`
   shards it onto the ranks).

Why FSDP2 itself and not accelerate's FSDP (the reference's choice): ``Accelerator.prepare`` wraps
the optimisers (``AcceleratedOptimizer``) and, for FSDP2, calls this same ``fully_shard``;
accelerate adds a process launcher (``accelerate launch``, which knows nothing of Ray's placement
groups) and a process-wide ``AcceleratorState`` singleton configured by environment variables.
DP-DMD owns its two optimisers and its autocast (`DPDMD`), and the processes are started by
`tune.trial.multi_gpu` (or torchrun / ``torch.multiprocessing``), so accelerate would only add a layer
over the three calls used here. FSDP2 rather than FSDP1 because it does not wrap: the network stays
an instance of its own class (the backbones dispatch on ``isinstance``), parameter names keep no
``_fsdp_wrapped_module.`` prefix, and frozen and trainable parameters (LoRA) may share a unit.
Only APIs present in both torch 2.11 (the GPU image) and 2.13 are used.

**Built on the meta device.** Full fine-tuning's student and fake score are fp32 copies of the
teacher, so a rank never needs them whole: with ``Backbone.trainable_on_meta`` (set by
`DistributedContext.prepare`) `DPDMD` builds them on the meta device (shapes, no storage),
`shard_networks` shards them (``fully_shard`` on meta modules, as FSDP2 intends), allocates this
rank's shards (``to_empty``) and copies each shard's slice out of the teacher that the rank holds
anyway (`_load_from_teacher`: cast to fp32, the values a one-worker run's copy gets; no
communication, no whole copy anywhere). A rank's build peak is then the teacher plus 1/N of the
two fp32 networks, instead of the teacher plus both whole (~97 GB for SD3.5-L:
``bench/sharded_build_memory.py`` measures it). LoRA students are built whole and then sharded,
as before: their adapters' random initialisation draws from the RNG as a one-worker run's does,
and their frozen bases are the teacher's size in bf16 (3 x 16 GB for SD3.5-L), which fits.

The optimisers are built by `DPDMD` before sharding (on the whole or meta parameters);
`shard_networks` re-points them at the sharded parameters (same names, same order), which is valid
while they hold no state yet, so the optimiser's class and settings stay whatever `DPDMD` chose.
The host-offloaded optimiser (``adamw_offload``) keeps host copies of the whole parameters and is
refused with sharding (`DistributedContext.prepare`).
"""

from __future__ import annotations

import itertools

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from .acceleration import repeated_block_classes

NETWORKS = (("student", "opt_student"), ("fake", "opt_fake"))  # `DPDMD` attributes, as in its state_dict


def builds_on_meta(backbone) -> bool:
    """Whether a sharded run builds ``backbone``'s student and fake score on the meta device: when
    they are whole copies of the teacher (full fine-tuning), whose weights `_load_from_teacher`
    can fill in."""
    return bool(getattr(backbone, "trains_teacher_copies", False))


def shard_networks(method, *, world_size: int, device: torch.device) -> None:
    """Shard ``method``'s student and fake score (and so their gradients and optimiser states) over
    the process group's ``world_size`` ranks. Call once on every rank, before any optimiser step,
    after the weights are the same on every rank (they are: every rank builds them from the same
    teacher, whole or on the meta device, and a resumed run loads its checkpoint after this, with
    `load_full_state_dict`). Networks on the meta device get their shards allocated on ``device``
    and loaded from ``method.teacher``."""
    mesh = init_device_mesh(device.type, (world_size,))
    for net_key, opt_key in NETWORKS:
        net, opt = getattr(method, net_key), getattr(method, opt_key)
        if opt.state:
            raise RuntimeError(f"shard_networks: {opt_key} has already stepped; shard before training")
        names = _optimizer_param_names(net, opt)
        blocks = repeated_block_classes(net)
        for module in list(net.modules()):
            if module is not net and type(module).__name__ in blocks:
                fully_shard(module, mesh=mesh)
        fully_shard(net, mesh=mesh)
        if any(p.is_meta for p in net.parameters()):  # built without storage: allocate and fill the shards
            net.to_empty(device=device)
            _load_from_teacher(net, method.teacher)
        sharded = dict(net.named_parameters())
        for group, group_names in zip(opt.param_groups, names, strict=True):
            group["params"] = [sharded[name] for name in group_names]


@torch.no_grad()
def _load_from_teacher(net: nn.Module, teacher: nn.Module) -> None:
    """Fill a sharded copy of the teacher (``to_empty``: storage, no values) with the teacher's
    weights: each parameter's local shard (this rank's slice of dim 0, ``distribute_tensor`` with
    ``src_data_rank=None``: sliced locally, no communication) and each (replicated) buffer, cast to
    the copy's dtype. Buffers that are not in the state dict (e.g. SD3's positional embedding) are
    filled too."""
    source = {**dict(teacher.named_parameters()), **dict(teacher.named_buffers())}
    for name, tensor in itertools.chain(net.named_parameters(), net.named_buffers()):
        full = source.get(name)
        if full is None or full.shape != tensor.shape:
            raise RuntimeError(f"shard_networks: {name} {tuple(tensor.shape)} of the meta-built copy has no "
                               f"teacher tensor of that shape ({None if full is None else tuple(full.shape)})")
        if isinstance(tensor, DTensor):
            local = distribute_tensor(full, tensor.device_mesh, tensor.placements, src_data_rank=None)
            tensor.to_local().copy_(local.to_local())
        else:
            tensor.copy_(full)


def is_sharded(net: nn.Module) -> bool:
    return isinstance(net, FSDPModule)


def full_state_dict(method) -> dict | None:
    """`DPDMD.state_dict()` of a sharded method, gathered: on rank 0 the one-worker format (CPU
    tensors), None on the other ranks. A collective: every rank must call it, in the same order."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state: dict = {}
    for net_key, opt_key in NETWORKS:
        net, opt = getattr(method, net_key), getattr(method, opt_key)
        trainable = {name for name, p in net.named_parameters() if p.requires_grad}
        weights = get_model_state_dict(net, options=options)
        state[net_key] = {name: w for name, w in weights.items() if name in trainable}
        # An optimiser that has not stepped has no state to gather (and get_optimizer_state_dict
        # would create it by a zero step, counting a step that AdamW's bias correction then sees).
        state[opt_key] = _indexed(get_optimizer_state_dict(net, opt, options=options)) if opt.state else opt.state_dict()
    return state if dist.get_rank() == 0 else None


def load_full_state_dict(method, state: dict) -> None:
    """Load a one-worker-format state (`full_state_dict`, `DPDMD.state_dict()`) into a sharded
    method: every rank passes the whole state (load it with ``torch.load(..., mmap=True)``: the
    ranks of one node then share its pages) and keeps its own shards."""
    options = StateDictOptions(full_state_dict=True, strict=False)
    for net_key, opt_key in NETWORKS:
        net, opt = getattr(method, net_key), getattr(method, opt_key)
        missing = set(state[net_key]) - {n for n, _ in net.named_parameters()}
        if missing:
            raise ValueError(f"checkpoint has weights this backbone lacks: {sorted(missing)[:5]}")
        set_model_state_dict(net, state[net_key], options=options)
        named = _named(state[opt_key], _optimizer_param_names(net, opt))
        set_optimizer_state_dict(net, opt, named, options=StateDictOptions(full_state_dict=True))


def gathered_student(method, *, is_main: bool):
    """The whole student on rank 0, a CPU network built afresh from the backbone (a sharded module's
    ``state_dict`` holds its shards only), to save as its users load it; None on the other ranks.
    A collective: every rank gathers."""
    weights = get_model_state_dict(method.student, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main:
        return None
    net = method.backbone.make_trainable(method.backbone.load_teacher())
    net.load_state_dict(weights)
    return net


# --- optimiser state: indexed (Optimizer.state_dict) <-> named (torch.distributed.checkpoint) ----

def _optimizer_param_names(net: nn.Module, opt: torch.optim.Optimizer) -> list[list[str]]:
    """Each param group's parameter names (in the group's order)."""
    name_of = {id(p): name for name, p in net.named_parameters()}
    return [[name_of[id(p)] for p in group["params"]] for group in opt.param_groups]


def _indexed(named: dict) -> dict:
    """A name-keyed optimiser state (``get_optimizer_state_dict``) as ``Optimizer.state_dict()``
    keys it: parameters numbered 0.. through the groups in order."""
    if not named:  # off rank 0
        return {}
    index = {}
    groups = []
    for group in named["param_groups"]:
        ids = [index.setdefault(name, len(index)) for name in group["params"]]
        groups.append({**group, "params": ids})
    return {"state": {index[name]: s for name, s in named["state"].items()}, "param_groups": groups}


def _named(indexed: dict, names: list[list[str]]) -> dict:
    """The inverse of `_indexed`, with the names of this optimiser's groups."""
    flat = [name for group in names for name in group]
    groups = [{**group, "params": list(group_names)} for group, group_names in
              zip(indexed["param_groups"], names, strict=True)]
    return {"state": {flat[i]: s for i, s in indexed["state"].items()}, "param_groups": groups}
