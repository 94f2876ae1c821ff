"""``train(config, report=...)``: one DP-DMD run, from config to metrics.

The command line (`dpdmd.train`) and the search's Ray Tune trainable both call this function.
It builds the backbone and the `DPDMD` networks, walks the deterministic iteration stream
(`dpdmd.stream`), alternates fake-score and student updates by the two-time-scale rule, and every
``eval.every`` student updates evaluates the student, writes a checkpoint and calls ``report``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .anchors import AnchorProvider, LocalAnchors
from .backbones import Backbone, get_backbone
from . import sharding
from .config import ConfigError, TrainConfig
from .distributed import DistributedContext
from .evaluation import eval_prompts, generate, make_evaluator, save_grid, score, teacher_reference
from .method import DPDMD
from .prompt_cache import PromptEmbeddingCache
from .stream import is_student_iteration, iteration_batch, student_updates_done

Report = Callable[[dict, "Path | None"], None]  # (metrics, checkpoint directory or None)
CHECKPOINT = "checkpoint"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([f"device: {name!r} asked for, but torch sees no CUDA device; use 'cpu' or 'auto'"])
    return torch.device(name)


def build_backbone(config: TrainConfig) -> Backbone:
    """The backbone the config names, with its settings; a bad name or option is a ConfigError."""
    try:
        guidance = {} if config.cfg_scale is None else {"cfg_scale": config.cfg_scale}
        return get_backbone(config.backbone, teacher_steps=config.teacher_steps, student_steps=config.student_steps,
                            device=resolve_device(config.device), **guidance, **config.backbone_options)
    except (ValueError, FileNotFoundError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError([f"backbone: {err}"]) from None


def check(config: TrainConfig, backbone: Backbone) -> None:
    """What only the backbone can refuse (its prompts), reported at once. The ranges were
    checked when ``config`` was built (`TrainConfig`)."""
    problems = []
    for key, prompts in (("prompts", config.prompts), ("eval.prompts", config.eval.prompts)):
        try:
            backbone.validate_prompts(prompts)
        except ValueError as err:
            problems.append(f"{key}: {err}")
    if problems:
        raise ConfigError(problems)


def build_method(config: TrainConfig, backbone: Backbone) -> DPDMD:
    lr = config.lr if config.lr is not None else backbone.default_lr
    method = DPDMD(backbone, lambda_div=config.lambda_div, stop_grad=config.stop_grad, lr_student=lr,
                   lr_fake=config.lr_fake if config.lr_fake is not None else lr,
                   weight_decay=config.weight_decay, betas=(config.beta1, config.beta2),
                   grad_clip=config.grad_clip, mixed_precision=config.mixed_precision)
    if config.compile:
        from ._cache import cache_dir
        from .acceleration import compile_repeated_blocks, configure_compile_cache

        configure_compile_cache(cache_dir() / "compile")
        for net in (method.teacher, method.student, method.fake):
            compile_repeated_blocks(net, dynamic=False)
    return method


def train(config: TrainConfig, *, report: Report | None = None, out_dir: str | Path | None = None,
          resume_from: str | Path | None = None,
          anchors: Callable[[Backbone, torch.nn.Module, TrainConfig], AnchorProvider] | None = None,
          embeddings: Callable[[Backbone], PromptEmbeddingCache] | None = None,
          progress: bool = True, distributed: DistributedContext | None = None) -> dict:
    """Run DP-DMD as ``config`` says; returns the last evaluation's metrics. ``config`` is in
    range (a `TrainConfig` checks itself); what only the backbone can refuse is checked here,
    before anything is written.

    Args:
        report: called after every evaluation with (metrics, checkpoint dir or None).
        out_dir: where metrics.csv, PNG grids, checkpoints and the final student go (None: nowhere).
        resume_from: a checkpoint directory written by an earlier run of the same config.
        anchors: factory of the anchor provider (default: `LocalAnchors`, computed on demand).
        embeddings: factory of the prompt-embedding cache (default: encode locally, once a prompt).
        distributed: this process's rank in a data-parallel run (`dpdmd.distributed`): each
            iteration's batch is drawn for all ranks and sharded, gradients are averaged over the
            ranks, and only rank 0 evaluates, writes ``out_dir`` and calls ``report`` (the other
            ranks return {}). None: one process.
    """
    main = distributed is None or distributed.is_main
    # Sharded networks (FSDP2) forward only with every rank: all ranks then sample the evaluation
    # and gather each checkpoint (whenever rank 0 writes one), rank 0 alone scores and writes.
    sharded = distributed is not None and distributed.sharded
    collective_eval = main or sharded
    writes_checkpoints = out_dir is not None
    if not main:  # only rank 0 evaluates, writes and reports
        report, out_dir, progress = None, None, False
    backbone = build_backbone(config)
    check(config, backbone)
    out = _prepare_out_dir(out_dir, config)

    torch.manual_seed(config.seed)
    method = build_method(config, backbone)
    embed = embeddings(backbone) if embeddings else PromptEmbeddingCache(backbone)
    provider = anchors(backbone, method.teacher, config) if anchors else LocalAnchors(backbone, method.teacher, config.anchor_k)
    evaluator = make_evaluator(config.eval, backbone) if main else None
    train_prompts = list(config.prompts) or list(backbone.default_prompts)
    prompts_eval = eval_prompts(config, backbone)
    # Encode every prompt once now (each exactly once, through the cache), then free the text
    # encoders: T5-XXL alone is ~10 GB that training never needs again.
    embed(sorted(set(train_prompts) | set(prompts_eval) | {""}))
    backbone.release_text_encoders()
    if out is not None:
        _write_teacher_reference(out, config, backbone, method, embed, evaluator)

    world = 1
    if distributed is not None:  # replicas made equal and gradients averaged, or networks sharded
        distributed.attach(method)
        world = distributed.world_size
    start = _resume(resume_from, config, method, out, distributed)  # after attach: shards load their part
    updates = student_updates_done(start, config.fake_updates)
    running: dict[str, list[float]] = defaultdict(list)
    metrics: dict = {}
    evaluated = False
    started = time.time()

    def evaluate(iteration: int) -> dict:
        """Score the student, write its samples, metrics and checkpoint, and report them (rank 0;
        with sharded networks every rank samples and gathers, and the others get {})."""
        nonlocal evaluated
        result = _evaluate_and_save(config, method, evaluator, embed, prompts_eval, provider, running, out,
                                    iteration=iteration, updates=updates, seconds=time.time() - started,
                                    distributed=distributed, writes_checkpoints=writes_checkpoints)
        running.clear()
        evaluated = True
        if report is not None:
            report(result, out / CHECKPOINT if out is not None else None)
        return result

    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, disable=not progress,
               desc=f"{config.backbone} K={config.anchor_k} λ={config.lambda_div:g}", dynamic_ncols=True)
    for i in bar:
        batch = iteration_batch(seed=config.seed, iteration=i, prompts=train_prompts,
                                batch_size=config.batch_size * world, latent_shape=backbone.latent_shape,
                                num_dmd_levels=len(backbone.schedule.dmd_levels))
        if distributed is not None:  # this rank's rows of the global batch
            batch = distributed.shard(batch)
        cond = embed(batch.prompts)
        if not is_student_iteration(i, config.fake_updates):
            for k, v in method.fake_update(batch, cond).items():
                running[k].append(v)
            continue
        uncond = embed([""] * len(batch.prompts))
        target = None
        if not config.is_vanilla_dmd:  # vanilla DMD needs no anchor
            with method.phase("anchor"):
                target = provider(batch, cond, uncond)
        for k, v in method.student_update(batch, cond, uncond, target).items():
            running[k].append(v)
        updates += 1
        if collective_eval and (i == config.iterations - 1 or (config.eval.every and updates % config.eval.every == 0)):
            metrics = evaluate(i + 1)
            if main:
                bar.set_postfix(div=f"{metrics['diversity']:.4f}", q=f"{metrics['quality']:.3f}")
    if collective_eval and not evaluated:  # the run ended on fake updates after its last evaluation, or resumed
        metrics = evaluate(config.iterations)
    if writes_checkpoints and hasattr(method.student, "save_pretrained"):  # loadable with from_pretrained
        if sharded:
            sharding.save_pretrained(method, out / "student" if out is not None else None, is_main=main)
        elif out is not None:
            method.student.save_pretrained(out / "student")
    return metrics


def _prepare_out_dir(out_dir: str | Path | None, config: TrainConfig) -> Path | None:
    if out_dir is None:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    return out


def _write_teacher_reference(out: Path, config, backbone, method, embed, evaluator) -> None:
    """The teacher's own scores and samples on the same evaluation set: the reference to read the
    student's against (cached on disk, so a search computes them once per backbone)."""
    if (out / "teacher_metrics.json").exists():
        return
    reference, grid = teacher_reference(config, backbone, method.teacher, embed, evaluator)
    (out / "samples").mkdir(exist_ok=True)
    shutil.copyfile(grid, out / "samples" / "teacher.png")
    (out / "teacher_metrics.json").write_text(json.dumps(reference, indent=1))


