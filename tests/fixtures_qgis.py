"""Fixtures for the GIS outputs: real class rasters, a finished run's outputs, and real QGIS.

The class rasters are stand-ins for a model's output, derived deterministically from the
real data (no trained model is needed to test the writers):

- ``landuse``: the real OpenStreetMap land-use polygons of the Brandenburg scene rasterized
  onto its Sentinel-2 10 m grid (1536×768, EPSG:32633, wider than 1024 px as GDAL's COG
  validator needs); pixels without a label (the eastern third and the gaps) are nodata 255.
- ``ndvi``: the same scene's NDVI (bands B04/B08) quantized into 4 classes: dense and
  speckled, the hard case for polygon counts.
- a confidence stand-in: the NDVI's distance to the nearest class threshold, scaled to
  0..100 % (uint8, 255 nodata), i.e. how far a pixel is from flipping class.

``qgis`` runs ``tests/qgis_probe.py`` with Debian's ``/usr/bin/python3`` (python3-qgis) in a
subprocess, offscreen, and returns its JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize

from geounet.geo import Grid
from geounet.model import NODATA_CLASS, ClassInfo

_S2 = "s2-brandenburg-20170216"
_BAND = "IMG_DATA/T33UUU_20170216T102101_{}.jp2"

#: OSM land-use classes of the Brandenburg labels with conventional map colors.
LANDUSE = (
    ClassInfo(0, "farm", "#f5dc8c"),
    ClassInfo(1, "forest", "#1b7837"),
    ClassInfo(2, "grass", "#a6dba0"),
    ClassInfo(3, "meadow", "#d9f0a3"),
    ClassInfo(4, "residential", "#d6604d"),
    ClassInfo(5, "scrub", "#8c6d31"),
    ClassInfo(6, "water", "#2166ac"),
    ClassInfo(7, "wetland", "#67a9cf"),
)
NDVI_CLASSES = (
    ClassInfo(0, "water-or-cloud", "#4393c3"),
    ClassInfo(1, "bare", "#bf812d"),
    ClassInfo(2, "sparse-vegetation", "#dfc27d"),
    ClassInfo(3, "vegetation", "#35978f"),
)
_NDVI_EDGES = (0.0, 0.2, 0.4)
#: Provenance columns the run fixture adds to every polygon.
PROVENANCE = {"scene_id": "S2A_MSIL1C_20170216T102101_T33UUU", "date": "2017-02-16"}


@dataclass(frozen=True)
class ClassRaster:
    """A class raster stand-in: array (rows, cols) uint8, its grid, classes, confidence (uint8 %)."""

    array: np.ndarray
    grid: Grid
    classes: tuple[ClassInfo, ...]
    confidence: np.ndarray


def _read_band(data_dir: Path, band: str) -> tuple[np.ndarray, Grid]:
    with rasterio.open(data_dir / _S2 / _BAND.format(band)) as src:
        grid = Grid(shape=(src.height, src.width), transform=src.transform, crs=src.crs.to_string())
        return src.read(1).astype(np.float64), grid


def _ndvi(data_dir: Path) -> tuple[np.ndarray, Grid]:
    red, grid = _read_band(data_dir, "B04")
    nir, _ = _read_band(data_dir, "B08")
    return (nir - red) / np.maximum(nir + red, 1.0), grid


def _confidence(ndvi: np.ndarray, classes: np.ndarray) -> np.ndarray:
    margin = np.min(np.abs(ndvi[..., None] - np.asarray(_NDVI_EDGES)), axis=-1)
    conf = np.clip(50 + 250 * margin, 0, 100).astype(np.uint8)
    conf[classes == NODATA_CLASS] = 255
    return conf


@pytest.fixture(scope="session")
def landuse(data_dir: Path) -> ClassRaster:
    """Real OSM land use rasterized on the Brandenburg 10 m grid; unlabelled = 255."""
    ndvi, grid = _ndvi(data_dir)
    gdf = gpd.read_file(data_dir / _S2 / "osm_landuse_west.gpkg")
    ids = {c.name: c.id for c in LANDUSE}
    array = rasterize(
        ((geom, ids[name]) for geom, name in zip(gdf.geometry, gdf.fclass, strict=True)),
        out_shape=grid.shape,
        transform=grid.transform,
        fill=NODATA_CLASS,
        dtype="uint8",
    )
    return ClassRaster(array, grid, LANDUSE, _confidence(ndvi, array))


@pytest.fixture(scope="session")
def ndvi_classes(data_dir: Path) -> ClassRaster:
    """The Brandenburg NDVI quantized into 4 classes (dense, speckled); no nodata."""
    ndvi, grid = _ndvi(data_dir)
    array = np.digitize(ndvi, _NDVI_EDGES).astype(np.uint8)
    return ClassRaster(array, grid, NDVI_CLASSES, _confidence(ndvi, array))


@pytest.fixture(scope="session")
def run_outputs(
    tmp_path_factory: pytest.TempPathFactory, landuse: ClassRaster, data_dir: Path
) -> dict[str, Path]:
    """A finished run's outputs (COGs, polygons, STAC, QGIS project...) for the land-use stand-in."""
    from geounet import publish
    from geounet.write import CogWriter

    out = tmp_path_factory.mktemp("run")
    grid = landuse.grid
    with (
        CogWriter(out / "classes.tif", grid, dtype="uint8", nodata=255, classes=landuse.classes) as cw,
        CogWriter(
            out / "confidence.tif",
            grid,
            dtype="uint8",
            nodata=255,
            resampling="average",
            description="confidence",
        ) as fw,
    ):
        for w in _tiles(grid.shape, 448):  # tile cores that do not match the 512-px blocks
            cw.write(w, landuse.array[w.to_slices()])
            fw.write(w, landuse.confidence[w.to_slices()])
    preview = out / "preview.tif"
    _write_rgb_preview(data_dir, preview)
    manifest = {"input": "s2-brandenburg-20170216 (OSM land use stand-in)", "model": "none (labels)"}
    paths = publish.products(
        out,
        classes_path=out / "classes.tif",
        confidence_path=out / "confidence.tif",
        classes=landuse.classes,
        preview_path=preview,
        manifest=manifest,
        attributes=PROVENANCE,
    )
    return {"classes": out / "classes.tif", "confidence": out / "confidence.tif", **paths}


