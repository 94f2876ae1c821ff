"""``train(config, report=...)``: one DP-DMD run, from config to metrics.

The command line (`dpdmd.train`) and the search's Ray Tune trainable both call this function.
It builds the backbone and the `DPDMD` networks, walks the deterministic iteration stream
(`dpdmd.stream`), alternates fake-score and student updates by the two-time-scale rule, and every
``eval.every`` student updates evaluates the student, writes a checkpoint and calls ``report``.
"""

from __future__ import annotations

import math
import shutil
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..anchors import AnchorProvider, local_anchors
from ..backbones import Backbone
from ..config import ConfigError, TrainConfig, run_label
from ..data.prompt_cache import PromptEmbeddingCache
from ..evaluation.evaluators import make_evaluator
from ..evaluation.protocol import eval_prompts, generate, score
from ..method import DPDMD
from ..parallel import sharding
from ..parallel.distributed import DistributedContext
from ..stream import is_student_iteration, iteration_batch, student_updates_done
from .build import build_backbone, build_method, check
from ..student import save_student
from .checkpoints import (CHECKPOINT, REPORT, WHOLE, Saved, Saves, every_evaluation, load_checkpoint, resume,
                          save_checkpoint)
from .run_files import log_metrics, prepare_out_dir, write_samples, write_teacher_reference, writing

Report = Callable[[dict, Saved], None]  # (metrics, where this evaluation's saves are)


def train(config: TrainConfig, *, report: Report | None = None, out_dir: str | Path | None = None,
          resume_from: str | Path | None = None,
          anchors: Callable[[Backbone, torch.nn.Module, TrainConfig], AnchorProvider] | None = None,
          embeddings: Callable[[Backbone], PromptEmbeddingCache] | None = None,
          progress: bool = True, distributed: DistributedContext | None = None,
          keep_previous_checkpoint: bool = False, saves: Callable[[dict], Saves] = every_evaluation) -> dict:
    """Run DP-DMD as ``config`` says; returns the last evaluation's metrics. ``config`` is in
    range (a `TrainConfig` checks itself); what only the backbone can refuse, and the checkpoint
    to resume from, are checked here, before anything is written.

    Args:
        report: called after every evaluation with (metrics, `Saved`: where its saves are).
        out_dir: where metrics.csv, PNG grids, checkpoints and the final student go (None: nowhere).
        resume_from: a checkpoint directory written by an earlier run of the same config.
        anchors: factory of the anchor provider (default: `local_anchors`, computed on demand;
            `dpdmd.anchors.shared_anchors(cache, ks)` shares them with other runs, as a search does).
        embeddings: factory of the prompt-embedding cache (default: encode locally, once a prompt).
        distributed: this process's rank in a data-parallel run (`dpdmd.parallel.distributed`): each
            iteration's batch is drawn for all ranks and sharded, gradients are averaged over the
            ranks, and only rank 0 evaluates, writes ``out_dir`` and calls ``report`` (the other
            ranks return {}). None: one process.
        keep_previous_checkpoint: keep the checkpoint before the last as ``checkpoint.prev`` (the
            command line's fallback when the last is found damaged; twice the disk).
        saves: what each evaluation saves, asked with its metrics (`dpdmd.training.checkpoints.Saves`:
            the student in its serving format, the full resumable state); default: the state at every
            evaluation. With ``out_dir`` the student is also saved at the end (``OUT/student``).

    A NaN or infinite loss, weight, sample or score stops the run as *diverged*: a last row with
    NaN scores, ``diverged`` = 1 and ``diverged_reason`` is logged and reported (no checkpoint).
    """
    checkpoint = Path(out_dir) / CHECKPOINT if out_dir is not None else None  # every rank: sharded ranks write there
    if distributed is not None and not distributed.is_main:  # only rank 0 evaluates, writes and reports
        report, out_dir, progress = None, None, False
    backbone = build_backbone(config)
    check(config, backbone)
    if distributed is not None and distributed.shard_networks and config.fp8 != "none":
        # torchao's float8 needs its own FSDP2 handling (convert before sharding); not wired or measured here
        raise ConfigError(["fp8: FP8 training of sharded networks (shard_networks) is not supported; use fp8 'none'"])
    if distributed is not None:  # sharded: the student and fake score are built on the meta device
        distributed.prepare(backbone, config.optimizer)
    # the checkpoint is read (and refused) before anything is written
    state = load_checkpoint(Path(resume_from), config) if resume_from is not None else None
    run = _set_up(config, backbone, out=prepare_out_dir(out_dir, config), report=report, anchors=anchors,
                  embeddings=embeddings, distributed=distributed, checkpoint=checkpoint,
                  keep_previous=keep_previous_checkpoint, saves=saves)
    _attach_and_resume(run, state)
    metrics, stopped = _train_loop(run, progress)
    if stopped:  # diverged: its row is logged and reported
        return metrics
    return _finish(run, metrics)


