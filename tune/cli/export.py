"""Export the students a search found, as their backbone's users load them, with a model card.

    python -m tune.export runs/quickstart --recommended --out exports/quickstart
    python -m tune.export runs/anchor --trial 1e3f553f --out exports/k20
    python -m tune.export s3://bucket/runs/anchor --front --backbone sd35m --out exports/anchor-front

RUN_DIR is a search's folder (STORAGE/NAME: a directory or a URI), holding the ``summary.json``,
``kept.parquet`` and trial folders the search wrote. ``--recommended``: the recommended student
of each backbone (one backbone: DIR is its folder; several: DIR/BACKBONE/); ``--trial ID``: that
trial's kept student; ``--front``: every student on the fronts, each in DIR/BACKBONE-TRIAL/ with an
index ``DIR/front.md``. Each exported folder holds the student (`dpdmd.student`: SD3 / SD3.5 a
``transformer/`` folder or a LoRA adapter, SDXL a ``unet/`` folder or adapter, with the
``scheduler/`` that samples it; the digits backbones their diffusers network), its manifest
``dpdmd_student.json`` (with the report's scores), the sample grids of the report and of the
teacher, and ``README.md``, the model card with a snippet that samples it.

Exit status: 0 exported; 1 a copy failed (named); 2 refused before anything was written (no such
search, trial or backbone; DIR not empty without --overwrite).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from dpdmd.student import MANIFEST, STUDENT_DIR

from ..outputs.model_card import model_card
from ..storage.uri import filesystem, join_uri

KEPT = "kept.parquet"  # one row per trial: the report whose student the search keeps
SAMPLES = {"student_latest.png": "samples.png", "teacher.png": "teacher.png"}


class ExportError(ValueError):
    """Refused before anything is written."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tune.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the search's folder: STORAGE/NAME (a directory or a URI)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--recommended", action="store_true", help="the recommended student of each backbone")
    which.add_argument("--trial", metavar="ID", help="this trial's kept student")
    which.add_argument("--front", action="store_true", help="every student on the fronts")
    parser.add_argument("--backbone", help="only this backbone's (a search over several)")
    parser.add_argument("--out", required=True, type=Path, help="where the exported folder(s) go")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    parser.add_argument("--prompt", help="the prompt of the model card's snippet (default: the first evaluation prompt)")
    return parser.parse_args(argv)


# --- reading a search's outputs (a folder or a URI) -----------------------------------------------
def read_json(uri: str) -> dict:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def read_kept(run: str) -> pd.DataFrame:
    fs, path = filesystem(join_uri(run, KEPT))
    with fs.open_input_file(path) as f:
        return pd.read_parquet(f)


def choose(run: str, summary: dict, args: argparse.Namespace) -> list[dict]:
    """The records (trial, backbone, checkpoint, scores) of the students to export."""
    fronts: dict = summary.get("fronts") or {}
    backbones = list(fronts) if args.backbone is None else [args.backbone]
    if args.backbone is not None and args.backbone not in fronts:
        raise ExportError(f"--backbone: the search has no front for {args.backbone!r}; its backbones: "
                          f"{', '.join(fronts) or 'none'}")
    if args.trial is not None:
        kept = read_kept(run)
        rows = kept[kept["trial_id"].astype(str) == args.trial]
        if rows.empty:
            raise ExportError(f"--trial: no trial {args.trial!r} in {join_uri(run, KEPT)}; its trials: "
                              f"{', '.join(kept['trial_id'].astype(str))}")
        records = rows.to_dict("records")
    elif args.recommended:
        records = [summary["recommended"][b] for b in backbones if (summary.get("recommended") or {}).get(b)]
    else:
        records = [r for b in backbones for r in fronts.get(b, [])]
    missing = [str(r.get("trial_id")) for r in records if not isinstance(r.get("checkpoint"), str)]
    if not records:
        raise ExportError(f"{join_uri(run, 'summary.json')}: no student to export (an empty front: no trial "
                          "passed the fidelity floor; see `python -m tune.front` to redraw it with another floor)")
    if missing:
        raise ExportError(f"trials {', '.join(missing)} kept no student checkpoint (they never passed the fidelity "
                          "floor after objective.min_student_updates)")
    return records


