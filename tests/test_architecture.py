"""The import graph of the package: no cycles, and the layers import downwards only (STYLE "Import direction").

Every module under src/cycleseg (recursively) is parsed with `ast`; every `import cycleseg...` and
`from cycleseg... import ...` counts, at module level or inside a function, as an edge between two modules.
`from cycleseg.data import cache` is an edge to the submodule `cycleseg.data.cache`; `from cycleseg.data
import CLASS_NAMES` one to the package `cycleseg.data` (its __init__). Relative imports are resolved the way
Python resolves them.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "cycleseg"

# The layer groups, lowest first: a module may import its own group and the groups below it, never one above.
# The config sits with the paper core: its dataclasses are what the core's builders take, and its checks read the
# core's registries (noise kinds, augmentation modes). The package itself (cycleseg.load) is the public facade.
LAYERS = ("base", "core", "data", "runs", "commands", "experiments", "report", "cli")
def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package under `src`."""
    return {_module_name(p, src): p for p in sorted((src / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """(node, typing_only) for every Import/ImportFrom in the tree, function bodies included."""
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    typing_only.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, id(node) in typing_only


def _edges(modules: dict[str, Path]) -> list[tuple[str, str, int, bool]]:
    """(importer, imported, line, typing_only) for every import of a cycleseg module by a cycleseg module."""
    edges: dict[tuple[str, str, int, bool], None] = {}  # ordered set: `from x import a, b` is one edge
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, typing_only in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:  # relative: from the package that holds this module, `level - 1` packages up
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                           for alias in node.names]
            for target in targets:
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                while target not in modules and "." in target:  # `import cycleseg.x.y` of an attribute: its module
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    edges[(name, target, node.lineno, typing_only)] = None
    return list(edges)


MODULES = _modules()
EDGES = _edges(MODULES)


def _layer(module: str) -> str:
    """The layer group of a module: cycleseg.core.noise -> "core", cycleseg.config -> "core", cycleseg.errors ->
    "base", cycleseg.cli -> "cli"; "" for the package itself (the facade, which may reach anything)."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    if parts[1] in ("errors", "version", "fileio"):
        return "base"
    if parts[1] in ("config", "config_files"):
        return "core"
    return parts[1]


def _where(importer: str, line: int) -> str:
    return f"{MODULES[importer].relative_to(SRC.parent)}:{line}"


def test_the_graph_is_read_from_the_whole_package():
    """The parser sees what the package holds: sub-packages, and imports inside functions."""
    assert {"cycleseg.commands.train", "cycleseg.cli", "cycleseg.config", "cycleseg.core.models"} <= set(MODULES)
    assert any(m.startswith("cycleseg.data.") for m in MODULES), "the data package's modules were not found"
    cli_targets = {target for importer, target, _, _ in EDGES if _layer(importer) == "cli"}
    assert "cycleseg.commands.train" in cli_targets  # imported inside a function: must be an edge all the same


def test_parser_resolves_imports_on_a_constructed_package(tmp_path):
    """Absolute, relative, submodule and function-level imports of a small made-up package."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cycleseg.sub import b\nimport cycleseg.c\n")
    (pkg / "c.py").write_text("def f():\n    from .sub.b import X\n")
    (pkg / "sub" / "__init__.py").write_text("from . import b\nfrom typing import TYPE_CHECKING\n"
                                             "if TYPE_CHECKING:\n    from cycleseg.a import Y\n")
    (pkg / "sub" / "b.py").write_text("from .. import errors_free\nfrom cycleseg.sub import NAME\n")
    found = {(a, b, t) for a, b, _, t in _edges(_modules(tmp_path))}
    assert found == {
        ("cycleseg.a", "cycleseg.sub.b", False), ("cycleseg.a", "cycleseg.c", False),
        ("cycleseg.c", "cycleseg.sub.b", False),
        ("cycleseg.sub", "cycleseg.sub.b", False), ("cycleseg.sub", "cycleseg.a", True),
        ("cycleseg.sub.b", "cycleseg", False), ("cycleseg.sub.b", "cycleseg.sub", False),
    }


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [m0, m1, ..., m0], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_cycle_finder():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_between_modules():
    """Imports executed at run time (TYPE_CHECKING-only imports never run) form no cycle, not even one that a
    function-level import hides from the interpreter at start-up."""
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], str] = {}
    for importer, target, line, typing_only in EDGES:
        if typing_only:
            continue
        graph.setdefault(importer, set()).add(target)
        lines.setdefault((importer, target), _where(importer, line))
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + " (" + "; ".join(
        f"{a} imports {b} at {lines[(a, b)]}" for a, b in itertools.pairwise(cycle)) + ")"


def _violations(rule) -> list[str]:
    return [f"{importer} imports {target} ({_where(importer, line)})" for importer, target, line, _ in EDGES
            if rule(_layer(importer), _layer(target))]


def test_every_module_belongs_to_a_layer():
    """A new top-level module or package must be placed in LAYERS (or the rules below would not see it)."""
    stray = sorted(m for m in MODULES if _layer(m) not in LAYERS + ("",))
    assert stray == [], "modules outside the layer groups (add them to a layer package): " + ", ".join(stray)


@pytest.mark.parametrize("lower,upper", list(itertools.combinations(LAYERS, 2)))
def test_no_lower_layer_imports_a_higher_one(lower, upper):
    """Every pair of layer groups, one test each: imports run from the CLI down to the paper core, never up."""
    bad = _violations(lambda a, b: a == lower and b == upper)
    assert bad == [], f"the {lower} layer imports the {upper} layer: " + "; ".join(bad)


def test_no_module_imports_the_facade():
    """cycleseg/__init__ (cycleseg.load) reaches the commands; a module that imported it would reach up."""
    bad = _violations(lambda a, b: b == "" and a != "")
    assert bad == [], "a module imports the package facade: " + "; ".join(bad)


def test_the_core_does_no_io():
    """The paper core reads no files: no open(), Path.read_*, torch.load/save, yaml or json in cycleseg.core."""
    import re
    pattern = re.compile(r"\bopen\(|\.read_text\(|\.read_bytes\(|\.write_text\(|torch\.(load|save)\(|^import (yaml|json)",
                         re.MULTILINE)
    allowed = {"cycleseg.config": "reads the YAML configs", "cycleseg.config_files": "reads the YAML configs",
               "cycleseg.core.precision": "reads /proc/cpuinfo (native bf16?)"}
    bad = [f"{MODULES[m].relative_to(SRC.parent)}: {hit.group(0)}" for m in MODULES if _layer(m) == "core"
           and m not in allowed for hit in [pattern.search(MODULES[m].read_text())] if hit]
    assert bad == [], "file I/O in the paper core: " + "; ".join(bad)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_named_layer_exists(layer):
    """The rules above name real modules (a renamed package would silently escape them)."""
    assert any(_layer(m) == layer for m in MODULES), layer