@dataclass
class _Run:
    """What one run built and where it stands, shared by the steps of `train`."""

    config: TrainConfig
    backbone: Backbone
    method: DPDMD
    embed: PromptEmbeddingCache
    provider: AnchorProvider
    evaluator: object | None  # rank 0 only (`dpdmd.evaluation.make_evaluator`)
    train_prompts: list[str]
    eval_prompts: list[str]
    out: Path | None  # None off rank 0 and without out_dir
    report: Report | None
    distributed: DistributedContext | None
    checkpoint: Path | None  # OUT/checkpoint on every rank (sharded ranks write their shards); None: no out_dir
    keep_previous: bool
    saves: Callable[[dict], Saves]  # what each evaluation saves, asked on rank 0 with its metrics
    start: int = 0  # the iteration resumed from
    carried: dict = field(default_factory=dict)  # the counts of the run before a resume (`_carry`)
    updates: int = 0  # student updates done, resumed ones included
    running: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # losses since the last evaluation
    evaluated: bool = False  # on every rank: the ranks agree on each evaluation's outcome
    started: float = 0.0  # time.time() when the loop's clock started

    @property
    def main(self) -> bool:
        return self.distributed is None or self.distributed.is_main

    @property
    def writes_checkpoints(self) -> bool:
        return self.checkpoint is not None

    @property
    def collective_eval(self) -> bool:
        """Sharded networks (FSDP2) forward only with every rank: all ranks then sample the
        evaluation and write their shards of each checkpoint; rank 0 alone scores and writes the rest."""
        return self.main or (self.distributed is not None and self.distributed.sharded)


def _set_up(config: TrainConfig, backbone: Backbone, *, out: Path | None, report, anchors, embeddings, distributed,
            checkpoint: Path | None, keep_previous: bool, saves: Callable[[dict], Saves]) -> _Run:
    """Seed, build the networks, the prompt cache, the anchor provider and the evaluator; encode
    every prompt once and write the teacher's reference."""
    main = distributed is None or distributed.is_main
    torch.manual_seed(config.seed)
    method = build_method(config, backbone)
    embed = embeddings(backbone) if embeddings else PromptEmbeddingCache(backbone)
    provider = (anchors or local_anchors)(backbone, method.teacher, config)
    evaluator = make_evaluator(config.eval, backbone) if main else None
    run = _Run(config, backbone, method, embed, provider, evaluator,
               train_prompts=list(config.prompts) or list(backbone.default_prompts),
               eval_prompts=eval_prompts(config, backbone), out=out, report=report, distributed=distributed,
               checkpoint=checkpoint, keep_previous=keep_previous, saves=saves)
    # Encode every prompt once now (each exactly once, through the cache), then free the text
    # encoders: T5-XXL alone is ~10 GB that training never needs again.
    embed(sorted(set(run.train_prompts) | set(run.eval_prompts) | {""}))
    backbone.release_text_encoders()
    if out is not None or (evaluator is not None and evaluator.uses_teacher_reference):
        write_teacher_reference(out, config, backbone, method, embed, evaluator)
    return run


