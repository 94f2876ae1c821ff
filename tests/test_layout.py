"""The packages' layout: no import cycle, no oversized module, dpdmd never imports tune.

The import graph is read from the source (``ast``), not by importing anything: every ``import``
and ``from ... import`` statement of a module counts, at module level or inside a function, since
a function-level import is still a dependency, only a later one. An edge goes to the module
imported (``from .a import b`` -> ``a``; -> ``a.b`` where ``b`` is a submodule; also
``importlib.import_module("a.b")`` with the name written out) and to the
subpackages above it whose ``__init__`` the import may run first (``tune.space.trials`` ->
``tune.space``), which is how a cycle through a package's re-exports shows.

Run as a script to print the measures of a checkout (docs/design/layout.md's before/after table)::

    python tests/test_layout.py [ROOT]
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dpdmd", "tune")
MAX_LINES = 400
# Modules allowed over MAX_LINES, each with the reason (none today).
LONG_MODULES: dict[str, str] = {}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the packages: dotted name -> file."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(root: Path = ROOT, *, unresolved: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """The import graph inside the packages: module -> the modules it imports (any level).
    ``unresolved`` (if given) collects, per module, what it imports from the packages that does not
    exist (a module or package left behind by a move)."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and _imported_by_name(node):  # importlib.import_module("a.b")
                node = ast.Import(names=[ast.alias(name=node.args[0].value)])
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    # `import a.b.c` imports a.b.c (the longest known prefix)
                    for end in range(len(parts), 0, -1):
                        if ".".join(parts[:end]) in known:
                            targets.add(".".join(parts[:end]))
                            break
                    if parts[0] in PACKAGES and alias.name not in known and unresolved is not None:
                        unresolved.setdefault(name, set()).add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] in PACKAGES and base not in known and unresolved is not None:
                    unresolved.setdefault(name, set()).add(base)
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        targets.add(f"{base}.{alias.name}")
                    elif base in known:
                        targets.add(base)
        # importing a.b.c runs a/b/__init__.py first if nothing imported it yet: an edge to each
        # package above the target, except the top-level ones (their __init__ re-exports the
        # public API and runs first anyway) and the importer's own (being imported already)
        own = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}
        for target in list(targets):
            parts = target.split(".")
            targets.update(p for p in (".".join(parts[:i]) for i in range(2, len(parts))) if p not in own)
        targets.discard(name)
        graph[name] = targets
    return graph


def _imported_by_name(call: ast.Call) -> bool:
    """``importlib.import_module("a.b")`` with the name written out (a computed name is not seen)."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return (name == "import_module" and len(call.args) >= 1 and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def line_counts(root: Path = ROOT) -> dict[str, int]:
    """Lines of every module, by path relative to ``root``."""
    return {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in modules(root).values()}


def measures(root: Path = ROOT) -> dict:
    """What docs/design/layout.md's before/after table reports."""
    lines = line_counts(root)
    folders = Counter(str(Path(path).parent) + "/" for path in lines)
    longest = max(lines, key=lines.get)
    return {"modules per folder": dict(sorted(folders.items())), "modules": len(lines),
            "longest module": (longest, lines[longest]),
            "over 400 lines": sorted(p for p, n in lines.items() if n > MAX_LINES),
            "import cycles": cycles(imports(root)),
            "imports of missing modules": (lambda missing: (imports(root, unresolved=missing), missing)[1])({})}


def test_no_import_cycle():
    found = cycles(imports())
    assert not found, "import cycles (module- or function-level): " + "; ".join(" <-> ".join(c) for c in found)


def test_every_import_inside_the_packages_exists():
    """An import of a module that a move left behind fails here, not only when its function runs
    (and not silently: an editable install of another checkout would serve the old module)."""
    missing: dict[str, set[str]] = {}
    imports(unresolved=missing)
    assert not missing, {name: sorted(targets) for name, targets in missing.items()}


def test_every_folder_is_a_package():
    """A folder of modules without ``__init__.py`` imports (as a namespace package) from a checkout
    but is left out of an installed wheel (setuptools' find_packages)."""
    folders = {p.parent for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    assert not sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())


def test_no_module_over_the_line_limit():
    long = {path: n for path, n in line_counts().items() if n > MAX_LINES and path not in LONG_MODULES}
    assert not long, f"modules over {MAX_LINES} lines (split them, or list them in LONG_MODULES with why): {long}"


def test_dpdmd_never_imports_tune():
    graph = imports()
    found = {name: sorted(t for t in targets if t.split(".")[0] == "tune")
             for name, targets in graph.items() if name.split(".")[0] == "dpdmd"}
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def test_the_command_lines_import_no_ray():
    """``python -m tune.search --help`` / ``--dry-run`` and the dpdmd commands start without Ray:
    only the run imports it (inside functions)."""
    import subprocess

    script = ("import sys, dpdmd.cli.train, dpdmd.cli.evaluate, tune.cli.search, tune.cli.plan; "
              "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", script], cwd=ROOT).returncode == 0


def test_the_graph_sees_function_level_and_relative_imports():
    graph = imports()
    assert "dpdmd.config" in graph["dpdmd.method"] or "dpdmd.stream" in graph["dpdmd.method"]
    assert "tune.search" in graph and graph["dpdmd"]  # the packages' __init__ import their modules


if __name__ == "__main__":
    result = measures(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    for key, value in result.items():
        print(f"{key}: {value}")


def test_every_console_script_names_a_command_that_exists():
    """pyproject's [project.scripts] (dpdmd-train, dpdmd-tune, ...) point at callables, each of them
    also served as `python -m`."""
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"dpdmd-train", "dpdmd-evaluate", "dpdmd-tune", "dpdmd-tune-export", "dpdmd-tune-front"} <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
