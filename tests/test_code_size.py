"""Small modules and short functions (issue 23): no module of the package over 500 lines, no function over 80,
measured by parsing the package with `ast`, so that a newcomer can read any piece top to bottom."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "cycleseg"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _sizes(root: Path = SRC) -> tuple[dict[str, int], dict[str, int]]:
    """(module path -> lines, "module path:function" -> lines of its definition, decorators and docstring
    included) for every .py file under `root`."""
    modules, functions = {}, {}
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        name = str(path.relative_to(root.parent))
        modules[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text, filename=name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                functions[f"{name}:{node.lineno} {node.name}"] = node.end_lineno - first + 1
    return modules, functions


def test_the_measure_on_a_made_up_package(tmp_path):
    pkg = tmp_path / "cycleseg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(79))
    (pkg / "a.py").write_text(f"@decorator\ndef long():\n{body}\n\n\ndef short():\n    pass\n")
    modules, functions = _sizes(pkg)
    assert modules == {"cycleseg/a.py": 85}
    assert functions == {"cycleseg/a.py:2 long": 81, "cycleseg/a.py:84 short": 2}


def test_no_module_over_500_lines():
    modules, _ = _sizes()
    big = {name: n for name, n in modules.items() if n > MAX_MODULE_LINES}
    assert big == {}, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {big}"


def test_no_function_over_80_lines():
    _, functions = _sizes()
    long = {name: n for name, n in functions.items() if n > MAX_FUNCTION_LINES}
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): {long}"