def _attach_and_resume(run: _Run, state: dict | None) -> None:
    """Make data-parallel replicas equal (or shard the networks), then load the checkpoint
    (after attach: shards load their part) and start the clock."""
    if run.distributed is not None:  # replicas made equal and gradients averaged, or networks sharded
        run.distributed.attach(run.method)
    run.start, run.carried = resume(state, run.method, run.out, run.distributed)
    run.updates = student_updates_done(run.start, run.config.fake_updates)
    run.started = time.time()


def _train_loop(run: _Run, progress: bool) -> tuple[dict, bool]:
    """Iterations ``run.start`` .. ``config.iterations``, evaluating every ``eval.every`` student
    updates. Returns (the last evaluation's metrics, {} off rank 0; whether the run stopped as
    diverged, its last row then logged and reported).

    Non-finite losses stop the run as diverged. Data-parallel ranks see only their own losses,
    and one rank stopping alone would leave the others waiting in the next collective: all ranks
    agree (`_agree`) at every iteration and at every evaluation."""
    config = run.config
    bar = tqdm(range(run.start, config.iterations), initial=run.start, total=config.iterations,
               disable=not progress, dynamic_ncols=True,
               desc=run_label(config))
    metrics: dict = {}
    for i in bar:
        student = is_student_iteration(i, config.fake_updates)
        losses = _iteration(run, i, student=student)
        for k, v in losses.items():
            run.running[k].append(v)
        where = f"at iteration {i + 1}"
        diverged = _agree(run.distributed, _non_finite(losses, where), where)
        if diverged:
            return _stop_diverged(run, diverged, i + 1), True
        last = i == config.iterations - 1
        if student and (last or (config.eval.every and run.updates % config.eval.every == 0)):
            metrics, stopped = _evaluate_agreed(run, i + 1)
            if stopped:
                return metrics, True
            if run.main:
                bar.set_postfix(div=f"{metrics['diversity']:.4f}", q=f"{metrics['quality']:.3f}")
    return metrics, False


def _iteration(run: _Run, i: int, *, student: bool) -> dict[str, float]:
    """Iteration ``i`` (method.md, "One training iteration"): a fake-score update, or a student
    update against the teacher's anchor. Returns its losses."""
    config, method = run.config, run.method
    world = run.distributed.world_size if run.distributed is not None else 1
    batch = iteration_batch(seed=config.seed, iteration=i, prompts=run.train_prompts,
                            batch_size=config.batch_size * world, latent_shape=run.backbone.latent_shape,
                            num_dmd_levels=len(run.backbone.schedule.dmd_levels))
    if run.distributed is not None:  # this rank's rows of the global batch
        batch = run.distributed.shard(batch)
    cond = run.embed(batch.prompts)
    if not student:
        return method.fake_update(batch, cond)
    uncond = run.embed([""] * len(batch.prompts))
    first_step_target = None
    if not config.is_vanilla_dmd:  # vanilla DMD needs no anchor
        with method.phase("anchor"):
            first_step_target = run.provider(batch, cond, uncond)
    losses = method.student_update(batch, cond, uncond, first_step_target)
    run.updates += 1
    return losses


def _evaluate(run: _Run, iteration: int) -> dict:
    """Score the student, write its samples and metrics, save what ``run.saves`` asks for, and
    report them (rank 0; with sharded networks every rank samples and saves, the others get {})."""
    result, saved = _evaluate_and_save(run, iteration=iteration)
    run.running.clear()
    run.evaluated = True
    if run.report is not None:  # a diverged student saves nothing (the last good saves stay)
        run.report(result, saved)
    return result


def _evaluate_agreed(run: _Run, iteration: int) -> tuple[dict, bool]:
    """`_evaluate` where this rank takes part in it, then every rank agrees whether it diverged.
    Returns (the metrics, {} off rank 0; whether the run stops)."""
    metrics = _evaluate(run, iteration) if run.collective_eval else {}
    run.evaluated = True  # on every rank: the ranks agree below
    reason = metrics.get("diverged_reason") if metrics.get("diverged") else None
    return metrics, _agree(run.distributed, reason, f"at iteration {iteration}") is not None


