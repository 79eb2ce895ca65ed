"""COG writer: validity (both validators), exact georeferencing, palette, names, atomicity.

The class raster is the real OSM land use of the Brandenburg scene rasterized on its
1536×768 Sentinel-2 grid, a stand-in for a model output (see ``tests/fixtures_qgis.py``).
"""

from __future__ import annotations

import random
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from geounet.errors import ConfigError, InputError, WriteError
from geounet.geo import Grid, Window
from geounet.model import ClassInfo
from geounet.vectorize import blocks
from geounet.write import CogWriter, write_array

GDAL_VALIDATOR = "osgeo_utils.samples.validate_cloud_optimized_geotiff"


def gdal_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """GDAL's own COG validator, from Debian's python3-gdal."""
    return subprocess.run(
        ["/usr/bin/python3", "-m", GDAL_VALIDATOR, str(path)], capture_output=True, text=True, check=False
    )


def write_tiles(path: Path, array: np.ndarray, grid: Grid, tile: int, **options) -> Path:
    windows = list(blocks(grid.shape, tile))
    random.Random(0).shuffle(windows)  # tiles arrive in any order
    with CogWriter(path, grid, **options) as w:
        for win in windows:
            w.write(win, array[win.to_slices()])
    return path


@pytest.fixture(scope="module")
def cogs(tmp_path_factory, landuse) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cogs")
    grid = landuse.grid
    return {
        "classes": write_tiles(
            out / "classes.tif", landuse.array, grid, 448, dtype="uint8", nodata=255, classes=landuse.classes
        ),
        "confidence": write_tiles(
            out / "confidence.tif",
            landuse.confidence,
            grid,
            448,
            dtype="uint8",
            nodata=255,
            resampling="average",
            description="confidence",
        ),
        "confidence_f32": write_tiles(
            out / "confidence_f32.tif",
            np.where(landuse.confidence == 255, np.nan, landuse.confidence / 100).astype(np.float32),
            grid,
            300,
            dtype="float32",
            nodata=float("nan"),
            resampling="average",
        ),
    }


@pytest.mark.parametrize("name", ["classes", "confidence", "confidence_f32"])
def test_cog_validators_pass(cogs, name) -> None:
    path = cogs[name]
    valid, errors, warnings = cog_validate(str(path), strict=True)
    assert valid and not errors and not warnings, (errors, warnings)
    proc = gdal_validate(path)
    assert proc.returncode == 0 and "is a valid cloud optimized GeoTIFF" in proc.stdout, (
        proc.stdout + proc.stderr
    )


def test_cog_layout_georeferencing_and_pixels(cogs, landuse) -> None:
    with rasterio.open(cogs["classes"]) as src:
        assert src.crs == rasterio.crs.CRS.from_user_input(landuse.grid.crs)
        assert src.transform == landuse.grid.transform
        assert src.shape == landuse.grid.shape
        assert src.nodata == 255
        assert src.block_shapes == [(512, 512)]
        assert src.compression.name.lower() == "deflate"
        assert src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), landuse.array)
        # Mode overviews keep class ids: no averaged in-between values appear.
        overview = src.read(1, out_shape=(384, 768))
        assert set(np.unique(overview)) <= {c.id for c in landuse.classes} | {255}
        colormap = src.colormap(1)
        for c in landuse.classes:
            assert colormap[c.id][:3] == c.rgb
        assert colormap[200][:3] == (0, 0, 0)
    with rasterio.open(cogs["confidence"]) as src:
        np.testing.assert_array_equal(src.read(1), landuse.confidence)
        assert src.descriptions == ("confidence",)
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
    with rasterio.open(cogs["confidence_f32"]) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"  # floating-point predictor


def test_gdalinfo_shows_category_names(cogs, landuse) -> None:
    info = subprocess.run(
        ["gdalinfo", str(cogs["classes"])], capture_output=True, text=True, check=True
    ).stdout
    assert "Categories:" in info
    for c in landuse.classes:
        assert f"{c.id}: {c.name}" in info


def test_qml_sidecars(cogs, landuse) -> None:
    qml = ET.parse(cogs["classes"].with_suffix(".qml")).getroot()
    renderer = qml.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted"
    entries = [(int(e.get("value")), e.get("color"), e.get("label")) for e in renderer.iter("paletteEntry")]
    assert entries == [(c.id, c.color, c.name) for c in landuse.classes]
    grad = ET.parse(cogs["confidence"].with_suffix(".qml")).getroot().find("pipe/rasterrenderer")
    assert grad.get("type") == "singlebandpseudocolor"
    assert (grad.get("classificationMin"), grad.get("classificationMax")) == ("0", "100")
    assert not cogs["confidence"].with_name("confidence.tif.aux.xml").exists()


