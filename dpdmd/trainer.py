"""``train(config, report=...)``: one DP-DMD run, from config to metrics.

The command line (`dpdmd.train`) and the search's Ray Tune trainable both call this function.
It builds the backbone and the `DPDMD` networks, walks the deterministic iteration stream
(`dpdmd.stream`), alternates fake-score and student updates by the two-time-scale rule, and every
``eval.every`` student updates evaluates the student, writes a checkpoint and calls ``report``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import shutil
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import sharding
from .anchors import AnchorProvider, local_anchors
from .backbones import Backbone, get_backbone
from .config import ConfigError, TrainConfig, run_label
from .distributed import DistributedContext
from .evaluation import eval_prompts, evaluator_problems, generate, make_evaluator, save_grid, score, teacher_reference
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
    """What only the backbone can refuse (its prompts, its device), reported at once. The ranges
    were checked when ``config`` was built (`TrainConfig`)."""
    problems = []
    from .attention_impl import fa4_problem
    from .fp8 import fp8_problem

    if config.attention_backend == "fa4" and (problem := fa4_problem(backbone.device)) is not None:
        problems.append(f"attention_backend: 'fa4' cannot run: {problem}; use 'sdpa'")
    for key, mode in (("fp8", config.fp8), ("fp8_teacher", "rowwise" if config.fp8_teacher else "none")):
        if (problem := fp8_problem(mode, backbone.device)) is not None:
            fix = "use 'none'" if key == "fp8" else "set it false"
            problems.append(f"{key}: {getattr(config, key)!r} cannot run: {problem}; {fix}")
    if config.optimizer == "adamw_offload" and backbone.device.type != "cuda":
        problems.append(f"optimizer: 'adamw_offload' offloads GPU states to the host; the device is "
                        f"{backbone.device}: use 'adamw' or 'adamw8bit'")
    for key, prompts in (("prompts", config.prompts), ("eval.prompts", config.eval.prompts)):
        try:
            backbone.validate_prompts(prompts)
        except ValueError as err:
            problems.append(f"{key}: {err}")
    if not problems:  # the evaluator's options, weights and needs (before anything is trained)
        problems = evaluator_problems(config.eval, getattr(backbone, "default_evaluator", "digits"))
    if problems:
        raise ConfigError(problems)


def build_method(config: TrainConfig, backbone: Backbone) -> DPDMD:
    lr = config.lr if config.lr is not None else backbone.default_lr
    method = DPDMD(backbone, lambda_div=config.lambda_div, stop_grad=config.stop_grad, lr_student=lr,
                   lr_fake=config.lr_fake if config.lr_fake is not None else lr,
                   weight_decay=config.weight_decay, betas=(config.beta1, config.beta2),
                   grad_clip=config.grad_clip, mixed_precision=config.mixed_precision,
                   optimizer=config.optimizer)
    # Before compiling: the compiled graphs trace the FP8 layers and the attention path chosen here.
    from .attention_impl import use_attention_backend
    from .fp8 import apply_fp8

    if config.fp8 != "none" or config.fp8_teacher:
        apply_fp8(method, config.fp8, teacher=config.fp8_teacher)
    use_attention_backend(config.attention_backend, backbone.device)  # "sdpa" undoes an earlier run's "fa4"
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
          progress: bool = True, distributed: DistributedContext | None = None,
          keep_previous_checkpoint: bool = False) -> dict:
    """Run DP-DMD as ``config`` says; returns the last evaluation's metrics. ``config`` is in
    range (a `TrainConfig` checks itself); what only the backbone can refuse, and the checkpoint
    to resume from, are checked here, before anything is written.

    Args:
        report: called after every evaluation with (metrics, checkpoint dir or None).
        out_dir: where metrics.csv, PNG grids, checkpoints and the final student go (None: nowhere).
        resume_from: a checkpoint directory written by an earlier run of the same config.
        anchors: factory of the anchor provider (default: `local_anchors`, computed on demand;
            `dpdmd.anchors.shared_anchors(cache, ks)` shares them with other runs, as a search does).
        embeddings: factory of the prompt-embedding cache (default: encode locally, once a prompt).
        distributed: this process's rank in a data-parallel run (`dpdmd.distributed`): each
            iteration's batch is drawn for all ranks and sharded, gradients are averaged over the
            ranks, and only rank 0 evaluates, writes ``out_dir`` and calls ``report`` (the other
            ranks return {}). None: one process.
        keep_previous_checkpoint: keep the checkpoint before the last as ``checkpoint.prev`` (the
            command line's fallback when the last is found damaged; twice the disk).

    A NaN or infinite loss, weight, sample or score stops the run as *diverged*: a last row with
    NaN scores, ``diverged`` = 1 and ``diverged_reason`` is logged and reported (no checkpoint).
    """
    writes_checkpoints = out_dir is not None
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
    run = _set_up(config, backbone, out=_prepare_out_dir(out_dir, config), report=report, anchors=anchors,
                  embeddings=embeddings, distributed=distributed, writes_checkpoints=writes_checkpoints,
                  keep_previous=keep_previous_checkpoint)
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
    writes_checkpoints: bool  # out_dir was given (on any rank: sharded ranks gather the checkpoint)
    keep_previous: bool
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
    def collective_eval(self) -> bool:
        """Sharded networks (FSDP2) forward only with every rank: all ranks then sample the
        evaluation and gather each checkpoint; rank 0 alone scores and writes."""
        return self.main or (self.distributed is not None and self.distributed.sharded)


def _set_up(config: TrainConfig, backbone: Backbone, *, out: Path | None, report, anchors, embeddings, distributed,
            writes_checkpoints: bool, keep_previous: bool) -> _Run:
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
               writes_checkpoints=writes_checkpoints, keep_previous=keep_previous)
    # Encode every prompt once now (each exactly once, through the cache), then free the text
    # encoders: T5-XXL alone is ~10 GB that training never needs again.
    embed(sorted(set(run.train_prompts) | set(run.eval_prompts) | {""}))
    backbone.release_text_encoders()
    if out is not None or (evaluator is not None and evaluator.uses_teacher_reference):
        _write_teacher_reference(out, config, backbone, method, embed, evaluator)
    return run


def _attach_and_resume(run: _Run, state: dict | None) -> None:
    """Make data-parallel replicas equal (or shard the networks), then load the checkpoint
    (after attach: shards load their part) and start the clock."""
    if run.distributed is not None:  # replicas made equal and gradients averaged, or networks sharded
        run.distributed.attach(run.method)
    run.start, run.carried = _resume(state, run.method, run.out, run.distributed)
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
    target = None
    if not config.is_vanilla_dmd:  # vanilla DMD needs no anchor
        with method.phase("anchor"):
            target = run.provider(batch, cond, uncond)
    losses = method.student_update(batch, cond, uncond, target)
    run.updates += 1
    return losses


def _evaluate(run: _Run, iteration: int) -> dict:
    """Score the student, write its samples, metrics and checkpoint, and report them (rank 0;
    with sharded networks every rank samples and gathers, and the others get {})."""
    result = _evaluate_and_save(run, iteration=iteration)
    run.running.clear()
    run.evaluated = True
    if run.report is not None:  # a diverged student has no checkpoint (the last good one stays)
        run.report(result, run.out / CHECKPOINT if run.out is not None and not result["diverged"] else None)
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
        run.report(metrics, None)
    return metrics


def _finish(run: _Run, metrics: dict) -> dict:
    """Evaluate once more if the run ended on fake updates after its last evaluation (or resumed
    at its end), then save the student loadable with ``from_pretrained``."""
    if not run.evaluated:
        metrics, stopped = _evaluate_agreed(run, run.config.iterations)
        if stopped:
            return metrics
    if run.writes_checkpoints and hasattr(run.method.student, "save_pretrained"):
        if run.distributed is not None and run.distributed.sharded:
            sharding.save_pretrained(run.method, run.out / "student" if run.out is not None else None, is_main=run.main)
        elif run.out is not None:
            run.method.student.save_pretrained(run.out / "student")
    return metrics


def _prepare_out_dir(out_dir: str | Path | None, config: TrainConfig) -> Path | None:
    if out_dir is None:
        return None
    out = Path(out_dir)
    with _writing(out / "config.json"):
        out.mkdir(parents=True, exist_ok=True)
        _write_text(out / "config.json", json.dumps(config.to_dict(), indent=2))
    return out


def _write_teacher_reference(out: Path | None, config, backbone, method, embed, evaluator) -> None:
    """The teacher's own scores and samples on the same evaluation set: the reference to read the
    student's against (cached on disk, so a search computes them once per backbone). Also hands
    an evaluator that scores against the teacher's samples (the real one) its reference."""
    needs_reference = evaluator is not None and evaluator.uses_teacher_reference
    written = out is not None and (out / "teacher_metrics.json").exists()  # a resumed run
    if written and not needs_reference:
        return
    reference, grid = teacher_reference(config, backbone, method.teacher, embed, evaluator)
    if out is None or written:
        return
    with _writing(out / "samples" / "teacher.png"):
        (out / "samples").mkdir(exist_ok=True)
        _copy(grid, out / "samples" / "teacher.png")
    with _writing(out / "teacher_metrics.json"):
        _write_text(out / "teacher_metrics.json", json.dumps(reference, indent=1))


def _resume(state: dict | None, method: DPDMD, out: Path | None,
            distributed: DistributedContext | None = None) -> tuple[int, dict]:
    """Load a checkpoint's networks and optimisers into ``method`` (after `DistributedContext.attach`:
    sharded networks load their part; a checkpoint of any number of workers, one format); returns its
    iteration (0: no checkpoint) and the counts of the run before it (added to this run's, `_carry`)."""
    if state is None:
        return 0, {}
    if distributed is not None:
        distributed.load_method_state(method, state["method"])
    else:
        method.load_state_dict(state["method"])
    if out is not None:
        _truncate_metrics(out / "metrics.csv", state["iteration"])
    return state["iteration"], dict(state.get("counters", {}))


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
        with _writing(out / "metrics.csv"):
            _append_metrics(out / "metrics.csv", metrics)
    return metrics


def _evaluate_and_save(run: _Run, *, iteration: int) -> dict:
    """Rank 0 (and, with sharded networks, every rank, for the collectives): sample the evaluation
    set, gather the method's state; rank 0 alone scores, logs and writes. Returns {} off rank 0."""
    config, method, out, seconds = run.config, run.method, run.out, time.time() - run.started
    images = generate(method.backbone, method.sample, run.eval_prompts, config.eval.seeds_per_prompt, run.embed)
    state = None
    if run.writes_checkpoints:
        state = run.distributed.method_state(method) if run.distributed is not None else method.state_dict()
    if run.evaluator is None:  # another rank of a sharded run: its part is done
        return {}
    where = f"at iteration {iteration}"
    reason = _divergence(method, images, where)
    scores = score(run.evaluator, images, run.eval_prompts) if reason is None else {}
    reason = reason or _non_finite({k: scores[k] for k in ("diversity", "quality")}, where)
    if reason is not None:
        return _diverged_row(reason, run.running, out, iteration=iteration, updates=run.updates, seconds=seconds,
                             provider=run.provider, carried=run.carried)
    metrics = {"iteration": iteration, "student_updates": run.updates, **scores, "diverged": 0}
    metrics.update({k: sum(v) / len(v) for k, v in run.running.items() if v})
    stats = getattr(run.provider, "stats", None)
    metrics.update(stats() if stats else {})
    metrics["prompts_encoded"] = getattr(run.embed, "encoded", 0)
    metrics["seconds"] = seconds
    metrics.update({f"seconds_{k}": v for k, v in method.seconds.items()})
    counters = _carry(metrics, run.carried)
    if out is not None:  # each file whole or not at all: a full disk corrupts nothing already written
        grid = out / "samples" / f"student_{run.updates:05d}.png"
        with _writing(grid):
            _save_grid(images, grid)
        with _writing(out / "samples" / "student_latest.png"):
            _copy(grid, out / "samples" / "student_latest.png")
        with _writing(out / "metrics.csv"):  # a row past the checkpoint is dropped on resume
            _append_metrics(out / "metrics.csv", metrics)
        with _writing(out / CHECKPOINT / "state.pt"):
            save_checkpoint(out / CHECKPOINT, state, config, iteration, keep_previous=run.keep_previous,
                            counters=counters)
    return metrics


def _carry(metrics: dict, carried: dict | None) -> dict:
    """Add the counts of the run before a resume (``carried``, from the checkpoint) to this
    process's cumulative counts in ``metrics`` (in place): the cache hits, misses and teacher
    calls, prompts encoded and seconds then cover the whole run. Returns the counts to save."""
    keys = [k for k in metrics if k.startswith("anchor_") or k in ("prompts_encoded", "seconds")]
    for key, value in (carried or {}).items():
        if key in metrics:
            metrics[key] = metrics[key] + value
    return {k: metrics[k] for k in keys}


def _read_state(path: Path) -> dict:
    """``path/state.pt``; a damaged (truncated, overwritten) file is a ConfigError naming it."""
    file = path / "state.pt"
    try:
        state = torch.load(file, map_location="cpu", weights_only=False, mmap=True)  # cheap to check twice
    except FileNotFoundError:
        raise ConfigError([f"resume: {file} does not exist"]) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on damage
        raise ConfigError([f"resume: {file} is damaged and cannot be read ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else 'no detail'})"]) from None
    if not isinstance(state, dict) or not {"method", "config", "iteration"} <= set(state):
        raise ConfigError([f"resume: {file} is not a dpdmd checkpoint (no method / config / iteration)"])
    return state


def load_checkpoint(path: Path, config: TrainConfig) -> dict:
    """The state saved in the checkpoint folder ``path`` for ``config``. If its state.pt is
    damaged and the previous checkpoint (``path.prev``, kept by `save_checkpoint`) is readable,
    that one is used, with a warning. A checkpoint of a different config is refused."""
    try:
        state = _read_state(path)
    except ConfigError as err:
        previous = path.with_name(path.name + PREVIOUS)
        if not (previous / "state.pt").exists():
            raise
        state = _read_state(previous)
        warnings.warn(f"{err.problems[0]}; resuming from the previous checkpoint {previous} "
                      f"(iteration {state['iteration']})", stacklevel=2)
    if state["config"] != config.to_dict():
        raise ConfigError(["resume: the checkpoint was written by a different config; "
                           "resume with the same config or start a new run"], str(path))
    return state


PREVIOUS = ".prev"  # the checkpoint before the last one, kept by save_checkpoint(keep_previous=True)


def save_checkpoint(path: Path, method: DPDMD | dict, config: TrainConfig, iteration: int, *,
                    keep_previous: bool = False, counters: dict | None = None) -> None:
    """Write ``path/state.pt`` atomically: a crash mid-write leaves the previous checkpoint intact.
    ``method``: the `DPDMD` or its ``state_dict()`` (gathered already from a sharded run);
    ``keep_previous``: keep the one before as ``path.prev`` (a fallback if the last is damaged
    later; it doubles the disk the checkpoints take)."""
    state = method if isinstance(method, dict) else method.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        torch.save({"method": state, "config": config.to_dict(), "iteration": iteration,
                    "counters": dict(counters or {})}, tmp / "state.pt")
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    except BaseException:  # a full disk: free what the half-written copy took; the last one stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(path.name + (PREVIOUS if keep_previous else ".old"))
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if not keep_previous:
        shutil.rmtree(old, ignore_errors=True)


def _append_metrics(path: Path, metrics: dict) -> None:
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    columns = list(dict.fromkeys([*(rows[0].keys() if rows else []), *metrics.keys()]))
    rows.append({k: metrics.get(k, "") for k in columns})
    tmp = path.with_suffix(".csv.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, [r for r in reader if int(float(r["iteration"])) <= iteration]
    tmp = path.with_suffix(".csv.tmp")
    with _writing(path), open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    """``path`` holds ``text`` whole, or its previous content (written beside it, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _save_grid(images: torch.Tensor, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        save_grid(images, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        shutil.copyfile(source, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


@contextlib.contextmanager
def _writing(path: Path):
    """Turn a failed write (a full or read-only disk) into an OSError naming ``path`` and the space
    left there. torch.save reports a failed write as a RuntimeError ("file write failed")."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "write" not in str(err):
            raise
        try:
            free = f"; {shutil.disk_usage(path.parent if path.parent.exists() else path.parent.parent).free / 2**20:.1f} MiB free there"
        except OSError:
            free = ""
        reason = err.strerror if isinstance(err, OSError) and err.strerror else (str(err).splitlines() or [""])[0][:200]
        raise OSError(getattr(err, "errno", None) or errno.EIO, f"cannot write {path}: {reason}{free}") from err
