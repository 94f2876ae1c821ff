"""What a search will cost, printed by ``--dry-run`` before anything runs: storage, GPU-hours, time.

**Storage.** A trial writes its student (in its serving dtype; the adapter alone for LoRA) at each
report that is its new best, and its resumable state (`dpdmd.training.checkpoint_bytes.state_bytes`)
at its first report and then at the first report ``checkpoint.state_every_minutes`` or more after
the last (`tune.trial.saves.TrialSaves`; 0 = at every report); `state_saves` counts them for
reports evenly spaced in the trial's time. Per trial the estimate is an upper bound (every report a new best); what stays stored at
the end is one student and one state. Parameter counts: the digits backbones are built (they are
small); SD3.5-M, SD3.5-L and SDXL come from ``bench/results/parameter_counts.json`` (counted on the
meta device by ``bench/checkpoint_sizes.py``; a LoRA rank other than its 64 scales the adapter
linearly, other LoRA targets have no count).

**Time.** From *measured* cycle times only (``bench/results/cycle_times.json``: each row's command,
machine, date and commit): a cycle is the time of one student update (the anchor, the student
update and ``fake_updates`` fake-score updates; the fake part is scaled to the space's
``fake_updates``, the anchor is taken as measured at K = 10, since the anchor cache shares it
between trials). A setup no row matches (train mode, LoRA rank, resolution, batch, compile,
optimizer, gradient checkpointing; for the digits backbones the batch and the CPU threads) says
"no measurement". Evaluation time is not measured and not included. Student updates per trial: at
most ``max_t``; with ASHA, what its planned promotions give (a fraction ``1 / reduction_factor``
passing each rung). A trial given ``g < 1`` GPU shares it: assumed ``1 / g`` times slower, the
same GPU-hours. Wall time: the trials' total time over the concurrency (``max_concurrent``; "as
resources allow" counts every trial at once), never less than the longest trial.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

from dpdmd.training.checkpoint_bytes import state_bytes, student_bytes

ROOT = Path(__file__).resolve().parents[2]
CYCLE_TIMES = ROOT / "bench" / "results" / "cycle_times.json"
PARAMETER_COUNTS = ROOT / "bench" / "results" / "parameter_counts.json"

__all__ = ["Setup", "estimate_lines", "expected_updates", "human_bytes", "matching_measurements", "state_saves"]


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units, 3 significant digits ("1.15 GB")."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.3g} min"


@dataclass(frozen=True)
class Setup:
    """What a backbone's trials run, as the measurements and the counts are keyed."""

    backbone: str
    train_mode: str
    lora_rank: int | None
    resolution: int | None
    batch_size: int
    compile: bool
    optimizer: str
    gradient_checkpointing: bool | None
    fake_updates: int
    serving_dtype: str

    def text(self) -> str:
        mode = f"LoRA r{self.lora_rank}" if self.train_mode == "lora" else "full"
        size = f"{self.resolution} px, " if self.resolution else ""
        return (f"{mode}, {size}batch {self.batch_size}, compile {'on' if self.compile else 'off'}, {self.optimizer}"
                + ("" if self.gradient_checkpointing is None else
                   f", gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}"))


