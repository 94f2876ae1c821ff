"""The layout document and the command-line help are checked against the code."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT / "docs" / "design" / "layout.md"


def layout_rows() -> dict[str, list[str]]:
    """docs/design/layout.md's "After" tree: {folder: [the modules and folders it names there]}."""
    text = LAYOUT.read_text()
    tree = text.split("## After", 1)[1].split("```", 2)[1]
    rows: dict[str, list[str]] = {}
    parents: list[str] = []
    for line in tree.splitlines():
        m = re.match(r"( *)([\w.-]+/?)\s", line + " ")
        if not m:
            continue
        depth, name = len(m.group(1)) // 2, m.group(2)
        parents = parents[:depth]
        folder = "".join(parents)
        if folder:
            rows.setdefault(folder, []).append(name)
        if name.endswith("/"):
            parents.append(name)
            rows.setdefault(folder + name, [])
    return rows


def test_every_file_in_the_layout_table_exists():
    rows = layout_rows()
    assert {"dpdmd/", "dpdmd/backbones/", "dpdmd/training/", "tune/", "tune/space/"} <= set(rows)
    named = 0
    for folder, names in rows.items():
        for name in names:
            assert (ROOT / folder / name).exists(), f"docs/design/layout.md names {folder}{name}, which does not exist"
            named += 1
    assert named > 40


def test_every_python_module_is_in_the_layout_table():
    rows = layout_rows()
    for package in ("dpdmd", "tune"):
        for path in sorted((ROOT / package).rglob("*.py")):
            folder = str(path.parent.relative_to(ROOT)) + "/"
            if path.name != "__init__.py":
                assert path.name in rows.get(folder, []), f"docs/design/layout.md misses {folder}{path.name}"


def test_every_train_flag_has_its_own_help():
    from dpdmd.cli.flags import add_config_flags

    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    helps = {a.option_strings[0]: a.help.rsplit(" (default:", 1)[0] for a in parser._actions if a.option_strings
             and a.option_strings[0] != "-h"}
    assert {"--beta1", "--beta2", "--weight-decay", "--anchor-k", "--eval-every"} <= set(helps)
    assert all(h.strip() for h in helps.values()), [f for f, h in helps.items() if not h.strip()]
    repeated = {h for h in helps.values() if list(helps.values()).count(h) > 1}
    assert not repeated, f"flags sharing one help text: {repeated}"


def test_train_help_shows_the_example_on_two_lines():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dpdmd.train", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    assert "--seed 0 \\\n" in out and "--seed 0         --iterations" not in out
