"""Run a DP-DMD hyperparameter search and write its Pareto front of diversity vs quality.

    python -m tune.search --space search_spaces/quickstart.yaml            # local Ray, CPU, minutes
    python -m tune.search --space search_spaces/anchor.yaml --address auto --storage s3://bucket/runs
    python -m tune.search --space search_spaces/quickstart.yaml --dry-run  # validate, print the plan
    python -m tune.search --space search_spaces/quickstart.yaml --resume   # continue an interrupted one

Outputs go to STORAGE/NAME/ (default ./runs/<space name>/): trials.parquet, pareto.parquet,
pareto.png, curves.png, summary.json, and Ray Tune's own trial directories; a W&B summary run
holds the front (offline when no API key is configured: upload later with `wandb sync DIR`).

Exit status: 0 when every trial finished; 1 when the search ran but some trials failed (errored
or diverged: each is listed with its error in summary.json and the printed table, as Ray Tune's
own `raise_on_failed_trial` would fail) or its outputs could not be written to the storage (a
full disk, a storage lost: the folder is named, and where the outputs are kept instead); 2 when the input is refused before anything starts
(space file, flags, storage, address, resources).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from .space import SearchSpace, SpaceError, grid_size, load_space


MAX_NUM_SAMPLES = 10_000  # trials of one search (grid: repeats); a typo must not end in MemoryError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tune.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", required=True, type=Path, help="search-space YAML file (see search_spaces/)")
    parser.add_argument("--name", help="experiment name (default: the space's `name`)")
    parser.add_argument("--storage", default="runs",
                        help="results root: a directory or a URI such as s3://bucket/prefix (default: ./runs)")
    parser.add_argument("--address", help="join a running Ray cluster: 'auto' or HOST:PORT (default: start a local Ray)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted search of this name")
    parser.add_argument("--num-samples", type=int, help="override the space's num_samples")
    parser.add_argument("--no-cache", action="store_true", help="disable the shared teacher-anchor cache (benchmarks)")
    parser.add_argument("--dry-run", action="store_true", help="validate the space and print the plan; run nothing")
    parser.add_argument("--wait-for-resources", type=float, default=0.0, metavar="SECONDS",
                        help="with --address: wait up to this long for the cluster to offer the trials' "
                             "resources (an autoscaling cluster adds nodes); default 0: refuse at once")
    parser.add_argument("--simulate", type=Path, metavar="TABLE.parquet",
                        help="replay the search on recorded curves (bench/tabular.py) instead of training: tune.simulate")
    return parser.parse_args(argv)


def storage_uri(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def join_uri(base: str, *parts: str) -> str:
    """``base/part/...`` for paths and URIs, keeping a URI's query (e.g. ``?endpoint_override=``)."""
    from urllib.parse import urlsplit, urlunsplit

    if "://" not in base:
        return str(Path(base, *parts))
    u = urlsplit(base)
    return urlunsplit((u.scheme, u.netloc, "/".join([u.path.rstrip("/"), *parts]), u.query, u.fragment))


# --- the plan -----------------------------------------------------------------------------------

