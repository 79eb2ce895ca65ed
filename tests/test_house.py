"""The house rules on size: no module over 500 lines, no function over 60 (``geounet/``, ``workflows/``).

Read from the AST (``end_lineno``), so a function counts from its ``def`` (decorators aside)
to its last line, docstring included; a method counts on its own, apart from its class.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for pkg in ("geounet", "workflows") for p in (ROOT / pkg).rglob("*.py"))
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def long_functions(source: str, *, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(qualified name, lines) of the functions of ``source`` longer than ``limit`` lines.

    >>> long_functions("def f():\\n" + "    x = 1\\n" * 3, limit=3)
    [('f', 4)]
    >>> long_functions("class C:\\n    def m(self):\\n        pass\\n", limit=3)
    []
    """
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    if lines > limit:
                        found.append((name, lines))
                name += "."
            visit(child, name)

    visit(ast.parse(source), "")
    return found


def test_the_walk_sees_every_module() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"geounet/pipeline.py", "geounet/distributed.py", "workflows/region_landcover.py"} <= names


def test_nested_functions_count_on_their_own() -> None:
    body = "    y = 2\n" * 4
    source = f"def outer():\n    def inner():\n{'    ' + body.replace(chr(10), chr(10) + '    ')}\n    return inner\n"
    assert [n for n, _ in long_functions(source, limit=4)] == ["outer", "outer.inner"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_and_function_sizes(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, (
        f"{path.relative_to(ROOT)} has {lines} lines (> {MAX_MODULE_LINES}); split it by data flow"
    )
    too_long = long_functions(source)
    assert not too_long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {too_long}"
