"""Redraw a search's fronts and recommendations from its files, without running anything again.

    python -m tune.front runs/quickstart                                # recompute in place
    python -m tune.front runs/quickstart --min-quality 0.8 --out runs/quickstart-floor08
    python -m tune.front runs/anchor --diversity-weight 0.7 --backbone sd35m --out /tmp/anchor-w07
    python -m tune.front --compare runs/anchor runs/anchor-moasha --out /tmp/anchor-vs-moasha

RUN_DIR is a search's folder (STORAGE/NAME, a directory or a URI) holding the ``summary.json``
and ``kept.parquet`` the search wrote. The students a search keeps are fixed when it runs: each
trial keeps the report that was its best by the space's J and fidelity floor, and nothing else
(a trial that never passed the floor keeps none). So the fronts drawn here are over those kept
students: ``--min-quality`` moves the floor among them, ``--diversity-weight`` recomputes their J
(and so the recommendation); neither can bring back a report of a trial that the search did not keep.

Writes ``pareto.parquet``, ``pareto.png`` and ``summary.json`` (its ``fronts``, ``recommended``,
``hypervolume``, ``raw_comparison``, ``min_quality``, ``diversity_weight`` and ``recomputed``,
which says how) **into RUN_DIR, replacing the search's**, or, with ``--out DIR``, into DIR with a
copy of ``kept.parquet`` (so ``python -m tune.export DIR`` exports from it), leaving the search's
files as they are. ``--backbone B`` keeps only B's front (with ``--out`` only). ``--compare RUN_A
RUN_B`` writes ``compare.png`` and ``compare.md`` (per backbone: both fronts, hypervolumes, the
recommended students, the compute spent) into ``--out`` (default ``./compare-A-vs-B``).

Exit status: 0 written; 1 a file could not be written; 2 refused (no such search, a run written
before kept.parquet existed, an unknown backbone, --backbone in place).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

from ..outputs.front import backbone_fronts, front_summary, pareto_rows, rescored
from ..storage.uri import filesystem, join_uri, write_atomic

KEPT, SUMMARY, PARETO, PLOT = "kept.parquet", "summary.json", "pareto.parquet", "pareto.png"


class FrontError(ValueError):
    """Refused before anything is written."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tune.front", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="the search's folder: STORAGE/NAME (a directory or a URI)")
    parser.add_argument("--min-quality", type=float, metavar="Q", help="another fidelity floor (a fraction of the teacher's quality)")
    parser.add_argument("--diversity-weight", type=float, metavar="W", help="another weight w of J = w D + (1 - w) min(Q, 1)")
    parser.add_argument("--backbone", metavar="B", help="only this backbone's front (with --out)")
    parser.add_argument("--out", metavar="DIR", help="write here instead of replacing RUN_DIR's files")
    parser.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="line two searches up instead")
    args = parser.parse_args(argv)
    if (args.run is None) == (args.compare is None):
        parser.error("give either RUN_DIR or --compare RUN_A RUN_B")
    return args


# --- a run's files, in a folder or at a URI (`tune.storage.uri`) --------------------------------
def _join(base: str, name: str) -> str:
    return join_uri(base, name)


def _fs(uri: str):
    return filesystem(uri if "://" in uri else str(Path(uri).expanduser()))


def read_run(run: str) -> tuple[dict, pd.DataFrame]:
    """``summary.json`` and ``kept.parquet`` of the search at ``run`` (FrontError saying what is missing)."""
    try:
        fs, path = _fs(_join(run, SUMMARY))
        with fs.open_input_stream(path) as f:
            summary = json.loads(f.read())
    except (OSError, ValueError) as err:
        raise FrontError(f"{_join(run, SUMMARY)} cannot be read ({err}); give a search's folder, STORAGE/NAME, as "
                         "`python -m tune.search` printed it") from None
    try:
        fs, path = _fs(_join(run, KEPT))
        with fs.open_input_file(path) as f:
            kept = pd.read_parquet(f)
    except (OSError, ValueError):
        raise FrontError(f"{_join(run, KEPT)} cannot be read: this search was written before kept.parquet existed "
                         "(or is not a search's folder); its fronts cannot be recomputed here") from None
    return summary, kept


def _write(target: str, name: str, data: bytes) -> None:
    """``target/name`` written whole or not at all (a local file is renamed into place)."""
    fs, path = _fs(_join(target, name))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    write_atomic(fs, path, data)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