def describe_plan(space: SearchSpace, args: argparse.Namespace) -> str:
    from dpdmd.memory import fit_line

    from .space import baseline_trials, planned_trials

    lines = [f"search space: {space.path} (name {args.name or space.name})", f"method: {space.method}, seed {space.seed}"]
    baselines = baseline_trials(space)
    if space.method == "grid":
        points = planned_trials(space)
        lines.append(f"trials: {len(points)} ({grid_size(space)} grid points"
                     f"{f' + {len(baselines)} vanilla-DMD baseline(s)' if baselines else ''})")
        lines.extend(f"  {i:3d}  " + "  ".join(f"{k}={v}" for k, v in p.items()) for i, p in enumerate(points))
    else:
        lines.append(f"trials: {args.num_samples or space.num_samples} sampled + {len(baselines)} vanilla-DMD baseline(s)")
        for name, p in space.parameters.items():
            lines.append(f"  {name}: " + (f"{p.distribution}[{p.min}, {p.max}]" if p.distribution else
                                          f"one of {p.values}" if p.values else f"= {p.value}"))
    lines.append(f"concurrency: {space.max_concurrent or 'as resources allow'}")
    lines.append("resources per trial: " + "; ".join(f"{b}: {s.resources}" for b, s in space.backbones.items()))
    for b, spec in space.backbones.items():  # GPU memory per trial against its share (dpdmd.memory)
        line = fit_line(b, spec.options, {**space.train, **spec.train}, spec.resources)
        lines += [line] if line else []
    s, max_t = space.scheduler, max_updates(space)
    on = {"asha": f" on the combined objective (w = {space.objective.diversity_weight})",
          "moasha": " on (diversity_score, quality_score) by non-dominated sorting, ties by epsilon-net"}
    lines.append(f"scheduler: {s.type}" + (f"{on[s.type]}, time = student updates, max_t {max_t}, grace "
                                           f"{s.grace_period}, reduction {s.reduction_factor}, brackets {s.brackets}"
                                           if s.type in on else " (no early stopping)"))
    o = space.objective
    lines.append(f"fronts: one per backbone, over each trial's kept student (its best by J from "
                 f"{o.min_student_updates} student updates on, quality_score >= {o.min_quality:g})")
    lines.extend(_describe_anchor_cache(space))
    from .run.estimate import estimate_lines

    lines.extend(estimate_lines(space, num_samples=args.num_samples))
    return "\n".join(lines)


def _describe_anchor_cache(space: SearchSpace) -> list[str]:
    """Per backbone: the teacher evaluations one pass over every K costs, and for the search."""
    from dpdmd.anchors import teacher_calls_for
    from dpdmd.trainer import build_backbone

    ks, lines = space.anchor_ks(), []
    for backbone in space.backbone_names():
        cfg = space.train_config({**space.base_point(), "backbone": backbone})
        b = build_backbone(cfg.replace(device="cpu")) if backbone.startswith("digits") else None
        calls = teacher_calls_for(ks, b.schedule) if b else max(ks)
        updates = space.max_student_updates(cfg)
        lines.append(f"anchor cache ({backbone}): K in {ks} from one teacher pass of {calls} guided steps "
                     f"per student iteration; at most {updates} iterations x {calls} = {updates * calls} teacher "
                     f"evaluations for the whole search")
    return lines


def max_updates(space: SearchSpace) -> int:
    """The scheduler's max_t: as set, else the student updates of the configured iterations."""
    return space.scheduler.max_t or space.max_student_updates(space.train_config(space.base_point()))


def rung_milestones(space: SearchSpace) -> list[float]:
    """The student updates at which the space's ASHA compares trials ([] without one)."""
    from .outputs.curves_figure import asha_milestones

    s = space.scheduler
    if s.type not in ("asha", "moasha"):
        return []
    return asha_milestones(grace_period=s.grace_period, reduction_factor=s.reduction_factor,
                           max_t=max_updates(space), brackets=s.brackets)


# --- running ------------------------------------------------------------------------------------

