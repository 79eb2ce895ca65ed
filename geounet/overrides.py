"""Config files as raw mappings: the one YAML loader and dotted ``--set KEY=VALUE`` overrides.

Plain YAML and dicts, before validation (:mod:`geounet.config` validates them with pydantic).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from geounet.errors import ConfigError, InputNotFoundError

__all__ = ["apply_overrides", "parse_overrides", "read_yaml"]


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=3", "c=x"]`` → ``{"a.b": 3, "c": "x"}``; values are parsed as YAML scalars/lists.

    Example:
        >>> parse_overrides(["predict.halo=96", "stac.collections=[a, b]", "name=x"])
        {'predict.halo': 96, 'stac.collections': ['a', 'b'], 'name': 'x'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE; write e.g. --set predict.halo=96")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = text
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], path: Path) -> dict[str, Any]:
    """Set each dotted ``--set`` key in the raw mapping (creating sections), before validation."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: {key} in {path} is not a section; fix the key path")
            node = child
        node[leaf] = value
    return raw


def read_yaml(path: Path, kind: str, *, hint: str = "see configs/ for examples") -> dict[str, Any]:
    """The one YAML loader: a config file's top-level mapping, or a one-line error naming the file."""
    if not path.exists():
        raise InputNotFoundError(f"{kind} config {str(path)!r} not found; {hint}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}; fix the file") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path} must hold a mapping at the top level, got {type(raw).__name__}; fix the file"
        )
    return raw
