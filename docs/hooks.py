"""mkdocs hook: the recorded plots under ``bench/results/`` become files of the site.

They stay where the benchmarks write them (no copy under docs/); a page links them as
``../bench/results/NAME.png`` from a page one folder deep, and a missing one fails the strict build.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    for path in sorted((ROOT / "bench" / "results").rglob("*.png")):
        uri = path.relative_to(ROOT).as_posix()
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