def build_tuner(space: SearchSpace, args: argparse.Namespace, *, storage: str, cache: dict):
    """The `ray.tune.Tuner` of the search (restored from the storage under ``--resume``)."""
    from ray import tune

    from .multi_gpu import build_trainable
    from .schedulers import STATE_FILE as SCHEDULER_STATE_FILE
    from .schedulers import clear_state, make_scheduler
    from .state_backup import StateBackup, clear_copy, restore_if_damaged
    from .space import planned_trials
    from .trials import build_searcher

    name = args.name or space.name
    trainable = build_trainable(space, cache)  # one placement group per trial, several workers if asked
    # Ray's restore brings back the scheduler pickled at the start, with empty rungs: ours keep
    # theirs in the experiment directory and reload them before the first resumed trial is added.
    state_uri = join_uri(storage, name, SCHEDULER_STATE_FILE)
    if args.resume:
        restored = restore_if_damaged(join_uri(storage, name))  # a full disk left Ray's own state cut short
        if restored:
            print(f"warning: {restored}", file=sys.stderr)
        return tune.Tuner.restore(join_uri(storage, name), trainable, resume_unfinished=True, resume_errored=True)
    clear_state(state_uri)  # a fresh search of an old name: the old rungs are not ours
    clear_copy(join_uri(storage, name))
    callbacks = [StateBackup(join_uri(storage, name))]  # restored with the Tuner: kept after a resume too
    if cache["enabled"]:  # the anchor store's counts, kept with the experiment (added up over a resume)
        from .shared_cache import STATS_FILE, StatsRecorder

        clear_state(join_uri(storage, name, STATS_FILE))
        callbacks.append(StatsRecorder(cache["spill_uri"], join_uri(storage, name, STATS_FILE)))
    if space.wandb.enabled and space.wandb.per_trial:
        from .wandb_keys import WandbLoggerWithoutKeyInRuntimeEnv

        callbacks.append(WandbLoggerWithoutKeyInRuntimeEnv(project=space.wandb.project, entity=space.wandb.entity, group=name))
    run_config = tune.RunConfig(
        name=name, storage_path=storage, callbacks=callbacks, verbose=1,
        checkpoint_config=best_checkpoint_config(), failure_config=tune.FailureConfig(max_failures=1))
    # the searcher says when the plan is done (grid); samplers run num_samples after the baselines
    sampled = 0 if space.method == "grid" else (args.num_samples or space.num_samples)
    scheduler = make_scheduler(space.scheduler, max_t=max_updates(space), state_uri=state_uri)
    tune_config = tune.TuneConfig(search_alg=build_searcher(space), scheduler=scheduler,
                                  num_samples=len(planned_trials(space)) + sampled,
                                  max_concurrent_trials=space.max_concurrent or None, reuse_actors=False)
    return tune.Tuner(trainable, run_config=run_config, tune_config=tune_config)


def best_checkpoint_config():
    """Each trial keeps its best checkpoint by J from ``objective.min_student_updates`` on
    (``shown_objective``: the trial's kept student, `tune.outputs.kept`) and, beside
    it, its latest: Ray 2.60's checkpoint manager never deletes the latest
    registered checkpoint (`ray.train._internal.checkpoint_manager`), and a resumed or restarted
    trial continues from it (``trial.checkpoint`` is the latest). At most two per trial. Ray ranks
    a NaN J below -inf below any finite J; a diverged report carries no checkpoint."""
    from ray import tune

    return tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="shown_objective",
                               checkpoint_score_order="max")


def experiment_exists(storage: str, name: str) -> bool:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(join_uri(storage, name, "tuner.pkl"))
    return fs.get_file_info(root).type == pafs.FileType.File


