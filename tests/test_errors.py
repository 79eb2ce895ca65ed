"""Error messages name real settings: the config keys and CLI flags they tell the user to change exist.

The rule of :mod:`geounet.errors` (a message says how to fix it, with the REAL config key or
flag) checked on the source: the messages of every ``raise`` in ``geounet/`` and ``workflows/``,
and the key names kept in constants (``tiling.PREDICT_NAMES``...). A dotted name in them must be
a key of a config model of :mod:`geounet.config` (``predict.halo``), an object of the package
(``merge.crop``: a function to call) or a file name (``report.md``); a ``--flag`` must be an option
of a ``geounet`` command. Keys are read from the pydantic models, flags from the click commands,
so renaming either without the messages fails here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import click
import pydantic
import pytest

from geounet import config
from geounet.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for pkg in ("geounet", "workflows") for p in (ROOT / pkg).rglob("*.py"))
ROOTS = (config.RunConfig, config.TrainConfig, config.MonitorConfig)
#: ``a.b`` (lower case, not part of a longer path, URL, file or call: ``x.tif``, ``f(``).
DOTTED = re.compile(r"(?<![\w./:-])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)(?![\w(./-])")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
FILE_SUFFIXES = {"md", "png", "db", "tif", "json", "yaml", "gpkg", "parquet", "safetensors", "qml", "qgz"}
#: flags of other programs that messages quote (pip, ray)
FOREIGN_FLAGS = {"--no-deps", "--force-reinstall", "--system-config"}


def _models(annotation: object) -> Iterator[type[pydantic.BaseModel]]:
    """The pydantic models inside a field's annotation (``X``, ``X | None``, ``list[X]``, ``A | B``)."""
    if inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def config_keys(model: type[pydantic.BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key of ``model`` and its sections (``predict``, ``predict.halo``...)."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        for section in _models(field.annotation):
            keys |= config_keys(section, f"{prefix}{name}.")
    return keys


def cli_flags(command: click.Command) -> set[str]:
    """The ``--long`` options of ``command`` and of all its sub-commands."""
    flags = {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
    if isinstance(command, click.Group):
        for name in command.list_commands(click.Context(command)):
            sub = command.get_command(click.Context(command), name)
            assert sub is not None, name
            flags |= cli_flags(sub)
    return flags


KEYS = set().union(*(config_keys(m) for m in ROOTS))
FLAGS = cli_flags(cli)


def _is_object(dotted: str) -> bool:
    """``dotted`` names a module or an attribute of one in the package (``merge.crop``)."""
    head, *rest = dotted.split(".")
    try:
        obj: object = importlib.import_module(f"geounet.{head}")
    except ImportError:
        return False
    for part in rest:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _strings(node: ast.AST) -> Iterator[str]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            yield sub.value


def messages(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of the message strings of ``source``: raised errors and ``*_NAMES`` constants."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            yield from ((node.lineno, s) for s in _strings(node.exc))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id.endswith("_NAMES") for t in targets) and node.value:
                yield from ((node.lineno, s) for s in _strings(node.value))


def wrong_names(source: str) -> list[str]:
    """The dotted names and flags of ``source``'s messages that are no key, object, file or flag.

    >>> wrong_names('raise ConfigError("raise --tile or tiling.halo")')
    ['1: tiling.halo']
    """
    found = []
    for line, text in messages(source):
        for match in DOTTED.finditer(text):
            name = match.group(1)
            if name in KEYS or name.rsplit(".", 1)[-1] in FILE_SUFFIXES or _is_object(name):
                continue
            found.append(f"{line}: {name}")
        found += [f"{line}: {f}" for f in FLAG.findall(text) if f not in FLAGS | FOREIGN_FLAGS]
    return found


def test_the_keys_and_flags_are_read_from_the_models_and_commands() -> None:
    assert {"predict.halo", "predict.tile", "model.halo", "data.split.bbox", "state.url"} <= KEYS
    assert "tiling.halo" not in KEYS and "predict" in KEYS
    assert {"--tile", "--halo", "--executor", "--set", "--max-cloud", "--init-from"} <= FLAGS


def test_a_wrong_key_or_flag_is_found() -> None:
    source = (
        'PREDICT_NAMES = ("--tile / predict.tile", "--halo / tiling.halo")\n'
        'def f():\n    raise ValueError(f"see merge.crop, report.md; use --halo-px or predict.halo")\n'
    )
    assert wrong_names(source) == ["1: tiling.halo", "3: --halo-px"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_messages_name_real_keys_and_flags(path: Path) -> None:
    wrong = wrong_names(path.read_text(encoding="utf-8"))
    assert not wrong, f"{path.relative_to(ROOT)}: messages name no config key, flag or object: {wrong}"