def test_unwritten_windows_are_nodata(tmp_path: Path, landuse) -> None:
    grid = landuse.grid
    path = tmp_path / "partial.tif"
    with CogWriter(path, grid, dtype="uint8", nodata=255, classes=landuse.classes) as w:
        w.write(Window(0, 0, 512, 512), landuse.array[:512, :512])
    with rasterio.open(path) as src:
        data = src.read(1)
    np.testing.assert_array_equal(data[:512, :512], landuse.array[:512, :512])
    assert (data[512:, :] == 255).all() and (data[:, 512:] == 255).all()


def test_failure_leaves_nothing(tmp_path: Path, landuse) -> None:
    path = tmp_path / "classes.tif"
    with (
        pytest.raises(RuntimeError, match="boom"),
        CogWriter(path, landuse.grid, dtype="uint8", nodata=255) as w,
    ):
        w.write(Window(0, 0, 10, 10), landuse.array[:10, :10])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    w = CogWriter(path, landuse.grid, dtype="uint8", nodata=255, classes=landuse.classes)
    w.open()
    w.write(Window(0, 0, 10, 10), landuse.array[:10, :10])
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_photo_without_georeferencing(tmp_path: Path) -> None:
    array = np.arange(64 * 80, dtype=np.uint8).reshape(64, 80) % 3
    classes = [ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ff0000"), ClassInfo(2, "c", "#00ff00")]
    path = write_array(tmp_path / "classes.tif", array, Grid(shape=(64, 80)), nodata=255, classes=classes)
    info = subprocess.run(["gdalinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Origin =" not in info and "PROJCRS" not in info
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(path) as src:
        assert src.crs is None
        np.testing.assert_array_equal(src.read(1), array)


def test_errors(tmp_path: Path, landuse) -> None:
    grid = landuse.grid
    with pytest.raises(ConfigError, match="uint8"):
        CogWriter(tmp_path / "a.tif", grid, dtype="uint16", nodata=255, classes=landuse.classes)
    with pytest.raises(ConfigError, match="resampling='median'"):
        CogWriter(tmp_path / "a.tif", grid, dtype="uint8", nodata=255, resampling="median")
    with (
        pytest.raises(WriteError, match="does not exist"),
        CogWriter(tmp_path / "no" / "a.tif", grid, dtype="uint8", nodata=0),
    ):
        pass
    with CogWriter(tmp_path / "a.tif", grid, dtype="uint8", nodata=255) as w:
        with pytest.raises(InputError, match="outside the grid"):
            w.write(Window(700, 0, 100, 100), np.zeros((100, 100), np.uint8))
        with pytest.raises(InputError, match="array shape"):
            w.write(Window(0, 0, 10, 10), np.zeros((5, 5), np.uint8))
    small = Grid(shape=(4, 4), transform=Affine(1, 0, 0, 0, -1, 4), crs="EPSG:32633")
    with pytest.raises(ConfigError, match=r"0\.\.254"):
        CogWriter(
            tmp_path / "b.tif", small, dtype="uint8", nodata=255, classes=[ClassInfo(255, "x", "#000000")]
        )


def test_float_cog_pixels_and_mode_overviews_equal_the_array(cogs, landuse) -> None:
    """Float pixels bit for bit (NaN nodata included); where 3 of a 2×2 block agree, the first
    overview holds that class (mode), which nearest or average resampling would not guarantee."""
    expected = np.where(landuse.confidence == 255, np.nan, landuse.confidence / 100).astype(np.float32)
    with rasterio.open(cogs["confidence_f32"]) as src:
        np.testing.assert_array_equal(src.read(1), expected)
    with rasterio.open(cogs["classes"]) as src:
        overview = src.read(1, out_shape=(384, 768))
    a = landuse.array.reshape(384, 2, 768, 2).transpose(0, 2, 1, 3).reshape(384, 768, 4)
    majority = np.array([np.bincount(b, minlength=256).argmax() for b in a.reshape(-1, 4)]).reshape(384, 768)
    strong = np.array([np.bincount(b, minlength=256).max() >= 3 for b in a.reshape(-1, 4)]).reshape(384, 768)
    strong &= majority != 255
    assert strong.mean() > 0.1
    np.testing.assert_array_equal(overview[strong], majority[strong])