def run_search(space: SearchSpace, args: argparse.Namespace) -> dict:
    """Start Ray, run the trials, write and print the front; returns the summary (summary.json)."""
    import ray

    from . import results as res
    from .failures import failed_trials, without_failed
    from .outputs.fronts import backbone_fronts, pareto_rows
    from .outputs.kept import kept_reports, unique_reports
    from .outputs.raw_units import evaluation_settings
    from .shared_cache import get_or_create_store
    from .state_backup import local_results
    from .trainable import cache_settings

    storage = storage_uri(args.storage)
    name = args.name or space.name
    started = time.time()
    _start_ray(space, args)
    spill_uri = join_uri(storage, "anchor_cache")
    cache = cache_settings(space, spill_uri, enabled=not args.no_cache)
    store = get_or_create_store(spill_uri) if cache["enabled"] else None
    tuner = build_tuner(space, args, storage=storage, cache=cache)
    watch = LeastFreeSpace(storage)
    try:
        with watch:
            grid = tuner.fit()
    except Exception as err:  # noqa: BLE001 - Ray reads the results back from the storage
        why = storage_failure(storage, err, least_free=watch.least)
        if why is None:
            raise
        lost = (f"the storage {join_uri(storage, name)} failed during the search ({why}; "
                f"{type(err).__name__}: {_first_line(err)}). The trials' checkpoints up to then are "
                "there: once it is back or has space, continue with --resume")
        grid = local_results(join_uri(storage, name)) if "://" in storage else None
        if grid is None:
            ray.shutdown()
            raise StorageLost(lost) from None
        # a remote storage lost: the reports so far are in Ray's local staging copy too; write them locally
        print(f"error: {lost}. The results so far are read from the driver's local copy", file=sys.stderr)
        global _EXIT_AT_ONCE
        _EXIT_AT_ONCE = True  # measured: exit handlers that wait on a lost S3 sat there for minutes

    o = space.objective
    trials = unique_reports(res.with_scores(res.trials_frame(grid), diversity_weight=o.diversity_weight))
    final = res.final_results(trials, min_quality=o.min_quality)  # last reports: the counters
    kept = kept_reports(trials, min_quality=o.min_quality, min_student_updates=o.min_student_updates)
    failed = failed_trials(grid, final)
    fronts = backbone_fronts(without_failed(kept, failed))  # failed trials never sit on a front
    cache_stats = cache_statistics(spill_uri, join_uri(storage, name)) if store is not None else {}
    compute = compute_spent(final, time.time() - started)
    summary = res.summarize(kept, fronts, cache_stats=cache_stats, compute=compute, space_name=name,
                            min_quality=o.min_quality, diversity_weight=o.diversity_weight,
                            evaluation=evaluation_settings(space))
    summary["failed_trials"] = failed
    summary["min_student_updates"] = o.min_student_updates  # no student kept before it
    summary["rungs"] = rung_milestones(space)
    out_dir = local_experiment_dir(storage, name)
    pareto = pareto_rows(fronts)
    paths = _write_outputs(out_dir, trials, kept, pareto, summary)
    outputs = [p.name for p in paths.values() if p.exists()]  # before an upload drops the local copy
    wandb_dir = (_log_wandb_summary(space, name, kept, trials, pareto, paths, summary, out_dir,
                                    experiment=join_uri(storage, name)) if paths else None)
    where = str(out_dir)
    if "://" in storage and paths:  # the outputs (and the offline W&B run) go to the storage too
        try:
            upload(out_dir, join_uri(storage, name))
            where = join_uri(storage, name)
            if wandb_dir:
                wandb_dir = join_uri(where, "wandb", Path(wandb_dir).name)
        except OSError as err:  # the storage went away during the search: keep the local copy
            summary["output_error"] = (f"cannot upload the outputs to {join_uri(storage, name)}: "
                                       f"{_first_line(err)}; they are kept in {out_dir}")
            print(f"error: {summary['output_error']}", file=sys.stderr)
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))  # says where they are
    if store is not None and args.address:  # a shared cluster: free the objects (the spill stays)
        _kill_store(spill_uri)
    ray.shutdown()
    _print_outcome(space, fronts, summary, outputs=outputs, where=where, wandb_dir=wandb_dir)
    return summary


def _start_ray(space: SearchSpace, args: argparse.Namespace) -> None:
    """Join the cluster at ``--address`` (refused with a SpaceError when it cannot offer the
    trials' resources) or start a private local Ray."""
    import ray

    # Tune snapshots the experiment after each checkpoint: frequent on tiny trials, and harmless.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not args.address:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, namespace="dpdmd-tune")
        return
    ray.init(address=args.address, namespace="dpdmd-tune")
    from .preflight import wait_for_resources

    problems = wait_for_resources({b: space.backbones[b].resources for b in space.backbone_names()},
                                  wait_s=args.wait_for_resources)
    if problems:
        ray.shutdown()
        raise SpaceError(space.path, problems)


