"""A search run: start Ray, run the trials (`tune.run.tuner`), read the results back (through a
storage that may fail: `tune.run.storage_faults`), write the outputs (`tune.outputs`) and the W&B
summary run, print the front."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..space.schema import SearchSpace, SpaceError
from ..storage.uri import join_uri, local_experiment_dir, storage_uri, upload
from .interrupts import Interrupts, resume_command
from .storage_faults import LeastFreeSpace, StorageLost, first_line, storage_failure
from .tuner import build_tuner


@dataclass(frozen=True)
class SearchRun:
    """How a search went: its ``summary`` (summary.json's content), and ``storage_lost``: its remote
    storage went away mid-search (its results were read from the driver's local copy), so the
    process must end without the exit handlers that would wait on that storage."""

    summary: dict
    storage_lost: bool = False
    interrupted: int = 0  # a SIGINT / SIGTERM stopped it: the exit status it asks for (`tune.run.interrupts`)


def run_search(space: SearchSpace, args: argparse.Namespace) -> SearchRun:
    """Start Ray, run the trials, write and print the front; returns the summary (summary.json),
    whether the storage was lost and whether a signal stopped it (`tune.run.interrupts`: a partial
    search, its outputs marked interrupted, the --resume command printed)."""
    storage = storage_uri(args.storage)
    name = args.name or space.name
    with Interrupts(resume_command=resume_command(args, name, storage)) as interrupts:
        return _run_search(space, args, storage, name, interrupts)


def _run_search(space: SearchSpace, args: argparse.Namespace, storage: str, name: str,
                interrupts: Interrupts) -> SearchRun:
    import ray

    from ..outputs.failures import failed_trials, without_failed
    from ..outputs.front import backbone_fronts, pareto_rows, summarize
    from ..outputs.kept import kept_reports, unique_reports
    from ..outputs.raw_units import evaluation_settings
    from ..outputs.results import final_results, trials_frame, with_scores
    from ..storage.state_backup import local_results
    from ..trial.anchor_store import get_or_create_store
    from ..trial.cache_stats import cache_statistics
    from ..trial.trainable import cache_settings

    started = time.time()
    storage_lost = False
    _start_ray(space, args)
    interrupts.install()  # again: ray.init puts its own SIGTERM handler (sys.exit mid-loop: an abort) over ours
    spill_uri = join_uri(storage, "anchor_cache")
    cache = cache_settings(spill_uri, enabled=not args.no_cache)
    store = get_or_create_store(spill_uri) if cache["enabled"] else None
    tuner = build_tuner(space, args, storage=storage, cache=cache)
    watch = LeastFreeSpace(storage)
    try:
        with watch:
            grid = tuner.fit() if not interrupts.received else []  # a signal before Tune started: nothing ran
    except Exception as err:  # noqa: BLE001 - Ray reads the results back from the storage
        why = storage_failure(storage, err, least_free=watch.least)
        if why is None:
            raise
        lost = (f"the storage {join_uri(storage, name)} failed during the search ({why}; "
                f"{type(err).__name__}: {first_line(err)}). The trials' checkpoints up to then are "
                "there: once it is back or has space, continue with --resume")
        grid = local_results(join_uri(storage, name)) if "://" in storage else None
        if grid is None:
            ray.shutdown()
            raise StorageLost(lost) from None
        # a remote storage lost: the reports so far are in Ray's local staging copy too; write them locally
        print(f"error: {lost}. The results so far are read from the driver's local copy", file=sys.stderr)
        storage_lost = True  # measured: exit handlers that wait on a lost S3 sat there for minutes

    # a report Ray's files hold twice (a trial resumed after an abort re-reports from its checkpoint): once
    o = space.objective
    trials = unique_reports(with_scores(trials_frame(grid), diversity_weight=o.diversity_weight))
    final = final_results(trials, min_quality=o.min_quality)  # last reports: the counters
    kept = kept_reports(trials, min_quality=o.min_quality, min_student_updates=o.min_student_updates)
    failed = failed_trials(grid, final)
    fronts = backbone_fronts(without_failed(kept, failed))  # failed trials never sit on a front
    cache_stats = cache_statistics(spill_uri, join_uri(storage, name)) if store is not None else {}
    compute = compute_spent(final, time.time() - started)
    summary = summarize(kept, fronts, cache_stats=cache_stats, compute=compute, space_name=name,
                        min_quality=o.min_quality, diversity_weight=o.diversity_weight,
                        evaluation=evaluation_settings(space))
    summary["failed_trials"] = failed
    summary["min_student_updates"] = o.min_student_updates  # no student kept before it
    summary["rungs"] = space.scheduler.milestones(space.max_t())
    summary.update(_search_status(interrupts, storage, name))
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
                                       f"{first_line(err)}; they are kept in {out_dir}")
            print(f"error: {summary['output_error']}", file=sys.stderr)
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))  # says where they are
    if store is not None and args.address:  # a shared cluster: free the objects (the spill stays)
        _kill_store(spill_uri)
    ray.shutdown()
    _print_outcome(space, fronts, summary, outputs=outputs, where=where, wandb_dir=wandb_dir)
    return SearchRun(summary, storage_lost, interrupted=interrupts.exit_status if summary["interrupted"] else 0)


def _search_status(interrupts: Interrupts, storage: str, name: str) -> dict:
    """summary.json's ``status`` ("finished", or "interrupted (SIGNAL)": a partial search),
    ``interrupted`` (the signal or None), ``unfinished_trials`` (started and not ended, where Ray
    says) and ``resume_command``: flat values, so W&B's run summary shows them too."""
    if not interrupts.received:
        return {"status": "finished", "interrupted": None}
    from .tuner import experiment_exists

    saved = experiment_exists(storage, name)
    command = interrupts.resume_command if saved else \
        interrupts.resume_command.replace(" --resume", "")  # stopped before Ray saved anything: start again
    return {"status": f"interrupted ({interrupts.signal})", "interrupted": interrupts.signal,
            "unfinished_trials": _unfinished_trials(join_uri(storage, name)) if saved else None,
            "resume_command": command}


def _unfinished_trials(experiment: str) -> int | None:
    """How many of the trials in the experiment state Ray saved are neither terminated nor errored
    (what ``--resume`` continues; the ResultGrid's own trials are all stopped by then); None if
    the state cannot be read."""
    from ray.tune import ExperimentAnalysis

    try:
        return sum(t.status not in ("TERMINATED", "ERROR") for t in ExperimentAnalysis(experiment).trials)
    except Exception:  # noqa: BLE001 - a count for the summary, not worth failing the outputs over
        return None


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
    from ..storage.preflight import wait_for_resources

    problems = wait_for_resources({b: space.backbones[b].resources for b in space.backbone_names()},
                                  wait_s=args.wait_for_resources)
    if problems:
        ray.shutdown()
        raise SpaceError(space.path, problems)


def _write_outputs(out_dir: Path, trials, kept, pareto, summary: dict) -> dict:
    """`tune.outputs.files.write_outputs`; a read-only or full disk: say where, keep what was written,
    print the summary on stdout instead (returns {})."""
    from ..outputs.files import write_outputs

    try:
        return write_outputs(out_dir, trials, kept, pareto, summary, rungs=summary.get("rungs"),
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
    from ..outputs.front import front_with_teacher, headline
    from ..outputs.wandb import log_summary_run
    from ..outputs.wandb_content import run_config

    failed = summary["failed_trials"]
    failures = {"failed_trials": len(failed), "failed_trial_errors": "; ".join(
        f"{f['trial_id']} ({f['status']}): {f['error']}" for f in failed), "status": summary["status"]}
    students = [r for records in (summary.get("fronts") or {}).values() for r in records]
    try:
        config = run_config(space, kept, experiment=experiment)
    except Exception as err:  # noqa: BLE001 - W&B never fails the search; the run goes without its config
        print(f"warning: the W&B run's config could not be built: {err}", file=sys.stderr)
        config = None
    return log_summary_run(project=space.wandb.project, entity=space.wandb.entity, name=f"{name}-summary", group=name,
                           config=config, front_df=front_with_teacher(pareto, summary["teacher"]),
                           trials_df=kept, reports_df=reports, students=students,
                           recommended=summary.get("recommended"), upload_students=space.wandb.upload_students,
                           png_paths={"pareto": paths["plot"], "curves": paths["curves"]},
                           summary={**headline(summary), **failures}, x="diversity_score",
                           y="quality_score", mode=space.wandb.mode, directory=str(out_dir))


def _kill_store(spill_uri: str) -> None:
    import ray

    from ..trial.anchor_store import find_store

    try:
        ray.kill(find_store(spill_uri))
    except (ValueError, ray.exceptions.RayError):
        pass  # already gone


def _print_outcome(space: SearchSpace, fronts: dict, summary: dict, *, outputs: list[str], where: str,
                   wandb_dir: str | None) -> None:
    from ..outputs.failures import failures_table
    from ..outputs.front import front_table

    failed, compute = summary["failed_trials"], summary["compute"]
    if summary["interrupted"]:
        unfinished = summary.get("unfinished_trials")
        print(f"\nINTERRUPTED ({summary['interrupted']}): a partial search"
              + (f", {unfinished} trial(s) unfinished" if unfinished is not None else "")
              + "; the fronts below are of the reports made so far")
    print(f"\nOne Pareto front per backbone (diversity_score, quality_score of each trial's kept student; its "
          f"teacher = (1, 1), quality_score >= {space.objective.min_quality:g}):")
    print(front_table(fronts, summary.get("recommended")))
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
    if summary["interrupted"]:
        print(f"\nThe search was interrupted ({summary['interrupted']}); continue it with:\n  "
              f"{summary['resume_command']}", file=sys.stderr)


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
