"""Shared fixtures: the real data folder (GEOUNET_DATA) and quiet, loopback-only settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("GDAL_HTTP_MAX_RETRY", "0")
# `geounet predict` defaults to Ray; CLI tests that do not test Ray run in-process (fast).
os.environ.setdefault("GEOUNET_EXECUTOR", "local")

# Fixture modules of the test suite (each owns one real component: STAC server, Ray, QGIS...).
pytest_plugins: list[str] = [
    "fixtures_stac",
    "fixtures_stac_schemas",
    "fixtures_qgis",
    "fixtures_ray",
    "fixtures_flaky",
    "fixtures_s2",
]

# run by /usr/bin/python3 (Debian QGIS) in a subprocess, not a test module
collect_ignore = ["qgis_probe.py"]

_DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder: $GEOUNET_DATA, defaulting to ../shared/data beside the repository."""
    path = Path(os.environ.get("GEOUNET_DATA", str(_DEFAULT_DATA)))
    if not (path / "README.md").exists():
        pytest.fail(f"real data not found at {path}; set GEOUNET_DATA to the shared data folder")
    return path


@pytest.fixture(scope="module")
def one_torch_thread() -> object:
    """torch at one thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    the CI machine is shared, and several torch threads on 2 busy cores spin against each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