def _write_outputs(out_dir: Path, trials, kept, pareto, summary: dict) -> dict:
    """`tune.results.write_outputs`; a read-only or full disk: say where, keep what was written,
    print the summary on stdout instead (returns {})."""
    from . import results as res

    try:
        return res.write_outputs(out_dir, trials, kept, pareto, summary, rungs=summary.get("rungs"),
                                 min_student_updates=summary.get("min_student_updates") or 0)
    except OSError as err:
        summary["output_error"] = f"cannot write the outputs in {out_dir}: {err.strerror or err}"
        print(f"error: {summary['output_error']}; the summary follows on stdout", file=sys.stderr)
        print(json.dumps(summary, indent=1, default=str))
        return {}


def _log_wandb_summary(space: SearchSpace, name: str, kept, reports, pareto, paths: dict, summary: dict,
                       out_dir: Path, *, experiment: str):
    """The W&B summary run of the search when the space enables W&B (in the experiment's group,
    `tune.outputs.wandb_content`); its local directory or None."""
    if not space.wandb.enabled:
        return None
    from . import results as res
    from .outputs.wandb_content import run_config
    from .wandb_summary import log_summary_run

    failed = summary["failed_trials"]
    failures = {"failed_trials": len(failed), "failed_trial_errors": "; ".join(
        f"{f['trial_id']} ({f['status']}): {f['error']}" for f in failed)}
    students = [r for records in (summary.get("fronts") or {}).values() for r in records]
    try:
        config = run_config(space, kept, experiment=experiment)
    except Exception as err:  # noqa: BLE001 - W&B never fails the search; the run goes without its config
        print(f"warning: the W&B run's config could not be built: {err}", file=sys.stderr)
        config = None
    return log_summary_run(project=space.wandb.project, entity=space.wandb.entity, name=f"{name}-summary", group=name,
                           config=config, front_df=res.front_with_teacher(pareto, summary["teacher"]),
                           trials_df=kept, reports_df=reports, students=students,
                           recommended=summary.get("recommended"), upload_students=space.wandb.upload_students,
                           png_paths={"pareto": paths["plot"], "curves": paths["curves"]},
                           summary={**res.headline(summary), **failures}, x="diversity_score",
                           y="quality_score", mode=space.wandb.mode, directory=str(out_dir))


def _kill_store(spill_uri: str) -> None:
    import ray

    from .shared_cache import find_store

    try:
        ray.kill(find_store(spill_uri))
    except (ValueError, ray.exceptions.RayError):
        pass  # already gone


def _print_outcome(space: SearchSpace, fronts: dict, summary: dict, *, outputs: list[str], where: str,
                   wandb_dir: str | None) -> None:
    from . import results as res
    from .failures import failures_table

    failed, compute = summary["failed_trials"], summary["compute"]
    print(f"\nOne Pareto front per backbone (diversity_score, quality_score of each trial's kept student; its "
          f"teacher = (1, 1), quality_score >= {space.objective.min_quality:g}):")
    print(res.front_table(fronts, summary.get("recommended")))
    if failed:
        print(f"\nFailed trials ({len(failed)}; kept off the fronts):")
        print(failures_table(failed))
    print(f"\noutputs in {where}/: " + ", ".join(outputs))
    print(f"export it: python -m tune.export {where} --recommended --out DIR")
    if wandb_dir:
        print(f"W&B summary run: {wandb_dir}" + ("  (offline: upload with `wandb sync " + wandb_dir + "`)"
                                                  if "offline-run" in wandb_dir else ""))
    print(f"teacher evaluations for anchors: {compute['teacher_calls_spent']} spent, "
          f"{compute['teacher_calls_without_cache']} without the cache; wall time {compute['wall_seconds']:.0f} s")


