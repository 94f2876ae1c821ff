"""The quickstart search with and without the shared teacher-anchor cache.

    python bench/cache.py                       # search_spaces/quickstart.yaml, FIFO, W&B off

Both searches run the same trials to the end (FIFO instead of ASHA, so early stopping cannot make
them differ) and print the teacher evaluations spent on anchors and the wall time, as ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", type=Path, default=Path("search_spaces/quickstart.yaml"))
    parser.add_argument("--keep", type=Path, help="keep the two experiments under this directory")
    args = parser.parse_args()
    space = yaml.safe_load(args.space.read_text())
    space["scheduler"] = {"type": "fifo"}
    space["wandb"] = {"enabled": False}
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-cache-"))
    root.mkdir(parents=True, exist_ok=True)
    path = root / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    rows = {}
    for label, extra in (("with cache", []), ("without cache", ["--no-cache"])):
        name = label.replace(" ", "-")
        start = time.time()
        subprocess.run([sys.executable, "-m", "tune.search", "--space", str(path), "--name", name,
                        "--storage", str(root / name), *extra], check=True)
        summary = json.loads((root / name / name / "summary.json").read_text())
        rows[label] = {"wall": time.time() - start, "spent": summary["compute"]["teacher_calls_spent"],
                       "updates": summary["compute"]["student_updates"]}
    w, wo = rows["with cache"], rows["without cache"]
    print(f"\n{'':15s} {'teacher evals':>14s} {'student updates':>16s} {'wall s':>8s}")
    for label, r in rows.items():
        print(f"{label:15s} {r['spent']:14d} {r['updates']:16d} {r['wall']:8.1f}")
    print(f"ratios (with / without): teacher evaluations {w['spent'] / wo['spent']:.3f}, "
          f"wall time {w['wall'] / wo['wall']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
