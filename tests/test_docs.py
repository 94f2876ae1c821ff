"""The README and the command-line help are checked against the code."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_rows() -> dict[str, list[str]]:
    """README's Layout table: {folder: [the backticked names in its row]}."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        m = re.match(r"\| `([^`]+/)` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = re.findall(r"`([^`]+)`", m.group(2))
    return rows


def test_every_file_in_the_layout_table_exists():
    rows = layout_rows()
    assert {"dpdmd/", "dpdmd/backbones/", "tune/", "bench/", "search_spaces/"} <= set(rows)
    named = 0
    for folder, names in rows.items():
        for name in names:
            if re.fullmatch(r"[\w./-]+\.(py|yaml)|[\w-]+/", name) and not name.startswith(("tests/", "shared/")):
                assert (ROOT / folder / name).exists(), f"README layout names {folder}{name}, which does not exist"
                named += 1
    assert named > 40


def test_every_python_module_is_in_the_layout_table():
    rows = layout_rows()
    for folder in ("dpdmd/", "dpdmd/backbones/", "dpdmd/metrics/", "tune/"):
        missing = [p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py" and p.name not in rows[folder]]
        assert not missing, f"README layout misses {folder}: {missing}"


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