class StorageLost(RuntimeError):
    """The search's storage stopped answering or filled up during the search."""


FULL_DISK_BYTES = 16 * 2**20  # less free than this on the storage: a full disk


class LeastFreeSpace:
    """The least free space seen on a local storage while a search runs (sampled every 0.5 s in a
    thread). A full disk is often partly freed again by the time Ray's error surfaces (half-written
    checkpoints are removed), so the space free at that moment can hide it: measured once in four
    runs of tests/faults/test_full_disk.py."""

    def __init__(self, storage: str, every: float = 0.5):
        self.storage, self.every, self.least = storage, every, None
        self._stop = threading.Event()

    def __enter__(self):
        if "://" not in self.storage:
            threading.Thread(target=self._sample, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def _sample(self) -> None:
        import shutil

        while not self._stop.wait(self.every):
            try:
                free = shutil.disk_usage(self.storage).free
            except OSError:
                continue
            self.least = free if self.least is None else min(self.least, free)


def storage_failure(storage: str, err: BaseException, *, least_free: int | None = None) -> str | None:
    """Why ``err`` (raised by ``Tuner.fit`` reading the results back) is the storage's fault, or
    None. Seen: S3 unreachable (an OSError from pyarrow), and a full disk (Ray's error files half
    written: an EOFError unpickling one). ``least_free``: the least free bytes seen during the
    search (`LeastFreeSpace`)."""
    import shutil

    if "://" in storage:
        return "it stopped answering" if isinstance(err, OSError) or "OSError" in repr(err) else None
    try:
        free = shutil.disk_usage(storage).free
    except OSError:
        return "it cannot be read"
    least = free if least_free is None else min(free, least_free)
    if least < FULL_DISK_BYTES and isinstance(err, (OSError, EOFError)):
        return f"its disk is full: {least / 2**20:.1f} MiB free at the least"
    return None


def store_stats(spill_uri: str) -> dict:
    """The anchor store's statistics; whatever happened to the store (killed, recreated) the
    driver still writes its outputs."""
    import ray

    from .shared_cache import find_store

    try:
        return ray.get(find_store(spill_uri).stats.remote(), timeout=60)
    except Exception as err:  # noqa: BLE001 - the cache is an optimisation; never lose the results to it
        return {"unavailable": f"{type(err).__name__}: {_first_line(err)}"}


def cache_statistics(spill_uri: str, experiment: str) -> dict:
    """The anchor store's statistics over the whole search: its current counts recorded with the
    experiment and added to those of the stores before it (a resumed search, a recreated store)."""
    import warnings

    from .shared_cache import STATS_FILE, record_stats, total_stats

    current = store_stats(spill_uri)
    uri = join_uri(experiment, STATS_FILE)
    try:
        record_stats(uri, current)
        return {**current, **total_stats(uri, current)}
    except Exception as err:  # noqa: BLE001 - the storage failing here must not lose the results
        warnings.warn(f"cache statistics of earlier parts not read from {uri}: {type(err).__name__}: {err}",
                      stacklevel=2)
        return current


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:200]


def local_experiment_dir(storage: str, name: str) -> Path:
    if "://" in storage:
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"{name}-outputs-"))
    return Path(storage) / name


def upload(local: Path, uri: str) -> None:
    """Copy the outputs (and the offline W&B run) to the storage URI, then drop the local copy."""
    import shutil

    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    for path in local.iterdir():
        target = f"{root}/{path.name}"
        if path.is_dir():
            fs.create_dir(target, recursive=True)
        pafs.copy_files(str(path), target, destination_filesystem=fs)
    shutil.rmtree(local, ignore_errors=True)


