"""COG writer: validity (both validators), exact georeferencing, palette, names, atomicity.

The class raster is the real OSM land use of the Brandenburg scene rasterized on its
1536×768 Sentinel-2 grid, a stand-in for a model output (see ``tests/fixtures_qgis.py``).
"""

from __future__ import annotations

import logging
import random
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from geounet.errors import ConfigError, GeounetError, InputError, WriteError
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
    entries = [
        (int(e.get("value", "")), e.get("color"), e.get("label")) for e in renderer.iter("paletteEntry")
    ]
    assert entries == [(c.id, c.color, c.name) for c in landuse.classes]
    grad = ET.parse(cogs["confidence"].with_suffix(".qml")).getroot().find("pipe/rasterrenderer")
    assert grad is not None and grad.get("type") == "singlebandpseudocolor"
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


# --------------------------------------------------------------------------- small COGs, exact rules

SMALL = Grid(shape=(48, 80), transform=Affine(10, 0, 400000, 0, -10, 5800000), crs="EPSG:32633")
ABC = [ClassInfo(0, "water", "#1f78b4"), ClassInfo(1, "forest", "#33a02c"), ClassInfo(3, "urban", "#e31a1c")]


def _classes_array() -> np.ndarray:
    return np.random.default_rng(1).choice([0, 1, 3], size=SMALL.shape).astype(np.uint8)


def test_class_names_colors_and_tags_travel_with_the_cog(tmp_path: Path) -> None:
    path = write_array(
        tmp_path / "c.tif", _classes_array(), SMALL, nodata=255, classes=ABC, description="class"
    )
    with rasterio.open(path) as src:
        assert src.descriptions == ("class",) and src.nodata == 255 and src.dtypes == ("uint8",)
        assert src.crs == rasterio.crs.CRS.from_epsg(32633) and src.transform == SMALL.transform
        tags = src.tags(1)
        assert (tags["CLASS_0"], tags["CLASS_1"], tags["CLASS_3"]) == ("water", "forest", "urban")
        cmap = src.colormap(1)
        assert len(cmap) == 256 and cmap[3] == (227, 26, 28, 255) and cmap[2][:3] == (0, 0, 0)
        assert src.colorinterp[0] == rasterio.enums.ColorInterp.palette
    aux = ET.parse(path.with_name("c.tif.aux.xml")).getroot()
    assert [c.text or "" for c in aux.iter("Category")] == ["water", "forest", "", "urban"]
    entries = [e.get("label") for e in ET.parse(path.with_suffix(".qml")).getroot().iter("paletteEntry")]
    assert entries == ["water", "forest", "urban"]
    info = subprocess.run(["gdalinfo", str(path)], capture_output=True, text=True, check=True).stdout
    lines = [line.strip() for line in info.split("Categories:")[1].splitlines()]
    assert lines[1:5] == ["0: water", "1: forest", "2:", "3: urban"] and not lines[5].startswith("4:")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.qml",
        "c.tif",
        "c.tif.aux.xml",
    ]  # no scratch left


def test_a_continuous_cog_gets_a_gradient_over_its_range_and_no_category_sidecar(tmp_path: Path) -> None:
    scores = np.linspace(0, 1, SMALL.rows * SMALL.cols, dtype=np.float32).reshape(SMALL.shape)
    stale = tmp_path / "s.tif.aux.xml"
    stale.write_text("<PAMDataset/>")  # left by an earlier class raster of the same name
    write_array(tmp_path / "s.tif", scores, SMALL)
    assert not stale.exists()

    def qml_range(path: Path) -> tuple[str | None, str | None]:
        grad = ET.parse(path.with_suffix(".qml")).getroot().find("pipe/rasterrenderer")
        assert grad is not None and grad.get("type") == "singlebandpseudocolor"
        return grad.get("classificationMin"), grad.get("classificationMax")

    assert qml_range(tmp_path / "s.tif") == ("0", "1")  # floats: 0..1
    write_array(tmp_path / "p.tif", (scores * 100).astype(np.uint8), SMALL, nodata=255)
    assert qml_range(tmp_path / "p.tif") == ("0", "100")  # integers: percent
    write_array(tmp_path / "r.tif", scores, SMALL, value_range=(0.25, 0.75))
    assert qml_range(tmp_path / "r.tif") == ("0.25", "0.75")
    with rasterio.open(tmp_path / "s.tif") as src:
        assert src.nodata is None and src.dtypes == ("float32",)  # write_array's defaults: the array's
        np.testing.assert_array_equal(src.read(1), scores)
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"  # floating-point predictor
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"  # horizontal differencing


