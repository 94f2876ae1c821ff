"""``python -m dpdmd.evaluate --protocol NAME PATH [PATH ...]``: the final protocol over students.

    python -m dpdmd.evaluate --protocol reference exports/sd35m-best --device cuda
    python -m dpdmd.evaluate --protocol reference ~/ray_results/my-search      # every student on its fronts
    python -m dpdmd.evaluate --protocol reference runs/k10 --check             # paths only, nothing loads

A PATH is a saved student (an exported folder, a search's kept checkpoint, a ``dpdmd.train
--out`` directory), or a search's folder whose ``summary.json`` lists ``fronts: {backbone:
[{trial_id, checkpoint, ...}, ...]}``: every student on every front. Students are grouped by
backbone, and each group's teacher (the first student's ``teacher_sample``) gets its own row; the
teacher is loaded once for all its chunks and freed before the students sample.
Every model path of the protocol and every student path is checked before any model loads and
before any image is generated. Writes ``<out>/<protocol>.parquet`` and ``.md`` and logs the table
to W&B (offline without an API key; ``--no-wandb`` skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..config import ConfigError
from ..evaluation.final_protocol import (load_protocol, log_to_wandb, make_protocol_evaluator, protocol_problems,
                                        read_prompts, run_protocol, write_table)


def resolve_students(paths: list[Path]) -> list[tuple[str, Path, str | None]]:
    """``(name, student path, backbone or None)`` for each PATH: itself (its backbone is read when
    it loads), or every checkpoint on a search's fronts (the front's backbone)."""
    out = []
    for path in paths:
        summary = path / "summary.json"
        if path.is_dir() and summary.is_file():
            try:
                fronts = json.loads(summary.read_text()).get("fronts")
            except ValueError as err:
                raise ConfigError([f"{summary}: not JSON ({err})"]) from None
            if not isinstance(fronts, dict) or not fronts:
                raise ConfigError([f"{summary} has no 'fronts' ({{backbone: [{{trial_id, checkpoint}}, ...]}}); "
                                   "give a student folder, or a search folder written by a search that records its fronts"])
            problems = []
            for backbone, front in fronts.items():
                for entry in front:
                    name, checkpoint = f"{backbone}/{entry.get('trial_id')}", entry.get("checkpoint")
                    if not isinstance(checkpoint, str):
                        problems.append(f"{summary}: {name} kept no student checkpoint")
                    elif "://" in checkpoint and not checkpoint.startswith("file://"):
                        problems.append(f"{summary}: {name}'s checkpoint {checkpoint} is on remote storage; export the "
                                        f"fronts first (python -m tune.export {path} --front --out DIR) and evaluate DIR/*")
                    else:
                        local = Path(checkpoint.removeprefix("file://"))
                        out.append((name, local if local.is_absolute() else path / local, backbone))
            if problems:
                raise ConfigError(problems)
        else:
            out.append((path.name or str(path), path, None))
    return out


def _student_loader() -> Callable:
    try:
        from ..student import load_student
    except ImportError as err:
        raise ConfigError([f"loading students needs dpdmd.student (load_student), which this checkout lacks ({err})"]) from None
    return load_student


def main(argv: list[str] | None = None, *, load_student: Callable | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpdmd.evaluate --protocol", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", required=True, help="a name of eval_protocols/ (reference) or a YAML file")
    parser.add_argument("paths", nargs="+", type=Path, metavar="STUDENT_OR_RUN")
    parser.add_argument("--out", type=Path, help="where the tables go (default: the first PATH)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", help="the teacher's diffusers folder on this machine (load_student's weights)")
    parser.add_argument("--prompts-file", help="override the protocol's prompts file")
    parser.add_argument("--seeds-per-prompt", type=int, help="override the protocol's seeds per prompt")
    parser.add_argument("--check", action="store_true", help="check every path and exit; nothing loads")
    parser.add_argument("--wandb-project", default="dpdmd-eval")
    parser.add_argument("--wandb-run", help="a W&B run id whose summary to update (default: a new run)")
    parser.add_argument("--no-wandb", action="store_true")
    args = parser.parse_args(argv)

    try:
        protocol = load_protocol(args.protocol)
        overrides = {k: v for k, v in (("prompts_file", args.prompts_file),
                                       ("seeds_per_prompt", args.seeds_per_prompt)) if v is not None}
        protocol = replace(protocol, **overrides)
        students = resolve_students(args.paths)
        problems = protocol_problems(protocol)
        problems += [f"{name}: {path} does not exist" for name, path, _ in students if not path.exists()]
        if problems:
            raise ConfigError(problems)
        if args.check:
            print(f"protocol {protocol.name}: every path is in place ({len(students)} students)")
            return 0
        load = load_student or _student_loader()
        evaluator = make_protocol_evaluator(protocol, device=args.device)  # every model, before any image
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    loaded = {}

    def student(path):
        if path not in loaded:
            loaded.clear()  # one student held at a time
            loaded[path] = load(path, device=args.device, **({"weights": args.weights} if args.weights else {}))
        return loaded[path]

    groups, owners = {}, {}
    for name, path, group in students:  # the teacher of each backbone: the first student's
        groups[name] = group or student(path).config.backbone
        if groups[name] not in owners:
            owners[groups[name]] = student(path)

    def free_teachers(keep: str | None = None) -> None:  # a Student keeps its teacher between chunks:
        for group, owner in owners.items():               # one teacher held at a time, none for the students
            if group != keep and hasattr(owner, "drop_teacher"):
                owner.drop_teacher()

    def teacher(group: str) -> Callable:
        def sample(prompts, seeds):
            free_teachers(keep=group)
            return owners[group].teacher_sample(prompts, seeds)
        return sample

    def student_generators():
        free_teachers()  # every teacher's row is done
        for name, path, _ in students:
            yield name, groups[name], lambda p, n, path=path: student(path).sample(p, n)

    if protocol.prompts_file is not None:
        prompts = read_prompts(protocol.prompts_file)
    else:  # the project's own evaluation prompts of the first student's run
        from ..data.prompts import eval_prompts

        first = student(students[0][1])
        prompts = eval_prompts(first.config, first.backbone)
    table = run_protocol(protocol, prompts=prompts, teachers={group: teacher(group) for group in owners},
                         evaluator=evaluator, students=student_generators())
    out = args.out or (args.paths[0] if args.paths[0].is_dir() else args.paths[0].parent)
    parquet, md = write_table(table, out, name=f"protocol-{protocol.name}")
    if not args.no_wandb:
        log_to_wandb(table, project=args.wandb_project, name=protocol.name, directory=out, run_id=args.wandb_run,
                     config={"protocol": protocol.to_dict(), "students": [str(p) for _, p, _ in students]})
    print(md.read_text())
    print(f"wrote {parquet} and {md}")
    return 0