def destinations(records: list[dict], out: Path, args: argparse.Namespace) -> list[Path]:
    if args.front:
        return [out / f"{r['backbone']}-{r['trial_id']}" for r in records]
    if len(records) == 1:
        return [out]
    return [out / str(r["backbone"]) for r in records]


def export_one(record: dict, target: Path, *, run: str, summary: dict, prompt: str | None, on_front: bool,
               recommended: bool) -> Path:
    """Copy the kept checkpoint's student (and its sample grids) to ``target`` and write its card."""
    import pyarrow.fs as pafs

    checkpoint = record["checkpoint"]
    fs, root = filesystem(checkpoint)
    target.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(f"{root}/{STUDENT_DIR}", str(target.resolve()), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())
    for name, as_name in SAMPLES.items():
        if fs.get_file_info(f"{root}/{name}").type == pafs.FileType.File:
            pafs.copy_files(f"{root}/{name}", str((target / as_name).resolve()), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())
    manifest = json.loads((target / MANIFEST).read_text())
    backbone = manifest["backbone"]
    teacher = (summary.get("teacher") or {}).get(backbone)
    eval_prompts = manifest["config"].get("eval", {}).get("prompts") or []
    origin = {"search": summary.get("space"), "run": run, "trial": record.get("trial_id"),
              "student updates at this report": record.get("student_updates"),
              "training iteration (Ray)": record.get("training_iteration"),
              "trained for (student updates)": record.get("last_student_updates"),
              "on the front": "yes" if on_front else "no",
              "recommended for this backbone": "yes" if recommended else "no",
              "checkpoint": checkpoint, "exported": datetime.date.today().isoformat(),
              "command": "python -m tune.export " + " ".join(sys.argv[1:]) if sys.argv[1:] else None}
    card = model_card(manifest, origin=origin, teacher=teacher,
                      prompt=prompt or (eval_prompts[0] if eval_prompts else _default_prompt(backbone)),
                      has_samples=(target / "samples.png").exists())
    (target / "README.md").write_text(card)
    return target


def _default_prompt(backbone: str) -> str:
    return "seven" if backbone.startswith("digits") else "a photo of a dog"


def front_index(exported: list[tuple[dict, Path]], out: Path) -> Path:
    lines = ["# The exported fronts", "", "| backbone | trial | K | lambda_div | diversity_score | quality_score | J | folder |",
             "|---|---|---|---|---|---|---|---|"]
    for record, folder in exported:
        lines.append(f"| {record.get('backbone')} | {record.get('trial_id')} | {record.get('anchor_k')} | "
                     f"{record.get('lambda_div')} | {record.get('diversity_score', float('nan')):.4g} | "
                     f"{record.get('quality_score', float('nan')):.4g} | {record.get('objective', float('nan')):.4g} | "
                     f"[{folder.name}]({folder.name}/README.md) |")
    path = out / "front.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_export(args: argparse.Namespace) -> list[Path]:
    run = args.run
    try:
        summary = read_json(join_uri(run, "summary.json"))
    except (OSError, ValueError) as err:
        raise ExportError(f"{join_uri(run, 'summary.json')} cannot be read ({err}); give a search's folder, "
                          "STORAGE/NAME, as `python -m tune.search` printed it") from None
    records = choose(run, summary, args)
    targets = destinations(records, args.out, args)
    busy = [t for t in targets if t.exists() and any(t.iterdir())]
    if busy and not args.overwrite:
        raise ExportError(f"--out: {busy[0]} is not empty; choose another --out or pass --overwrite")
    for target in busy:
        shutil.rmtree(target)
    on_front = {(b, str(r["trial_id"])) for b, rows in (summary.get("fronts") or {}).items() for r in rows}
    recommended = {(b, str(r["trial_id"])) for b, r in (summary.get("recommended") or {}).items() if r}
    done = []
    for record, target in zip(records, targets):
        key = (record.get("backbone"), str(record.get("trial_id")))
        done.append(export_one(record, target, run=run, summary=summary, prompt=args.prompt,
                               on_front=key in on_front, recommended=key in recommended))
    if args.front:
        front_index(list(zip(records, done)), args.out)
    return done


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        done = run_export(args)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: the export could not be copied or written: {err}", file=sys.stderr)
        return 1
    for folder in done:
        print(f"exported {folder}  (model card: {folder / 'README.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
