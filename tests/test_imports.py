"""The house rules on imports: no cycles (imports inside functions count), a pure core free of heavy stacks.

The import graph is read from the source (the AST of every module of ``geounet/`` and
``workflows/``), not from ``sys.modules``, so an import hidden in a function body or
behind ``TYPE_CHECKING`` counts like any other: a lazy import does not remove a cycle,
it only hides it.
"""

from __future__ import annotations

import ast
import graphlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geounet", "workflows")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (``from pkg import sub`` is ``pkg.sub``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, name, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)  # a submodule, else a name of the module
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at module level or inside functions)."""
    modules = _modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    assert "geounet" in graph["geounet.publishing"]  # from geounet import __version__: a name of the root
    assert "geounet.merge" in graph["geounet.predict"]  # module level
    assert "geounet.scenes" in graph["geounet.planning"]  # inside plan_scenes()
    assert "geounet.model.networks" in graph["geounet.infer"]  # from geounet.model.networks import ...


def test_no_import_cycles() -> None:
    graph = import_graph()
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(reversed(exc.args[1]))  # graphlib lists dependencies first
        pytest.fail(f"import cycle: {cycle}; move the shared code below both modules")


#: The pure core: grid and tiling math, merging, the spec types and the bundle file, the job
#: values, atomic writes. None of them may load a deep-learning, cluster, config or CLI stack,
#: nor rasterio (they do no raster I/O).
PURE = (
    "geounet.geo",
    "geounet.tiling",
    "geounet.merge",
    "geounet.model",
    "geounet.model.spec",
    "geounet.model.bundle",
    "geounet.jobs",
    "geounet.pool",
    "geounet.atomic",
    "geounet.errors",
)
HEAVY = ("torch", "ray", "pydantic", "click", "rasterio", "pystac_client")
#: geounet.vectorize.source reads class rasters (rasterio, which imports click itself); the
#: package loads it on first use of its file API only. The deep-learning, cluster and config
#: stacks stay out of it too.
VECTORIZE_HEAVY = ("torch", "ray", "pydantic", "pystac_client")
VECTORIZE_IO = ("geounet.vectorize", "geounet.vectorize.source")


def _loaded_after(module: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after importing ``module`` in a fresh interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return set(json.loads(out.stdout))


#: Every module in geounet/vectorize (walked: a new one is checked too); all but the raster
#: reader are pure, and so is importing the package (its file API loads lazily).
VECTORIZE = tuple(m for m in _modules() if m == "geounet.vectorize" or m.startswith("geounet.vectorize."))
VECTORIZE_PURE = tuple(m for m in VECTORIZE if m not in VECTORIZE_IO)


def external_imports(path: Path) -> set[str]:
    """Top-level packages ``path`` imports anywhere in its file (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def reachable(module: str, graph: dict[str, set[str]]) -> set[str]:
    """``module`` and every project module it imports, directly or not (imports inside functions count)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


@pytest.mark.parametrize("module", PURE + VECTORIZE_PURE + ("geounet.vectorize",))
def test_pure_core_loads_no_heavy_stack(module: str) -> None:
    loaded = _loaded_after(module)
    assert module.split(".")[0] in loaded  # the probe did import it
    assert not loaded & set(HEAVY), f"import {module} loads {sorted(loaded & set(HEAVY))}"


@pytest.mark.parametrize("module", VECTORIZE)
def test_vectorize_loads_no_deep_learning_stack(module: str) -> None:
    loaded = _loaded_after(module)
    assert not loaded & set(VECTORIZE_HEAVY), f"import {module} loads {sorted(loaded & set(VECTORIZE_HEAVY))}"


@pytest.mark.parametrize("module", PURE + VECTORIZE)
def test_pure_core_imports_no_heavy_stack_even_lazily(module: str) -> None:
    """Read from the source: no function of the core (or of what it uses) imports a heavy stack later."""
    graph, modules = import_graph(), _modules()
    heavy = set(VECTORIZE_HEAVY if module in VECTORIZE_IO else HEAVY)
    found = {
        f"{name}: {pkg}"
        for name in reachable(module, graph)
        for pkg in external_imports(modules[name]) & heavy
    }
    assert not found, f"{module} reaches heavy imports: {sorted(found)}"


def test_the_core_lists_are_real_modules() -> None:
    modules = _modules()
    assert set(PURE) <= set(modules), sorted(set(PURE) - set(modules))
    assert {"geounet.vectorize", "geounet.vectorize.frame", "geounet.vectorize.parts"} <= set(VECTORIZE)
    assert "torch" in external_imports(modules["geounet.model.networks"])  # the walk sees real imports