def _stop_diverged(run: _Run, reason: str, iteration: int) -> dict:
    """Stop as diverged: the row is kept and marked, the last good checkpoint stays."""
    metrics = {}
    if run.main:
        metrics = _diverged_row(reason, run.running, run.out, iteration=iteration, updates=run.updates,
                                seconds=time.time() - run.started, provider=run.provider, carried=run.carried)
    if run.report is not None:
        run.report(metrics, Saved())
    return metrics


def _finish(run: _Run, metrics: dict) -> dict:
    """Evaluate once more if the run ended on fake updates after its last evaluation (or resumed
    at its end), then save the student as its users load it (``OUT/student``, `dpdmd.student`)."""
    if not run.evaluated:
        metrics, stopped = _evaluate_agreed(run, run.config.iterations)
        if stopped:
            return metrics
    if run.writes_checkpoints:
        _save_student(run, run.out / "student" if run.out is not None else None, iteration=run.config.iterations,
                      metrics=metrics)
    return metrics


def _save_student(run: _Run, folder: Path | None, *, iteration: int, metrics: dict) -> None:
    """The student saved into ``folder`` (rank 0; sharded ranks take part in gathering it)."""
    student = run.method.student
    if run.distributed is not None and run.distributed.sharded:  # a collective: every rank gathers
        student = sharding.gathered_student(run.method, is_main=run.main)
    if folder is None or student is None:
        return
    scores = {k: metrics[k] for k in ("diversity", "quality") if k in metrics}
    with writing(folder / "dpdmd_student.json"):
        shutil.rmtree(folder, ignore_errors=True)
        save_student(folder, backbone=run.backbone, network=student, config=run.config,
                     student_updates=run.updates, iteration=iteration, scores=scores)


def _agree(distributed: DistributedContext | None, reason: str | None, where: str) -> str | None:
    """``reason`` to stop (None: go on), agreed by every rank of a data-parallel run: if any rank
    has one, every rank stops (a collective: all ranks call it at the same iterations)."""
    if distributed is None or distributed.world_size == 1:
        return reason
    if distributed.any(reason is not None) and reason is None:
        return f"another rank stopped {where} (its loss or its evaluation was not finite)"
    return reason


def _non_finite(values: dict, where: str) -> str | None:
    """'NAME = VALUE WHERE' for the first NaN or infinite value, else None."""
    for name, value in values.items():
        if isinstance(value, (int, float)) and not math.isfinite(value):
            return f"{name} = {value} {where}"
    return None


def _divergence(method: DPDMD, images: torch.Tensor, where: str) -> str | None:
    """Why the student cannot be scored: non-finite weights or samples (None if it can)."""
    for name, param in method.student.named_parameters():
        if not torch.isfinite(param).all():
            return f"student weight {name} is not finite {where}"
    if not torch.isfinite(images).all():
        return f"the student's samples are not finite {where}"
    return None


def _diverged_row(reason: str, running, out: Path | None, *, iteration: int, updates: int, seconds: float,
                  provider=None, carried: dict | None = None) -> dict:
    """The last row of a diverged run: NaN scores, ``diverged`` 1 and why; logged, never checkpointed."""
    metrics = {"iteration": iteration, "student_updates": updates, "diversity": math.nan, "quality": math.nan,
               "diverged": 1, "diverged_reason": reason, "seconds": seconds}
    metrics.update({k: sum(v) / len(v) for k, v in running.items() if v})
    stats = getattr(provider, "stats", None)
    metrics.update(stats() if stats else {})  # the compute it spent still counts
    _carry(metrics, carried)
    warnings.warn(f"the run diverged: {reason}; stopped (its rows are kept, the last checkpoint is the last "
                  "good one)", stacklevel=2)
    if out is not None:
        log_metrics(out, metrics)
    return metrics