def backbone_setup(space, backbone: str) -> Setup:
    """The `Setup` of ``backbone``'s trials in ``space`` (its options, else the backbone's defaults)."""
    from dpdmd.backbones import backbone_class

    config = space.train_config({**space.base_point(), "backbone": backbone})
    cls, _ = backbone_class(backbone)
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    options = {**defaults, **config.backbone_options}
    digits = backbone.startswith("digits")
    mode = options.get("train_mode", "full")
    dtype = "float32" if digits or mode == "lora" else {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[
        options.get("weights_dtype", "bf16")]
    return Setup(backbone=backbone, train_mode=mode, lora_rank=options.get("lora_rank") if mode == "lora" else None,
                 resolution=None if digits else options.get("resolution"), batch_size=config.batch_size,
                 compile=bool(config.compile), optimizer=config.optimizer,
                 gradient_checkpointing=None if digits else bool(options.get("gradient_checkpointing", False)),
                 fake_updates=config.fake_updates, serving_dtype=dtype)


def matching_measurements(setup: Setup, resources: dict, *, path: Path = CYCLE_TIMES) -> list[dict]:
    """The rows of ``cycle_times.json`` measured on ``setup`` and on the kind of device a trial
    with ``resources`` gets: a GPU (rows with ``gpus``), or else that many CPU threads."""
    rows = json.loads(path.read_text())["measurements"]
    keys = ("backbone", "train_mode", "lora_rank", "resolution", "batch_size", "compile", "optimizer",
            "gradient_checkpointing")
    on_gpu = float(resources.get("gpu") or 0) > 0
    out = []
    for row in rows:
        if any(row.get(k) != getattr(setup, k) for k in keys):
            continue
        if on_gpu != bool(row.get("gpus")):
            continue
        if not on_gpu and row.get("cpu_threads") != resources.get("cpu", 1):
            continue
        out.append(row)
    return out


def cycle_seconds(row: dict, fake_updates: int) -> float:
    """A measured row's time per student update at ``fake_updates`` fake-score updates."""
    return row["anchor_s"] + row["student_s"] + fake_updates * row["fake_s"]


def parameter_counts(space, setup: Setup, *, path: Path = PARAMETER_COUNTS) -> dict | None:
    """``{"params", "trained"}`` of ``setup``'s student, or None where nothing counts it."""
    if setup.backbone.startswith("digits"):
        from dpdmd.training.build import build_backbone

        config = space.train_config({**space.base_point(), "backbone": setup.backbone}).replace(device="cpu")
        teacher = build_backbone(config).load_teacher()
        params = sum(p.numel() for p in teacher.parameters())
        return {"params": params, "trained": params}
    counts = json.loads(path.read_text())["counts"].get(setup.backbone)
    if counts is None:
        return None
    if setup.train_mode == "full":
        return {"params": counts["params"], "trained": counts["params"]}
    config = space.train_config({**space.base_point(), "backbone": setup.backbone})
    targets = config.backbone_options.get("lora_target_modules")
    if targets is not None and list(targets) != counts["lora_targets"]:
        return None
    return {"params": counts["params"], "trained": round(counts["lora"] * setup.lora_rank / counts["lora_rank"])}


def state_saves(reports: int, minutes: float, every_minutes: float) -> int:
    """Resumable states a trial of ``reports`` reports over ``minutes`` of training writes
    (`tune.trial.saves.TrialSaves`): one at its first report, then one at the first report
    ``every_minutes`` or more after the last (every report when ``every_minutes`` is 0), the
    reports evenly spaced."""
    if every_minutes <= 0 or reports <= 1:
        return reports
    gap = minutes / reports  # minutes between two reports
    every_n = max(1, math.ceil(every_minutes / gap - 1e-9))  # reports from one state to the next
    return 1 + (reports - 1) // every_n


def expected_updates(scheduler, *, max_t: int) -> float:
    """Student updates of a trial under ``scheduler`` (a `SchedulerSpec`): ``max_t`` (fifo), or
    with ASHA's planned promotions: every trial reaches the first rung, a fraction
    ``1 / reduction_factor`` passes each rung (bracket 0's rungs, `SchedulerSpec.milestones`)."""
    reduction_factor = scheduler.reduction_factor
    rungs = [m for m in dataclasses.replace(scheduler, brackets=1).milestones(max_t) if m < max_t]
    if not rungs:
        return float(max_t)
    total, previous = float(rungs[0]), rungs[0]
    for k, milestone in enumerate([*rungs[1:], max_t], start=1):
        total += (milestone - previous) / reduction_factor ** k
        previous = milestone
    return total


def trials_per_backbone(space, num_samples: int | None = None) -> dict[str, float]:
    """Trials per backbone: the planned ones as planned, the sampled ones split evenly over the
    backbones the sampler may choose."""
    from ..space import planned_trials

    names = space.backbone_names()
    out = dict.fromkeys(names, 0.0)
    for trial in planned_trials(space):
        out[str(trial.get("backbone", names[0]))] += 1
    sampled = 0 if space.method == "grid" else (num_samples or space.num_samples)
    for name in names:
        out[name] += sampled / len(names)
    return out


def estimate_lines(space, *, max_t: int, num_samples: int | None = None) -> list[str]:
    """The dry run's cost section (module docstring), one line per fact; ``max_t``: the scheduler's
    budget per trial in student updates (`tune.cli.plan.max_updates`)."""
    every_min = space.checkpoint.state_every_minutes
    s = space.scheduler
    per_trial = expected_updates(s, max_t=max_t)
    trials = trials_per_backbone(space, num_samples)
    concurrency = space.max_concurrent or sum(trials.values())
    lines = [f"cost (estimates; how: tune/run/estimate.py; the state every {every_min:g} min of training, "
             "checkpoint.state_every_minutes):"]
    written_all, kept_all = 0.0, 0.0
    for backbone, n in trials.items():
        setup = backbone_setup(space, backbone)
        resources = space.backbones[backbone].resources
        every = space.train_config({**space.base_point(), "backbone": backbone}).eval.every
        reports = {"full": max(1, math.ceil(max_t / every)) if every else 1,
                   "mean": max(1, math.ceil(per_trial / every)) if every else 1}
        lines.append(f"  {backbone}: {n:g} trials, {setup.text()}")
        lines.append(f"    student updates per trial: at most {max_t} ({reports['full']} reports)"
                     + (f"; {per_trial:.0f} on average with {s.type.upper()}'s planned promotions (grace "
                        f"{s.grace_period}, reduction {s.reduction_factor:g})" if per_trial < max_t else ""))
        seconds = _time_lines(lines, setup, resources, n=n, per_trial=per_trial, max_t=max_t, concurrency=concurrency)
        counts = parameter_counts(space, setup)
        if counts is None:
            lines.append("    storage: no parameter count for this setup (bench/results/parameter_counts.json)")
            continue
        student = student_bytes(params=counts["params"], train_mode=setup.train_mode, lora=counts["trained"],
                                dtype=setup.serving_dtype)
        state = state_bytes(counts["trained"], optimizer=setup.optimizer)
        lines.append(f"    storage per report: the student {human_bytes(student)} ({setup.serving_dtype}"
                     f"{', the adapter alone' if setup.train_mode == 'lora' else ''}) when it is the trial's new best; "
                     f"the state {human_bytes(state)} ({counts['trained'] / 1e6:.3g} M trained parameters: fp32 weights "
                     f"and optimiser moments of student and fake score) "
                     + ("at every report" if every_min == 0 else f"every {every_min:g} min of training"))
        if seconds is None and every_min:
            lines.append(f"    storage per trial: at most {reports['full']} x {human_bytes(student)} of students + one "
                         f"state at the first report, then one per {every_min:g} min (no measured time: how many is "
                         "unknown); "
                         f"{human_bytes(student + state)} kept at the end")
            continue
        saves = {k: state_saves(reports[k], seconds[k] / 60, every_min) for k in reports}
        written = reports["full"] * student + saves["full"] * state
        lines.append(f"    storage per trial run to max_t: at most {reports['full']} x {human_bytes(student)} + "
                     f"{saves['full']} x {human_bytes(state)} = {human_bytes(written)} written (every report a new "
                     f"best); {human_bytes(student + (state if saves['full'] else 0))} kept at the end (its student"
                     f"{' and its last state' if saves['full'] else ''})")
        written_all += n * (reports["mean"] * student + saves["mean"] * state)
        kept_all += n * (student + (state if saves["mean"] else 0))
    if written_all:
        lines.append(f"  the search: about {human_bytes(written_all)} written (trials of the average length, every "
                     f"report a new best), {human_bytes(kept_all)} kept at the end (the backbones with a count and a "
                     "measured time)")
    return lines


def _time_lines(lines: list[str], setup: Setup, resources: dict, *, n: float, per_trial: float, max_t: int,
                concurrency: float) -> dict[str, float] | None:
    """Append the time lines of one backbone; returns the seconds of a trial run to max_t
    (``"full"``) and of an average one (``"mean"``) on the first measured machine, or None."""
    rows = matching_measurements(setup, resources)
    workers = int(resources.get("workers", 1))
    lines.append("    time (training only; evaluations are not measured):")
    if workers > 1:
        lines.append(f"      no measurement: a trial of {workers} data-parallel workers was never timed")
        return None
    if not rows:
        lines.append("      no measurement of this setup (bench/results/cycle_times.json lists what was measured)")
        return None
    gpu = float(resources.get("gpu") or 0)
    slowdown = 1 / gpu if 0 < gpu < 1 else 1.0  # a shared GPU: 1/g times slower, the same GPU-hours
    first = None
    for row in rows:
        cycle = cycle_seconds(row, setup.fake_updates)
        trial_s, longest = per_trial * cycle * slowdown, max_t * cycle * slowdown
        wall = max(longest, n * trial_s / max(concurrency, 1))
        unit = "GPU-hours" if gpu else "core-hours"
        used = n * per_trial * cycle * (max(gpu, 1.0) if gpu else float(resources.get("cpu") or 1))
        lines.append(f"      {row['machine'].split(' (')[0]}: {cycle:.3g} s per update (measured {row['cycle_s']:g} s, "
                     f"{row['date']}, {row['commit']}) -> a trial {_hours(trial_s)} on average, {_hours(longest)} "
                     f"to max_t; {used / 3600:.3g} {unit}; wall time {_hours(wall)} for these trials at {concurrency:g} "
                     "concurrent")
        first = first or {"full": longest, "mean": trial_s}
    return first