def test_block_compression_and_overview_resampling_are_the_ones_asked_for(tmp_path: Path) -> None:
    grid = Grid(shape=(600, 640), transform=SMALL.transform, crs=SMALL.crs)
    values = np.zeros(grid.shape, np.uint8)
    values[::2, ::2] = 100  # one pixel in four: average 25, mode 0, nearest 100 or 0
    path = write_array(
        tmp_path / "a.tif", values, grid, nodata=None, resampling="AVERAGE", block=256, compress="zstd"
    )
    with rasterio.open(path) as src:
        assert src.block_shapes == [(256, 256)] and src.compression.name.lower() == "zstd"
        assert src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), values)
        half = src.read(1, out_shape=(300, 320))
    assert (half == 25).mean() > 0.9
    path = write_array(tmp_path / "m.tif", values, grid, nodata=None, resampling="mode", block=256)
    with rasterio.open(path) as src:
        assert src.compression.name.lower() == "deflate"
        assert (src.read(1, out_shape=(300, 320)) == 0).mean() > 0.9
    valid, errors, warnings = cog_validate(str(path), strict=True)
    assert valid and not errors and not warnings


def test_a_grid_without_crs_keeps_its_transform(tmp_path: Path) -> None:
    grid = Grid(shape=(32, 32), transform=Affine(2, 0, 100, 0, -2, 64))
    path = write_array(tmp_path / "t.tif", np.ones((32, 32), np.uint8), grid)
    with rasterio.open(path) as src:
        assert src.crs is None and src.transform == grid.transform


def test_windows_in_any_order_and_dtype_conversion(tmp_path: Path) -> None:
    expected = _classes_array()
    with CogWriter(tmp_path / "w.tif", SMALL, dtype="uint8", nodata=255, classes=ABC) as w:
        for win in reversed(list(blocks(SMALL.shape, 16))):
            w.write(win, expected[win.to_slices()].astype(np.int64))  # converted to the raster's dtype
        w.write(Window(47, 79, 1, 1), np.array([[3]]))  # a 1x1 window rewrites the last pixel
    expected[47, 79] = 3
    with rasterio.open(tmp_path / "w.tif") as src:
        np.testing.assert_array_equal(src.read(1), expected)
    w.close()  # closing twice is a no-op
    assert (tmp_path / "w.tif").exists()


