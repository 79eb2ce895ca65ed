"""The published STAC extension schemas, as pystac's own extension packages ship them.

No wheel on PyPI ships the raster, file or MLM extension JSON schemas (checked: pystac
and its pystac-ext-* wheels, stac-validator, stac-valid, stac-check, stac-pydantic,
stac-model, stactools, rio-stac, pypgstac, stac-fastapi-*; stac-pydantic-extensions needs
Python 3.13; eopf's wheel has raster/projection/classification but not file or MLM and
pins rasterio 1.3; npm's stac-node-validator ships none). The source distribution of
each ``pystac-ext-*`` package does: its test cassettes hold the HTTP responses of the
published schema URIs its code writes (e.g. pystac-ext-raster 1.1.1 →
``raster/v1.1.0/schema.json``). So the tests take the sdists of exactly the installed
versions (``pip download --no-binary :all: --no-deps``, the registry's ordinary client;
``infra/bootstrap.sh test`` fetches them, the fixture does once if missing) and read the
schemas out of them: byte-for-byte the published originals, never hand-written.

Missing: classification v1.1.0, which MLM v1.4.0's schema ``$ref``s (so the MLM JSON schema
cannot be resolved offline; ``tests/test_mlm.py`` says so and leaves MLM properties to
stac-model's models). Checked on PyPI, sdists (``pip download --no-binary :all:``) and their
VCR cassettes: pystac-ext-classification 2.0.0 and 2.0.1 (v2.0.0 only), pystac-ext-mlm 1.4.0
and 1.4.1 (mlm v1.4.0, raster and processing v1.1.0), pystac 1.8.4, 1.10.1, 1.12.2, 1.14.3 and
1.15.2 and pystac-core 1.15.2 (their sdists carry no tests or cassettes), stac-model 0.7.0 (its
tests fetch nothing; no JSON), pydantic-pystac-extensions 0.3.4, and stactools-usda-cdl 0.1.3 /
stactools-noaa-mrms-qpe 0.3.1 (they write classification v1.1.0 Items but ship no schema).

Folder: ``$GEOUNET_STAC_SCHEMAS``, default ``.cache/stac-schemas`` in the repository.
``python tests/fixtures_stac_schemas.py [FOLDER]`` downloads them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

#: pystac's extension packages whose sdists carry the schemas geounet's Items declare.
PACKAGES = (
    "pystac-ext-raster",
    "pystac-ext-file",
    "pystac-ext-projection",
    "pystac-ext-classification",
    "pystac-ext-mlm",
)
FOLDER = Path(
    os.environ.get("GEOUNET_STAC_SCHEMAS", Path(__file__).resolve().parents[1] / ".cache" / "stac-schemas")
)


def sdists(folder: Path = FOLDER) -> list[Path]:
    """The sdists of the installed versions of :data:`PACKAGES` in ``folder`` (missing ones absent)."""
    names = [f"{p.replace('-', '_')}-{version(p)}.tar.gz" for p in PACKAGES]
    return [folder / n for n in names if (folder / n).is_file()]


def download(folder: Path = FOLDER) -> list[Path]:
    """Fetch the sdists of the installed versions with pip (nothing when all are there)."""
    if len(sdists(folder)) == len(PACKAGES):
        return sdists(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pins = [f"{p}=={version(p)}" for p in PACKAGES]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--no-binary",
        ":all:",
        "-d",
        str(folder),
    ]
    subprocess.run([*cmd, *pins], check=True, timeout=600)
    return sdists(folder)


def schemas_in(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Every JSON schema recorded in the sdists' VCR cassettes, keyed by the URI requested.

    A redirect (``proj.org/schemas/...`` → ``proj.org/en/latest/schemas/...``) maps the
    requested URI to the body of its target.
    """
    bodies: dict[str, dict[str, Any]] = {}
    redirects: dict[str, str] = {}
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if "/cassettes/" not in member.name or not member.name.endswith(".yaml"):
                    continue
                cassette = yaml.safe_load(tar.extractfile(member).read())  # type: ignore[union-attr]
                for interaction in cassette.get("interactions") or []:
                    uri, response = interaction["request"]["uri"], interaction["response"]
                    if 300 <= response["status"]["code"] < 400:
                        redirects[uri] = _header(response, "Location")
                    elif uri.endswith(".json") and response["status"]["code"] == 200:
                        body = json.loads(response["body"]["string"])
                        if isinstance(body, dict) and "$schema" in body:
                            bodies[uri] = body
    for uri, target in redirects.items():
        if target in bodies:
            bodies.setdefault(uri, bodies[target])
    return bodies


def _header(response: dict[str, Any], name: str) -> str:
    for key, values in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(values[0])
    return ""


@pytest.fixture(scope="session")
def stac_schemas() -> dict[str, dict[str, Any]]:
    """URI → published schema, offline, from the installed pystac-ext-* packages' sdists.

    Tests reach only loopback, so the sdists are fetched at set-up (``infra/bootstrap.sh test``
    runs ``python tests/fixtures_stac_schemas.py``), never here.
    """
    paths = sdists()
    if len(paths) != len(PACKAGES):
        pytest.fail(
            f"the sdists of {', '.join(PACKAGES)} are not all in {FOLDER} (found {len(paths)}); "
            "fetch them once with `python tests/fixtures_stac_schemas.py` (infra/bootstrap.sh test does)"
        )
    return schemas_in(paths)


if __name__ == "__main__":
    for p in download(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER):
        print(p)