# --- recomputing ---------------------------------------------------------------------------------
def recompute(summary: dict, kept: pd.DataFrame, *, min_quality: float | None = None,
              diversity_weight: float | None = None, backbone: str | None = None) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """``(summary, kept, pareto)`` judged again: ``kept`` `rescored` (and only ``backbone``'s rows
    when given), its fronts, and ``summary`` with the per-backbone part (`front_summary`), the
    floor, the weight and ``recomputed`` replaced."""
    backbones = sorted(kept["backbone"].astype(str).unique()) if "backbone" in kept else []
    if backbone is not None:
        if backbone not in backbones:
            raise FrontError(f"--backbone: the search has no trial of {backbone!r}; its backbones: {', '.join(backbones) or 'none'}")
        kept = kept[kept["backbone"].astype(str) == backbone].reset_index(drop=True)
    floor = summary.get("min_quality") if min_quality is None else min_quality
    weight = summary.get("diversity_weight") if diversity_weight is None else diversity_weight
    try:
        judged = rescored(kept, min_quality=floor, diversity_weight=diversity_weight)
    except ValueError as err:
        raise FrontError(f"--min-quality / --diversity-weight: {err}") from None
    fronts = backbone_fronts(judged)
    out = {k: v for k, v in summary.items() if k != "front"}
    out.update(front_summary(judged, fronts, evaluation=summary.get("evaluation")))
    out.update(min_quality=floor, diversity_weight=weight, trials=int(len(judged)),
               below_floor=int(judged["below_floor"].sum()) if "below_floor" in judged else 0)
    out["recomputed"] = {"by": "python -m tune.front", "date": datetime.date.today().isoformat(),
                         "min_quality": floor, "diversity_weight": weight, "backbone": backbone,
                         "note": "over the students the search kept (one per trial, chosen by the space's J and floor)"}
    return out, judged, pareto_rows(fronts)


def write_front(target: str, summary: dict, kept: pd.DataFrame, pareto: pd.DataFrame, *,
                copy_kept: pd.DataFrame | None) -> list[str]:
    """Write the recomputed files into ``target`` (a folder or a URI); returns their names."""
    from ..outputs.front_figure import pareto_figure

    _write(target, PARETO, _parquet_bytes(pareto))
    with tempfile.TemporaryDirectory() as tmp:
        png = pareto_figure(kept, summary, Path(tmp) / PLOT)
        _write(target, PLOT, png.read_bytes())
    _write(target, SUMMARY, json.dumps(summary, indent=1, default=str).encode())
    written = [PARETO, PLOT, SUMMARY]
    if copy_kept is not None:
        _write(target, KEPT, _parquet_bytes(copy_kept))
        written.append(KEPT)
    return written


def front_report(summary: dict, run: str) -> str:
    """The fronts and recommended students as text, with the export command."""
    from ..outputs.labels import config_label

    lines = []
    for backbone, records in (summary.get("fronts") or {}).items():
        lines.append(f"\n{backbone}: front of {len(records)} (diversity_score, quality_score; teacher = (1, 1), "
                     f"quality_score >= {summary.get('min_quality')}), hypervolume "
                     f"{(summary.get('hypervolume') or {}).get(backbone, 0.0):.4g}")
        for r in records:
            lines.append(f"  {config_label(r):24s} {r['trial_id']:>12}  updates {r.get('student_updates')}  "
                         f"D {r['diversity_score']:.3f}  Q {r['quality_score']:.3f}  J {r['objective']:.3f}")
        pick = (summary.get("recommended") or {}).get(backbone)
        lines.append(f"  recommended: {config_label(pick)} (trial {pick['trial_id']}, J {pick['objective']:.3f})"
                     if pick else "  recommended: none (an empty front)")
    lines.append(f"\nexport it: python -m tune.export {run} --recommended --out DIR")
    return "\n".join(lines)


def _markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table, floats to 4 significant digits."""
    def cell(v):
        return "" if v is None or (isinstance(v, float) and v != v) else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)])


def compare(runs: list[str], out: str | None) -> str:
    from ..outputs.compare import compare_figure, compare_table

    summaries = [read_run(run)[0] for run in runs]
    names = [str(s.get("space") or Path(r).name) for s, r in zip(summaries, runs)]
    if names[0] == names[1]:
        names = [f"{n} ({Path(r.rstrip('/')).name or r})" for n, r in zip(names, runs)]
    target = out or f"compare-{Path(runs[0].rstrip('/')).name}-vs-{Path(runs[1].rstrip('/')).name}"
    table = compare_table(names, summaries)
    with tempfile.TemporaryDirectory() as tmp:
        png = compare_figure(names, summaries, Path(tmp) / "compare.png")
        _write(target, "compare.png", png.read_bytes())
    text = (f"# {names[0]} vs {names[1]}\n\nOne front per backbone (teacher-normalised; hypervolume above (0, 0)); "
            "compute: what each whole search spent. `same_evaluator` False: the two searches' teacher-normalised units "
            "differ for that backbone.\n\n" + _markdown(table) + "\n\n![fronts](compare.png)\n")
    _write(target, "compare.md", text.encode())
    return f"{table.to_string(index=False, float_format=lambda v: f'{v:.4g}')}\n\nwritten: {_join(target, 'compare.md')}, {_join(target, 'compare.png')}"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.compare:
            print(compare(list(args.compare), args.out))
            return 0
        if args.backbone is not None and args.out is None:
            raise FrontError("--backbone would drop the other backbones' fronts from the search's own files: "
                             "add --out DIR")
        summary, kept = read_run(args.run)
        new, judged, pareto = recompute(summary, kept, min_quality=args.min_quality,
                                        diversity_weight=args.diversity_weight, backbone=args.backbone)
        target = args.out or args.run
        names = write_front(target, new, judged, pareto, copy_kept=None if args.out is None else
                            (kept if args.backbone is None else kept[kept["backbone"].astype(str) == args.backbone]))
    except FrontError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: the outputs could not be written: {err}", file=sys.stderr)
        return 1
    print(front_report(new, target))
    where = "replacing the search's" if args.out is None else f"the search's own files in {args.run} unchanged"
    print(f"written into {target}: {', '.join(names)} ({where})")
    return 0