def test_writer_misuse_and_bad_options_are_named(tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    w = CogWriter(path, SMALL, dtype="uint8", nodata=255)
    err: pytest.ExceptionInfo[GeounetError]  # one name for the errors of every kind below
    with pytest.raises(WriteError) as err:
        w.write(Window(0, 0, 1, 1), np.zeros((1, 1), np.uint8))
    assert str(err.value) == f"{path}: write() outside the with-block; use `with CogWriter(...) as w`"
    with pytest.raises(WriteError) as err:
        w.close()
    assert str(err.value) == f"{path}: nothing was opened; use `with CogWriter(...) as w`"
    assert list(tmp_path.iterdir()) == []
    with CogWriter(path, SMALL, dtype="uint8", nodata=255) as w:
        with pytest.raises(InputError) as err:
            w.write(Window(40, 70, 10, 10), np.zeros((10, 10), np.uint8))
        assert str(err.value) == (
            "Window(row=40, col=70, height=10, width=10) reaches outside the grid (48, 80); write only core windows"
        )
        with pytest.raises(InputError) as err:
            w.write(Window(0, 0, 4, 6), np.zeros((6, 4), np.uint8))
        assert str(err.value) == (
            "array shape (6, 4) != window shape (4, 6) for x.tif; crop the prediction to the tile core"
        )
        with pytest.raises(InputError, match="reaches outside the grid"):
            w.write(Window(-1, 0, 2, 2), np.zeros((2, 2), np.uint8))
    for block in (0, -16, 24):
        with pytest.raises(ConfigError) as err:
            CogWriter(path, SMALL, dtype="uint8", nodata=255, block=block)
        assert str(err.value) == f"block={block} must be a positive multiple of 16; use e.g. 512"
    CogWriter(path, SMALL, dtype="uint8", nodata=255, block=16, compress="ZSTD")  # accepted
    with pytest.raises(ConfigError) as err:
        CogWriter(path, SMALL, dtype="uint8", nodata=255, compress="lzw")
    assert str(err.value) == "compress='lzw' is not supported; use 'deflate' or 'zstd'"
    with pytest.raises(ConfigError) as err:
        CogWriter(path, SMALL, dtype="uint8", nodata=255, resampling="median")
    assert str(err.value).startswith("resampling='median' is unknown; use one of nearest, mode, average,")
    with pytest.raises(ConfigError) as err:
        CogWriter(path, SMALL, dtype="int16", nodata=255, classes=ABC)
    assert str(err.value) == "a class raster must be uint8 (GDAL color tables), got dtype=int16; use uint8"
    for ids in ([0, 0], [-1, 2], [0, 255]):
        with pytest.raises(ConfigError) as err:
            CogWriter(
                path,
                SMALL,
                dtype="uint8",
                nodata=255,
                classes=[ClassInfo(i, f"c{i}", "#000000") for i in ids],
            )
        assert str(err.value) == (
            f"class ids {ids} must be unique and in 0..254 (255 is nodata); fix the model's classes"
        )
    CogWriter(path, SMALL, dtype="uint8", nodata=255, classes=[ClassInfo(254, "last", "#000000")])  # accepted
    missing = tmp_path / "none" / "x.tif"
    with pytest.raises(WriteError) as err:
        CogWriter(missing, SMALL, dtype="uint8", nodata=255).open()
    assert str(err.value) == f"output folder {missing.parent} does not exist; create it first"
    assert not missing.parent.exists()


def test_a_truncated_cog_is_reported_as_incomplete(tmp_path: Path) -> None:
    """What a full disk leaves behind during the COG build: the read-back check names it."""
    from geounet.write import verify_cog

    values = np.random.default_rng(2).integers(0, 255, (1024, 1024)).astype(np.uint8)
    grid = Grid(shape=values.shape, transform=SMALL.transform, crs=SMALL.crs)
    whole = write_array(tmp_path / "whole.tif", values, grid, block=256)
    verify_cog(whole, whole)  # a complete file passes
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 4])
    target = tmp_path / "classes.tif"
    with pytest.raises(WriteError) as err:
        verify_cog(cut, target)
    message = str(err.value)
    assert message.startswith(f"COG {target} came out incomplete (")
    assert message.endswith("); the disk is probably full: free space and rerun") and "\n" not in message


def test_a_corrupt_overview_is_reported_although_the_full_resolution_reads(tmp_path: Path) -> None:
    """The read-back check reads every overview level too: garbage in the first data bytes (a COG
    stores the smallest overview first) leaves the full-resolution pixels intact."""
    from geounet.write import verify_cog

    values = np.random.default_rng(2).integers(0, 255, (1024, 1024)).astype(np.uint8)
    grid = Grid(shape=values.shape, transform=SMALL.transform, crs=SMALL.crs)
    data = bytearray(write_array(tmp_path / "whole.tif", values, grid, block=256).read_bytes())
    at = len(data) // 20
    data[at : at + 2000] = bytes(i * 37 % 256 for i in range(2000))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    with rasterio.open(bad) as src:
        np.testing.assert_array_equal(src.read(1), values)
    with pytest.raises(WriteError) as err:
        verify_cog(bad, tmp_path / "classes.tif")
    assert str(err.value).startswith(f"COG {tmp_path / 'classes.tif'} came out incomplete (IReadBlock failed")


def test_color_table_and_category_names() -> None:
    from geounet.write import category_aux_xml, color_table

    table = color_table(ABC)
    assert len(table) == 256 and table[0] == (31, 120, 180, 255) and table[1] == (51, 160, 44, 255)
    assert all(table[v] == (0, 0, 0, 0) for v in range(256) if v not in (0, 1, 3))
    root = ET.fromstring(category_aux_xml(ABC))
    band = root.find("PAMRasterBand")
    assert root.tag == "PAMDataset" and band is not None and band.get("band") == "1"
    assert [c.text or "" for c in band.iter("Category")] == ["water", "forest", "", "urban"]
    assert category_aux_xml(ABC).endswith("</PAMDataset>\n")