def _resume(resume_from: str | Path | None, config: TrainConfig, method: DPDMD, out: Path | None,
            distributed: DistributedContext | None = None) -> int:
    """Load the checkpoint's networks and optimisers into ``method``; returns its iteration (0: none).
    A checkpoint of any number of workers, sharded or not (one format)."""
    if resume_from is None:
        return 0
    sharded = distributed is not None and distributed.sharded
    # sharded: mmap, so the ranks of one node share the file's pages instead of a copy each
    state = torch.load(Path(resume_from) / "state.pt", map_location="cpu", weights_only=False, mmap=sharded)
    if state["config"] != config.to_dict():
        raise ConfigError(["resume: the checkpoint was written by a different config; "
                           "resume with the same config or start a new run"], str(resume_from))
    if distributed is not None:
        distributed.load_method_state(method, state["method"])
    else:
        method.load_state_dict(state["method"])
    if out is not None:
        _truncate_metrics(out / "metrics.csv", state["iteration"])
    return state["iteration"]


def _evaluate_and_save(config, method, evaluator, embed, prompts, provider, running, out, *, iteration, updates,
                       seconds, distributed=None, writes_checkpoints=True) -> dict:
    """Rank 0 (and, with sharded networks, every rank, for the collectives): sample the evaluation
    set, gather the method's state; rank 0 alone scores, logs and writes. Returns {} off rank 0."""
    images = generate(method.backbone, method.sample, prompts, config.eval.seeds_per_prompt, embed)
    state = None
    if writes_checkpoints:
        state = distributed.method_state(method) if distributed is not None else method.state_dict()
    if evaluator is None:  # another rank of a sharded run: its part is done
        return {}
    metrics = {"iteration": iteration, "student_updates": updates, **score(evaluator, images, prompts)}
    metrics.update({k: sum(v) / len(v) for k, v in running.items() if v})
    stats = getattr(provider, "stats", None)
    metrics.update(stats() if stats else {})
    metrics["prompts_encoded"] = getattr(embed, "encoded", 0)
    metrics["seconds"] = seconds
    metrics.update({f"seconds_{k}": v for k, v in method.seconds.items()})
    if out is not None:
        save_grid(images, out / "samples" / f"student_{updates:05d}.png")
        shutil.copyfile(out / "samples" / f"student_{updates:05d}.png", out / "samples" / "student_latest.png")
        _append_metrics(out / "metrics.csv", metrics)
        save_checkpoint(out / CHECKPOINT, state, config, iteration)
    return metrics


def save_checkpoint(path: Path, method: DPDMD | dict, config: TrainConfig, iteration: int) -> None:
    """Write ``path/state.pt`` atomically: a crash mid-write leaves the previous checkpoint intact.
    ``method``: the `DPDMD` or its ``state_dict()`` (gathered already from a sharded run)."""
    state = method if isinstance(method, dict) else method.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"method": state, "config": config.to_dict(), "iteration": iteration}, tmp / "state.pt")
    (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _append_metrics(path: Path, metrics: dict) -> None:
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    columns = list(dict.fromkeys([*(rows[0].keys() if rows else []), *metrics.keys()]))
    rows.append({k: metrics.get(k, "") for k in columns})
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, [r for r in reader if int(float(r["iteration"])) <= iteration]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