def _evaluate_and_save(run: _Run, *, iteration: int) -> tuple[dict, Saved]:
    """Rank 0 (and, with sharded networks, every rank, for the collectives): sample the evaluation
    set; rank 0 alone scores, logs and writes; then every such rank saves what ``run.saves`` asks
    for (rank 0 decides, the sharded ranks follow it: they write their checkpoint shards and gather
    the student with it). Returns (the metrics,
    {} off rank 0; where the saves are)."""
    config, method, out = run.config, run.method, run.out
    images = generate(method.backbone, method.sample, run.eval_prompts, config.eval.seeds_per_prompt, run.embed)
    metrics, counters = _score(run, images, iteration=iteration) if run.evaluator is not None else ({}, {})
    wants = run.saves(metrics) if metrics and not metrics["diverged"] and run.writes_checkpoints else Saves()
    if run.distributed is not None and run.distributed.sharded:  # the other ranks follow rank 0's choice
        wants = Saves(student=run.distributed.any(wants.student), state=run.distributed.any(wants.state))
    saved = Saved()
    if wants.state:  # rank 0 writes the state; sharded, every rank writes its shards (`save_checkpoint`)
        sharded = run.distributed is not None and run.distributed.sharded
        # the file whose failed write a full disk is told by (the last state.pt's size asked of the
        # disk); sharded, the folder of the ranks' shards
        with writing(run.checkpoint if sharded else run.checkpoint / WHOLE):
            save_checkpoint(run.checkpoint, method, config, iteration, keep_previous=run.keep_previous,
                            counters=counters, distributed=run.distributed)
        saved = Saved(state=run.checkpoint) if out is not None else saved
    if wants.student:
        _save_student(run, out / REPORT / "student" if out is not None else None, iteration=iteration,
                      metrics=metrics)
        saved = Saved(student=out / REPORT if out is not None else None, state=saved.state)
    return metrics, saved


def _score(run: _Run, images: torch.Tensor, *, iteration: int) -> tuple[dict, dict]:
    """Rank 0: score the samples, log the row and the sample grid. Returns (the metrics, the
    counts to save with the state); a diverged student gives its diverged row."""
    method, out, seconds = run.method, run.out, time.time() - run.started
    where = f"at iteration {iteration}"
    reason = _divergence(method, images, where)
    scores = score(run.evaluator, images, run.eval_prompts) if reason is None else {}
    reason = reason or _non_finite({k: scores[k] for k in ("diversity", "quality")}, where)
    if reason is not None:
        return _diverged_row(reason, run.running, out, iteration=iteration, updates=run.updates, seconds=seconds,
                             provider=run.provider, carried=run.carried), {}
    metrics = {"iteration": iteration, "student_updates": run.updates, **scores, "diverged": 0}
    metrics.update({k: sum(v) / len(v) for k, v in run.running.items() if v})
    stats = getattr(run.provider, "stats", None)
    metrics.update(stats() if stats else {})
    metrics["prompts_encoded"] = getattr(run.embed, "encoded", 0)
    metrics["seconds"] = seconds
    metrics.update({f"seconds_{k}": v for k, v in method.seconds.items()})
    counters = _carry(metrics, run.carried)
    if out is not None:  # each file whole or not at all: a full disk corrupts nothing already written
        write_samples(out, images, run.updates)
        log_metrics(out, metrics)  # a row past the checkpoint is dropped on resume
    return metrics, counters


def _carry(metrics: dict, carried: dict | None) -> dict:
    """Add the counts of the run before a resume (``carried``, from the checkpoint) to this
    process's cumulative counts in ``metrics`` (in place): the cache hits, misses and teacher
    calls, prompts encoded and seconds then cover the whole run. Returns the counts to save."""
    keys = [k for k in metrics if k.startswith("anchor_") or k in ("prompts_encoded", "seconds")]
    for key, value in (carried or {}).items():
        if key in metrics:
            metrics[key] = metrics[key] + value
    return {k: metrics[k] for k in keys}
