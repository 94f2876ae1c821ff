"""How far the corruption checks' scores sit from the thresholds the tests assert, and how much
package versions and thread counts move them.

`tests/tune/test_objective.py` asserts, on both built-in backbones, that every corruption of the
teacher's samples (pixel noise, blur, a lost class) scores a lower J than the clean set, is
dominated by it, and, where the margin allows, has a quality_score below the fidelity floor (0.9).
This runs `bench/objective_check.py --json` under each given Python environment (its own packages)
and thread count, and prints, for every (backbone, set), the quality_score and J in each run, their
spread, and the margin of the worst run to the floor and to the clean set's J.

    python bench/objective_margins.py                                 # this env, 1 and 2 threads
    python bench/objective_margins.py --python .venv/bin/python /tmp/old/bin/python --threads 1 2

A claim is safe to assert when its margin is several times the spread (the test's docstring
names the margin it relies on); docs/results/objective-checks.md keeps the
measured table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR = 0.9  # objective.min_quality of the shipped spaces


def run(python: str, threads: int, seeds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.json"
        subprocess.run([python, str(ROOT / "bench" / "objective_check.py"), "--seeds", str(seeds),
                        "--threads", str(threads), "--json", str(out)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def margins(runs: list[dict]) -> list[dict]:
    """One row per (backbone, set): each run's quality_score, the spread, the worst margins."""
    rows = []
    first = runs[0]["scores"]
    for backbone, sets in first.items():
        for name in sets:
            if name.startswith("clean"):
                continue
            q = [r["scores"][backbone][name]["quality_score"] for r in runs]
            j = [r["scores"][backbone][name]["objective"] for r in runs]
            j_clean = [next(v for k, v in r["scores"][backbone].items() if k.startswith("clean"))["objective"]
                       for r in runs]
            rows.append({"backbone": backbone, "set": name, "quality_score": q, "spread": max(q) - min(q),
                         "floor margin": FLOOR - max(q),
                         "J margin": min(c - x for c, x in zip(j_clean, j)),
                         "dominated in every run": all(r["scores"][backbone][name]["dominated by clean"]
                                                       for r in runs)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", nargs="+", default=[sys.executable], help="interpreters of the environments")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args(argv)
    runs = []
    for python in args.python:
        for threads in args.threads:
            result = run(python, threads, args.seeds)
            runs.append(result)
            versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
            print(f"run {len(runs)}: {threads} thread(s); {versions}", flush=True)
    print("\n| backbone | set | quality_score per run | spread | floor 0.9 - worst | J(clean) - J, worst | dominated |")
    print("|---|---|---|---|---|---|---|")
    for row in margins(runs):
        qs = " / ".join(f"{q:.4f}" for q in row["quality_score"])
        print(f"| {row['backbone']} | {row['set']} | {qs} | {row['spread']:.4f} | {row['floor margin']:+.4f} | "
              f"{row['J margin']:+.4f} | {'yes' if row['dominated in every run'] else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
