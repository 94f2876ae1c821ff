"""The README, the docs site, the layout document and the command-line help are checked against the code."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT / "docs" / "design" / "layout.md"

QUICKSTART = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
              "pip install -c requirements/lock.txt -e . && python -m tune.search --space search_spaces/quickstart.yaml")
TESTS = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
         "pip install -c requirements/lock.txt -e \".[test]\" && python -m pytest -q")


def load_generator():
    """docs/gen_reference.py as a module (docs/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_search_space_reference_is_generated_from_the_code():
    gen = load_generator()
    assert gen.PAGE.read_text() == gen.render(), "docs/reference/search-space.md is stale: run python docs/gen_reference.py"


def test_the_reference_generator_refuses_an_undocumented_field():
    from dpdmd.schema import Schema, knob

    gen = load_generator()

    class WandbSpec(Schema):  # a key added to the schema without a sentence
        enabled: bool = knob(True, doc="write the W&B summary run.")
        brand_new: int = 0

    with pytest.raises(LookupError, match="brand_new"):
        gen.schema_fields(WandbSpec, gen.DOCS)


def test_readme_gives_the_two_commands_exactly():
    text = (ROOT / "README.md").read_text()
    assert QUICKSTART in text and TESTS in text


def readme_tree() -> list[str]:
    """The paths of the README's folder tree (an indented ```text block under "## The folder tree")."""
    block = (ROOT / "README.md").read_text().split("## The folder tree", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    paths, parents = [], []
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        parents = parents[:depth] + [name]
        paths.append("".join(parents))
    return paths


def test_readme_tree_names_paths_that_exist():
    if not (ROOT / "tune" / "space").is_dir():
        pytest.skip("the README draws the folders of issue 21; this checkout has the flat layout")
    paths = readme_tree()
    assert len(paths) > 40
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"the README's folder tree names paths that do not exist: {missing}"


def test_readme_links_point_to_files_that_exist():
    text = (ROOT / "README.md").read_text()
    targets = {m.split("#")[0] for m in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in m and not m.startswith("#")}
    assert targets
    missing = sorted(t for t in targets if not (ROOT / t).exists())
    assert not missing, f"README links to files that do not exist: {missing}"


def test_every_page_in_the_docs_nav_exists():
    text = (ROOT / "mkdocs.yml").read_text()
    pages = re.findall(r"^\s*-\s+(?:[^:\n]+:\s+)?(\S+\.md)\s*$", text, flags=re.M)
    assert len(pages) > 20
    missing = [p for p in pages if not (ROOT / "docs" / p).exists()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"


def test_search_spaces_point_to_docs_pages_that_exist():
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        text = path.read_text()
        assert f"python -m tune.search --space search_spaces/{path.name}" in text.split("\nname:", 1)[0], path.name
        pages = re.findall(r"docs/[\w/.-]+\.md", text)
        assert pages, f"{path.name}: its comments should point to the docs pages that hold its numbers"
        missing = [p for p in pages if not (ROOT / p).exists()]
        assert not missing, f"{path.name} points to docs pages that do not exist: {missing}"


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