def compute_spent(final, wall_seconds: float) -> dict:
    """Teacher evaluations spent on anchors, against what a search without the cache would spend
    (each trial's own count of both, from its last report: ``final``)."""

    def total(column: str) -> int:
        return int(final[column].fillna(0).sum()) if column in final else 0

    spent, without = total("anchor_teacher_calls"), total("anchor_teacher_calls_alone")
    return {"wall_seconds": round(wall_seconds, 1), "trials": int(final.shape[0]),
            "student_updates": total("student_updates"), "teacher_calls_spent": spent,
            "teacher_calls_without_cache": without,
            "teacher_calls_ratio": round(spent / without, 4) if without else None}


def check_command_line(space: SearchSpace, args: argparse.Namespace) -> list[str]:
    """Everything about the flags that can be refused before Ray starts (`tune.preflight`)."""
    from . import preflight

    problems = []
    if args.num_samples is not None and not 1 <= args.num_samples <= MAX_NUM_SAMPLES:
        problems.append(f"--num-samples: {args.num_samples} must be in 1..{MAX_NUM_SAMPLES}")
    if args.name is not None:
        problems += preflight.name_problems(args.name, "--name")
    backbones = {b: space.backbones[b].resources for b in space.backbone_names()}
    if args.address:
        problems += preflight.address_problems(args.address)
    else:
        problems += preflight.resource_problems(backbones, preflight.local_nodes(), "this machine")
    if args.dry_run or problems:
        return problems
    if args.simulate:  # no Ray, no experiment: the table first, then where the replay is written
        from .tabular import RecordedTable, TableError

        try:
            RecordedTable.load(args.simulate)
        except TableError as err:
            return [str(err)]
        return preflight.storage_problems(args.storage)
    problems += preflight.storage_problems(args.storage)
    if problems:
        return problems
    storage, name = storage_uri(args.storage), args.name or space.name
    exists = experiment_exists(storage, name)
    if args.resume and not exists:
        problems.append(f"--resume: no search named {name!r} under {storage} to resume; run without --resume to start it")
    elif not args.resume and exists:
        problems.append(f"--name: a search named {name!r} already exists under {storage}; continue it with "
                        "--resume, or start a new one with another --name (or --storage)")
    elif args.resume:
        identity = preflight.space_identity(space.path, args.num_samples)
        problems += preflight.resume_problems(join_uri(storage, name), identity, name=name)
        if not problems:  # Ray's own state cut short (a full disk) with no whole copy to put back
            from .state_backup import resume_problems

            problems += resume_problems(join_uri(storage, name))
    if not problems and not args.resume:  # a teacher scoring 0 would fail every trial (checked at the start)
        problems += preflight.teacher_problems(space)
    return problems


def main(argv=None) -> int:
    global _EXIT_AT_ONCE
    args = parse_args(argv)
    try:
        space = load_space(args.space)
        problems = check_command_line(space, args)
        if problems:
            raise SpaceError(args.space, problems)
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe_plan(space, args))
        return 0
    if args.simulate:
        from .simulate import simulate_command

        return simulate_command(space, args)
    from . import preflight

    storage, name = storage_uri(args.storage), args.name or space.name
    if not args.resume:  # what identifies this search, checked by a later --resume
        preflight.write_space_record(join_uri(storage, name), preflight.space_identity(space.path, args.num_samples))
    try:
        summary = run_search(space, args)
    except SpaceError as err:  # refused once connected (the cluster's resources)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StorageLost as err:
        print(f"error: {err}", file=sys.stderr)
        _EXIT_AT_ONCE = True
        return 1
    failed = summary.get("failed_trials") or []
    if failed:
        print(f"\n{len(failed)} trial(s) failed (listed above and in summary.json): exit status 1", file=sys.stderr)
        return 1
    if summary.get("output_error"):  # the trials ran, but their outputs are not where they belong
        return 1
    return 0


_EXIT_AT_ONCE = False  # the storage is gone: exit handlers that would wait on it are skipped


if __name__ == "__main__":
    status = main()
    if _EXIT_AT_ONCE:  # measured: with S3 gone, the process printed its error, then sat in exit handlers for minutes
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