def test_an_error_inside_the_block_or_abort_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "classes.tif"
    with pytest.raises(RuntimeError, match="boom"), CogWriter(path, SMALL, dtype="uint8", nodata=255) as w:
        w.write(Window(0, 0, 8, 8), np.ones((8, 8), np.uint8))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    w = CogWriter(path, SMALL, dtype="uint8", nodata=255, classes=ABC)
    w.open()
    w.write(Window(0, 0, 8, 8), np.ones((8, 8), np.uint8))
    w.abort()
    assert list(tmp_path.iterdir()) == []
    w.abort()  # twice is fine
    w.close()  # and closing an aborted writer does nothing
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WriteError, match="write\\(\\) outside the with-block"):
        w.write(Window(0, 0, 8, 8), np.ones((8, 8), np.uint8))


def test_a_scratch_file_that_cannot_be_created_is_a_write_error_and_leaves_nothing(tmp_path: Path) -> None:
    """GDAL refusing the scratch file (here: its hidden name, longer than the target's, passes the
    255-byte limit of a file name) is a WriteError naming the file, not a bare rasterio error."""
    path = tmp_path / ("c" * 236 + ".tif")
    with pytest.raises(WriteError) as err, CogWriter(path, SMALL, dtype="uint8", nodata=255, classes=ABC):
        pass
    message = str(err.value)
    assert message.startswith(f"cannot create {tmp_path}/.{path.name}.") and ".parts.tif: " in message
    assert message.endswith("; check disk space and permissions")
    assert list(tmp_path.iterdir()) == []


def test_a_cog_that_cannot_be_moved_into_place_is_a_write_error_and_leaves_no_scratch(tmp_path: Path) -> None:
    """The last step, the rename onto ``path``, failing (a folder of that name is in the way) is a
    WriteError naming the COG; the scratch and the finished temporary COG are both removed."""
    path = tmp_path / "classes.tif"
    (path / "keep").mkdir(parents=True)  # a non-empty folder: os.replace cannot put a file there
    with pytest.raises(WriteError) as err:
        write_array(path, _classes_array(), SMALL, nodata=255, classes=ABC)
    assert str(err.value).startswith(f"cannot write COG {path}: ")
    assert str(err.value).endswith("; check disk space and permissions")
    assert path.is_dir() and [p.name for p in path.iterdir()] == ["keep"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch, no temporary COG


def test_cog_options_by_default_make_the_cog_the_writer_makes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Ray parts assembly (``parts.build_cog``) converts with ``cog_options``' defaults: the
    result must have the writer's default layout (512 px blocks, deflate, predictor 2), pixels
    intact, and GDAL must understand every default (it only logs a warning for what it ignores)."""
    import rasterio.shutil

    caplog.set_level(logging.WARNING, logger="rasterio")

    from geounet.write import cog_options

    values = np.random.default_rng(3).integers(0, 4, (1100, 1030)).astype(np.uint8)
    grid = Grid(shape=values.shape, transform=SMALL.transform, crs=SMALL.crs)
    written = write_array(tmp_path / "w.tif", values, grid)
    copied = tmp_path / "c.tif"
    rasterio.shutil.copy(written, copied, driver="COG", **cog_options(dtype="uint8", resampling="mode"))
    with rasterio.open(written) as w, rasterio.open(copied) as c:
        for src in (w, c):
            assert src.block_shapes == [(512, 512)] and src.compression.name.lower() == "deflate"
            assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
            np.testing.assert_array_equal(src.read(1), values)
        assert c.overviews(1) == w.overviews(1) == [2, 4]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("rasterio")] == []
    valid, errors, warnings = cog_validate(str(copied), strict=True)
    assert valid and not errors and not warnings


def test_gdal_understands_every_option_the_writer_passes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """GDAL ignores a creation option it does not know, or a value it does not accept, with only a
    logged warning (a misspelt key silently drops the setting): writing must log none, for the
    scratch file and the COG, classes and floats, either compression, any thread count."""
    caplog.set_level(logging.WARNING, logger="rasterio")
    write_array(tmp_path / "c.tif", _classes_array(), SMALL, nodata=255, classes=ABC)
    floats = np.linspace(0, 1, SMALL.rows * SMALL.cols, dtype=np.float32).reshape(SMALL.shape)
    write_array(tmp_path / "f.tif", floats, SMALL, resampling="average", compress="zstd", num_threads=2)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("rasterio")] == []
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".qml", ".qml", ".tif", ".tif", ".xml"]