def _tiles(shape: tuple[int, int], size: int) -> list[Any]:
    from geounet.vectorize import blocks

    return list(blocks(shape, size))


def _write_rgb_preview(data_dir: Path, path: Path) -> None:
    bands = [_read_band(data_dir, b)[0] for b in ("B04", "B03", "B02")]
    _, grid = _read_band(data_dir, "B02")
    rgb = np.stack([np.clip(b / 3000 * 255, 0, 255) for b in bands]).astype(np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.cols,
        height=grid.rows,
        count=3,
        dtype="uint8",
        crs=grid.crs,
        transform=grid.transform,
    ) as dst:
        dst.write(rgb)


CRACK = (
    ClassInfo(0, "background", "#808080"),
    ClassInfo(1, "crack", "#ff0000"),
    ClassInfo(2, "planking", "#ffff00"),
)


@pytest.fixture(scope="session")
def photo(data_dir: Path, tmp_path_factory) -> tuple[np.ndarray, dict[str, Path]]:
    """Outputs for a photo without georeferencing: a real UAV75 crack mask as the class raster."""
    from PIL import Image

    from geounet import publish
    from geounet.write import write_array

    out = tmp_path_factory.mktemp("photo")
    mask = np.asarray(Image.open(data_dir / "crack-uav75/train_lab/DSC00552.png"))[..., 0]
    array = np.select([mask == 255, mask == 204], [1, 2], 0).astype(np.uint8)
    classes = write_array(out / "classes.tif", array, Grid(shape=array.shape), nodata=255, classes=CRACK)
    paths = publish.products(out, classes_path=classes, confidence_path=None, classes=CRACK)
    return array, {"classes": classes, **paths}


QGIS_PYTHON = Path("/usr/bin/python3")
PROBE = Path(__file__).with_name("qgis_probe.py")


def _has_qgis() -> bool:
    if not QGIS_PYTHON.exists():
        return False
    probe = subprocess.run(
        [str(QGIS_PYTHON), "-c", "import qgis.core"],
        capture_output=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        check=False,
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def qgis(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, Any]]:
    """Run ``tests/qgis_probe.py`` under Debian's QGIS; returns its JSON report.

    Fails (not skips) when QGIS is missing: the suite's setup installs python3-qgis.
    """
    if not _has_qgis():
        pytest.fail(
            "QGIS's Python (python3-qgis) is not importable by /usr/bin/python3; apt-get install python3-qgis"
        )
    home = tmp_path_factory.mktemp("qgis-home")

    def run(request: dict[str, Any]) -> dict[str, Any]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "QT_QPA_PLATFORM": "offscreen",
            "XDG_RUNTIME_DIR": str(home),
            "LANG": "C.UTF-8",
        }
        proc = subprocess.run(
            [str(QGIS_PYTHON), str(PROBE)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"qgis_probe.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return report

    return run
