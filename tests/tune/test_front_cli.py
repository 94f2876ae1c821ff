"""python -m tune.front: the fronts and recommendations redrawn from a search's files, in place or
into --out, under another floor or weight; --compare lines two searches up."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.tune.test_kept import FLOOR, MIN_UPDATES, two_backbones
from tune.cli.front import main
from tune.outputs.front import backbone_fronts, front_summary, pareto_rows
from tune.outputs.kept import kept_reports

DIGITS = {"evaluator": "digits", "quality_metric": "auto", "fingerprint": "f00d"}


def write_search(folder, *, name="s", floor=FLOOR, wall=100.0):
    """A search's folder as the driver leaves it: kept.parquet, pareto.parquet, summary.json."""
    kept = kept_reports(two_backbones(), min_quality=floor, min_student_updates=MIN_UPDATES)
    fronts = backbone_fronts(kept)
    summary = {"space": name, "trials": len(kept), "min_quality": floor, "diversity_weight": 0.5,
               "compute": {"student_updates": 240, "wall_seconds": wall, "teacher_calls_spent": 12},
               **front_summary(kept, fronts, evaluation={"digits-flow": DIGITS, "digits-eps": DIGITS})}
    folder.mkdir(parents=True)
    kept.to_parquet(folder / "kept.parquet", index=False)
    pareto_rows(fronts).to_parquet(folder / "pareto.parquet", index=False)
    (folder / "summary.json").write_text(json.dumps(summary, default=str))
    return summary


def fronts_of(folder) -> dict[str, list[str]]:
    return {b: [r["trial_id"] for r in rows] for b, rows in json.loads((folder / "summary.json").read_text())["fronts"].items()}


def test_in_place_it_redraws_what_the_search_wrote(tmp_path, capsys):
    run = tmp_path / "runs" / "s"
    before = write_search(run)
    assert main([str(run)]) == 0
    out = capsys.readouterr().out
    assert f"export it: python -m tune.export {run} --recommended --out DIR" in out
    assert "replacing the search's" in out and "K=10 λ=0.05" in out
    after = json.loads((run / "summary.json").read_text())
    assert after["fronts"] == json.loads(json.dumps(before["fronts"], default=str))
    assert after["recommended"]["digits-flow"]["trial_id"] == "a" and after["recomputed"]["min_quality"] == FLOOR
    assert (run / "pareto.png").stat().st_size > 10_000
    assert set(pd.read_parquet(run / "pareto.parquet")["backbone"]) == {"digits-flow", "digits-eps"}


def test_another_floor_and_weight_into_out_leave_the_search_alone(tmp_path, capsys):
    run, out = tmp_path / "s", tmp_path / "strict"
    write_search(run)
    original = (run / "summary.json").read_text()
    assert main([str(run), "--min-quality", "1.0", "--diversity-weight", "0.1", "--out", str(out)]) == 0
    assert (run / "summary.json").read_text() == original
    assert fronts_of(out) == {"digits-eps": ["e"], "digits-flow": ["dmd", "b"]}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["min_quality"] == 1.0 and summary["diversity_weight"] == 0.1
    # J = 0.1 D + 0.9 min(Q, 1): b 0.97 beats dmd 0.93
    assert summary["recommended"]["digits-flow"]["trial_id"] == "b"
    assert summary["recommended"]["digits-flow"]["objective"] == pytest.approx(0.97)
    assert summary["below_floor"] == 3  # a, c and f: still kept students, now under the floor
    assert "the search's own files" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out / "kept.parquet"), pd.read_parquet(run / "kept.parquet"))
    # tune.export reads the copy: its choice of the recommended students works from DIR
    from tune.cli.export import choose, parse_args

    records = choose(str(out), summary, parse_args([str(out), "--recommended", "--out", str(tmp_path / "x")]))
    assert {r["trial_id"] for r in records} == {"b", "e"}


def test_one_backbone_and_the_refusals(tmp_path, capsys):
    run = tmp_path / "s"
    write_search(run)
    assert main([str(run), "--backbone", "digits-eps"]) == 2
    assert "add --out DIR" in capsys.readouterr().err
    assert main([str(run), "--backbone", "sd35m", "--out", str(tmp_path / "o")]) == 2
    assert "no trial of 'sd35m'; its backbones: digits-eps, digits-flow" in capsys.readouterr().err
    assert main([str(run), "--backbone", "digits-eps", "--out", str(tmp_path / "eps")]) == 0
    assert fronts_of(tmp_path / "eps") == {"digits-eps": ["e", "f"]}
    assert main([str(run), "--min-quality", "5", "--out", str(tmp_path / "o")]) == 2
    assert "[0, 2]" in capsys.readouterr().err
    (run / "kept.parquet").unlink()
    assert main([str(run)]) == 2
    assert "written before kept.parquet existed" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 2
    with pytest.raises(SystemExit):
        main([])  # neither RUN_DIR nor --compare


def test_compare_lines_two_searches_up(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    first = write_search(a, name="loose")
    second = write_search(b, name="strict", floor=1.0, wall=50.0)
    assert main(["--compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert text.startswith("# loose vs strict") and "![fronts](compare.png)" in text
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    assert "loose" in printed and "strict" in printed
    from tune.outputs.compare import compare_table

    table = compare_table(["loose", "strict"], [first, second]).set_index(["backbone", "search"])
    assert table.loc[("digits-flow", "loose"), "hypervolume"] == pytest.approx(first["hypervolume"]["digits-flow"])
    assert table.loc[("digits-flow", "strict"), "front"] == len(second["fronts"]["digits-flow"])
    assert table.loc[("digits-eps", "strict"), "wall_seconds"] == 50.0
    assert table.loc[("digits-flow", "loose"), "recommended"] == "K=10 λ=0.05"
    assert table["same_evaluator"].all()
