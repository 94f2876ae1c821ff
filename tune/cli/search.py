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
(space file, flags, storage, address, resources, a name another search is using); 130 / 143 when
SIGINT (Ctrl+C) / SIGTERM stopped it: its state is saved, the outputs of the reports so far are
written and marked interrupted, and the --resume command that continues it is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..run.driver import run_search
from ..run.storage_faults import StorageLost
from ..run.tuner import experiment_exists
from ..space import SpaceError, load_space
from ..space.schema import SearchSpace, too_many_trials
from ..storage.uri import join_uri, storage_uri
from .plan import describe_plan


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


def check_command_line(space: SearchSpace, args: argparse.Namespace, *, experiment: bool = True) -> list[str]:
    """Everything about the flags that can be refused before Ray starts (`tune.storage.preflight`);
    ``experiment`` False: not what the experiment in the storage refuses (`experiment_problems`)."""
    from ..storage import preflight

    problems = preflight.storage_flag_problems(args.storage)
    if args.num_samples is not None:  # the space's one cap on a search's size (tune.space.schema)
        too_many = too_many_trials(space.method, space.parameters, args.num_samples)
        if args.num_samples < 1 or too_many:
            problems.append(f"--num-samples: {too_many or f'{args.num_samples} is not allowed; it must be >= 1'}")
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
        from ..simulate.table import RecordedTable, TableError

        try:
            RecordedTable.load(args.simulate)
        except TableError as err:
            return [str(err)]
        return preflight.storage_problems(args.storage)
    problems += preflight.storage_problems(args.storage)
    if problems or not experiment:
        return problems
    return experiment_problems(space, args)


def experiment_problems(space: SearchSpace, args: argparse.Namespace) -> list[str]:
    """What the experiment already in the storage refuses (a new search of an existing name, a
    ``--resume`` of none or of another space, a damaged state) and the teacher check. Run while
    holding the name's lock (`tune.storage.lock`): another search cannot start it meanwhile."""
    from ..storage import preflight

    problems = []
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
            from ..storage.state_backup import resume_problems

            problems += resume_problems(join_uri(storage, name))
    if not problems and not args.resume:  # a teacher scoring 0 would fail every trial (checked at the start)
        from ..space.checks import teacher_problems

        problems += teacher_problems(space)
    return problems


@dataclass(frozen=True)
class Exit:
    """How the process ends: with ``status`` (the module docstring's exit status) and, ``at_once``,
    without the exit handlers (`os._exit`), which would wait on a storage that is gone."""

    status: int
    at_once: bool = False


def main(argv=None) -> int:
    """The search; returns its exit status (`run` says also how the process must end)."""
    return run(argv).status


def console(argv=None) -> None:
    """``python -m tune.search`` and the ``dpdmd-tune`` command: run the search, then end the
    process as its `Exit` says (measured: with S3 gone, the process printed its error, then sat in
    exit handlers for minutes)."""
    end = run(argv)
    if end.at_once:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(end.status)
    sys.exit(end.status)


def run(argv=None) -> Exit:
    """The search of ``argv`` (default: the process's arguments); ``python -m tune.search`` ends the
    process as the returned `Exit` says."""
    args = parse_args(argv)
    lock = None
    try:
        space = load_space(args.space)
        for warning in space.warnings():  # allowed, but likely not meant: said at every start and dry run
            print(f"warning: {args.space}: {warning}", file=sys.stderr)
        problems = check_command_line(space, args, experiment=False)
        if not problems and not (args.dry_run or args.simulate):
            from ..storage.lock import SearchInUse, acquire

            try:  # one search per name: held until this one ends (a crash releases it too)
                lock = acquire(storage_uri(args.storage), args.name or space.name, command=sys.argv)
            except SearchInUse as err:
                problems = [str(err)]
            else:
                problems = experiment_problems(space, args)
        if problems:
            raise SpaceError(args.space, problems)
    except SpaceError as err:
        if lock is not None:
            lock.release()
        print(f"error: {err}", file=sys.stderr)
        return Exit(2)
    if args.dry_run:
        print(describe_plan(space, args))
        return Exit(0)
    if args.simulate:
        from ..simulate.replay import simulate_command

        return Exit(simulate_command(space, args))
    end = Exit(1)  # an exception out of the search: the lock is let go all the same
    try:
        end = _search(space, args)
    finally:
        lock.release(remote=not end.at_once)  # a lost storage: its lease goes stale instead
    return end


def _search(space: SearchSpace, args: argparse.Namespace) -> Exit:
    from ..storage import preflight

    storage, name = storage_uri(args.storage), args.name or space.name
    if not args.resume:  # what identifies this search, checked by a later --resume
        preflight.write_space_record(join_uri(storage, name), preflight.space_identity(space.path, args.num_samples))
    try:
        searched = run_search(space, args)
    except SpaceError as err:  # refused once connected (the cluster's resources)
        print(f"error: {err}", file=sys.stderr)
        return Exit(2)
    except StorageLost as err:
        print(f"error: {err}", file=sys.stderr)
        return Exit(1, at_once=True)
    summary, at_once = searched.summary, searched.storage_lost
    if searched.interrupted:  # a partial search (the --resume command printed): 128 + the signal's number
        return Exit(searched.interrupted, at_once)
    failed = summary.get("failed_trials") or []
    if failed:
        print(f"\n{len(failed)} trial(s) failed (listed above and in summary.json): exit status 1", file=sys.stderr)
        return Exit(1, at_once)
    if summary.get("output_error"):  # the trials ran, but their outputs are not where they belong
        return Exit(1, at_once)
    return Exit(0, at_once)
