"""Everything geounet imports is declared in pyproject.toml: at run time as a dependency, or in an extra.

The imports are read from the AST of every module of the package (inside functions too),
mapped to their distributions with ``importlib.metadata.packages_distributions()`` and
compared with the ``[project]`` table, so a plain ``pip install .`` never lacks a module a
command needs (``cql2`` for ``--filter`` was once only a test dependency).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Imports guarded by ``try: ... except ImportError`` that need no declaration: each names why.
UNDECLARED_OK = {
    "qgis": "Debian's python3-qgis, driven as a subprocess by the QGIS checks only",
    "osgeo": "GDAL's Python bindings from Debian, optional for the COG validator",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_normal(re.split(r"[\s\[<>=!~;]", d)[0]) for d in project["dependencies"]}
    extras = {
        _normal(re.split(r"[\s\[<>=!~;]", d)[0])
        for name, deps in project["optional-dependencies"].items()
        if name != "test"
        for d in deps
    }
    return runtime, extras


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level modules imported, those imported only inside ``try/except ImportError``)."""
    tree = ast.parse(path.read_text())
    every: set[str] = set()
    guarded: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        every.update(n.split(".")[0] for n in names)
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in {"ImportError", "ModuleNotFoundError"}
            for h in node.handlers
        ):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, ast.Import):
                        guarded.update(a.name.split(".")[0] for a in sub.names)
                    elif isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module:
                        guarded.add(sub.module.split(".")[0])
    return every, guarded


def test_every_third_party_import_is_declared() -> None:
    runtime, extras = _declared()
    dists = importlib.metadata.packages_distributions()
    missing: list[str] = []
    for path in sorted((ROOT / "geounet").rglob("*.py")) + sorted((ROOT / "workflows").rglob("*.py")):
        every, guarded = _imports(path)
        for module in sorted(every - set(sys.stdlib_module_names) - {"geounet", "workflows", "__future__"}):
            if module in UNDECLARED_OK:
                continue
            names = {_normal(d) for d in dists.get(module, [module])}
            allowed = runtime | extras if module in guarded else runtime
            if not names & allowed and not names & runtime:
                where = "an extra" if module in guarded else "[project] dependencies"
                missing.append(
                    f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(names))}) not in {where}"
                )
    assert not missing, "\n".join(missing)


def test_cql2_is_a_runtime_dependency_and_planetary_computer_an_extra() -> None:
    runtime, extras = _declared()
    assert "cql2" in runtime
    assert "planetary-computer" in extras and "planetary-computer" not in runtime
