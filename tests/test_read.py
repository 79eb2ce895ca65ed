"""Reading chips from real rasters: windowed reads, mirror padding, valid masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rasterio.errors import RasterioIOError
from rasterio.transform import from_origin

from geounet import read
from geounet.errors import InputError, InputNotFoundError, first_line
from geounet.geo import Window
from geounet.tiling import Padding, grid


@pytest.fixture(scope="module")
def landsat(data_dir: Path) -> Path:
    return data_dir / "landsat7-rgb" / "RGB.byte.tif"


def _edge_tile_with_nodata(ds, plan):
    """A tile padded past the raster edge whose inside part is part valid, part nodata border."""
    for t in plan:
        inner = t.read.clip(ds.height, ds.width)
        if not t.padding.any:
            continue
        mask = ds.dataset_mask(
            window=rasterio.windows.Window(inner.col, inner.row, inner.width, inner.height)
        )
        if 0.15 < (mask > 0).mean() < 0.85:
            return t, inner
    raise AssertionError("no mixed edge tile")


def test_edge_tile_is_mirror_filled_and_padded_from_real_pixels(landsat: Path) -> None:
    """Valid pixels as read; every nodata pixel takes the value mirrored across (or at) one of its
    nearest valid pixels (brute force); the part past the raster edge is numpy's reflect of that."""
    with read.open_raster(landsat) as ds:
        plan = grid((ds.height, ds.width), tile=96, halo=16, align=16)
        tile, inner = _edge_tile_with_nodata(ds, plan)
        chip = read.chip(ds, tile, bands=(1, 2, 3))
        win = rasterio.windows.Window(inner.col, inner.row, inner.width, inner.height)
        raw = ds.read(window=win).astype(np.float32)
        valid = ds.dataset_mask(window=win) > 0
    p = tile.padding
    h, w = inner.height, inner.width
    top, left = p.top, p.left
    filled = chip.data[:, top : top + h, left : left + w]
    np.testing.assert_array_equal(filled[:, valid], raw[:, valid])
    np.testing.assert_array_equal(chip.valid[top : top + h, left : left + w], valid)
    outside = np.ones(chip.valid.shape, bool)
    outside[top : top + h, left : left + w] = False
    assert outside.any() and not chip.valid[outside].any()
    pad = ((0, 0), (p.top, p.bottom), (p.left, p.right))
    np.testing.assert_array_equal(chip.data, np.pad(filled, pad, mode="reflect"))
    vr, vc = np.nonzero(valid)
    for r, c in zip(*np.nonzero(~valid), strict=True):
        d2 = (vr - r) ** 2 + (vc - c) ** 2
        candidates = []
        for qr, qc in zip(vr[d2 == d2.min()], vc[d2 == d2.min()], strict=True):
            mr, mc = min(max(2 * qr - r, 0), h - 1), min(max(2 * qc - c, 0), w - 1)
            candidates.append(raw[:, mr, mc] if valid[mr, mc] else raw[:, qr, qc])
        assert any(np.array_equal(filled[:, r, c], v) for v in candidates), (r, c)


def test_top_left_tile_reflects_instead_of_zero_padding(tmp_path: Path, landsat: Path) -> None:
    import rasterio

    # a crop of the real scene inside its valid area, saved as its own GeoTIFF
    with rasterio.open(landsat) as src:
        win = rasterio.windows.Window(300, 200, 200, 150)
        arr = src.read(window=win)
        crop_valid = src.dataset_mask(window=win) > 0
        profile = src.profile | {"width": 200, "height": 150, "transform": src.window_transform(win)}
    path = tmp_path / "crop.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    assert crop_valid.all(), "the crop must hold valid pixels only"
    with read.open_raster(path) as ds:
        plan = grid((ds.height, ds.width), tile=64, halo=16, align=16)
        chip = read.chip(ds, plan[0], bands=(1, 2, 3))
    expected = np.pad(arr[:, :48, :48].astype(np.float32), ((0, 0), (16, 0), (16, 0)), mode="reflect")
    np.testing.assert_array_equal(chip.data, expected)
    np.testing.assert_array_equal(chip.data[:, 15, 16:], arr[:, 1, :48].astype(np.float32))
    assert not chip.valid[:16].any() and chip.valid[16:, 16:].all()


def test_nodata_is_filled_by_mirroring_valid_pixels(landsat: Path) -> None:
    with read.open_raster(landsat) as ds:
        plan = grid((ds.height, ds.width), tile=64, halo=0)
        tile = plan[2]  # top edge, cols 128..192: partly in the nodata border
        chip = read.chip(ds, tile, bands=(1, 2, 3))
        raw = ds.read(window=read.RioWindow(128, 0, 64, 64)).astype(np.float32)
    valid = chip.valid
    assert valid.any() and not valid.all()
    np.testing.assert_array_equal(chip.data[:, valid], raw[:, valid])
    assert (chip.data[:, ~valid].max(0) > 0).all(), "nodata pixels are filled with real values, not zeros"


def test_band_mapping_by_count_explicit_and_errors(landsat: Path) -> None:
    with read.open_raster(landsat) as ds:
        assert read.band_indexes(ds, ["red", "green", "blue"]) == (1, 2, 3)
        assert read.band_indexes(ds, ["blue", "green", "red"], explicit=[3, 2, 1]) == (3, 2, 1)
        with pytest.raises(InputError, match="expects 4: red,green,blue,nir; pass --bands"):
            read.band_indexes(ds, ["red", "green", "blue", "nir"])
        with pytest.raises(InputError, match="--bands 1,9 must name 2 band"):
            read.band_indexes(ds, ["a", "b"], explicit=[1, 9])


def test_missing_and_corrupt_files_raise_typed_errors(tmp_path: Path, landsat: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"), read.open_raster(tmp_path / "nope.tif"):
        pass
    broken = tmp_path / "broken.tif"
    broken.write_bytes(landsat.read_bytes()[:5000])
    # the header may parse and the pixels not: either way a typed error naming the file
    with pytest.raises((InputError, read.ReadError)) as err, read.open_raster(broken) as ds:
        read.chip(ds, grid((ds.height, ds.width), tile=64, halo=0)[40], bands=(1, 2, 3))
    assert str(broken) in str(err.value)


# --------------------------------------------------------------------------- small rasters, exact rules


def _tif(path: Path, data: np.ndarray, **extra) -> Path:
    """A small GeoTIFF of ``data`` (bands, rows, cols) with optional descriptions / nodata."""
    descriptions = extra.pop("descriptions", None)
    profile = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1], "width": data.shape[2],
               "dtype": data.dtype.name, "crs": "EPSG:32633", "transform": from_origin(0, 100, 1, 1)} | extra  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, 1):
                dst.set_band_description(i, d)
    return path


def test_bands_are_matched_by_description_in_the_models_order(tmp_path: Path) -> None:
    data = np.zeros((4, 4, 4), np.uint16)
    path = _tif(tmp_path / "s2.tif", data, descriptions=["B02", "B03", "b04", "B08"])
    with read.open_raster(path) as ds:
        assert read.band_indexes(ds, ["B08", "b04", "b02"]) == (4, 3, 1)  # case-insensitive, any subset
        assert read.band_indexes(ds, ["red", "green", "blue", "nir"]) == (1, 2, 3, 4)  # same count: in order
        assert read.band_indexes(ds, ["b02", "red", "b03", "nir"]) == (
            1,
            2,
            3,
            4,
        )  # some names only: in order
        assert read.band_indexes(ds, ["x"], explicit=[4]) == (4,)
        assert read.band_indexes(ds, ["x", "y"], explicit=(np.int64(2), 1)) == (2, 1)  # type: ignore[arg-type]
        assert all(type(i) is int for i in read.band_indexes(ds, ["x"], explicit=(np.int64(2),)))  # type: ignore[arg-type]
        with pytest.raises(InputError) as err:
            read.band_indexes(ds, ["red", "nir"], explicit=[1])
        assert str(err.value) == ("--bands 1 must name 2 band(s) in 1..4 for the model's bands red,nir; "
                                  "fix the band list")  # fmt: skip
        for bad in ([0, 1], [1, 5]):
            with pytest.raises(InputError, match=r"must name 2 band\(s\) in 1\.\.4"):
                read.band_indexes(ds, ["red", "nir"], explicit=bad)
        with pytest.raises(InputError) as err:
            read.band_indexes(ds, ["red", "nir"])
    assert str(err.value) == (
        f"{str(path)!r} has 4 band(s) (descriptions: B02, B03, b04, B08) but the model expects 2: red,nir; "
        "pass --bands with 2 1-based band numbers in the model's order"
    )
    plain = _tif(tmp_path / "plain.tif", np.zeros((2, 4, 4), np.uint8))
    with read.open_raster(plain) as ds, pytest.raises(InputError, match=r"\(descriptions: -, -\)"):
        read.band_indexes(ds, ["red", "green", "blue"])


def test_open_raster_errors_and_gdal_settings(tmp_path: Path) -> None:
    missing = tmp_path / "missing.tif"
    with pytest.raises(InputNotFoundError) as err, read.open_raster(missing):
        pass
    assert str(err.value) == f"input raster {str(missing)!r} does not exist; check the path"
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(InputError) as unreadable, read.open_raster(junk):
        pass
    message = str(unreadable.value)
    assert message.startswith(f"input raster {str(junk)!r} cannot be read by GDAL (")
    assert message.endswith("); check that it is a complete GeoTIFF/COG/JPEG2000/PNG/JPEG file")
    assert "\n" not in message
    local = _tif(tmp_path / "local.tif", np.zeros((1, 4, 4), np.uint8))
    with read.open_raster(local) as ds:
        env = rasterio.env.getenv()
        assert ds.count == 1 and env["GDAL_NUM_THREADS"] == "ALL_CPUS"
        assert env["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    with rasterio.MemoryFile() as mem:  # a /vsi path: remote rules, GDAL's threads stay off
        with mem.open(driver="GTiff", count=1, height=4, width=4, dtype="uint8") as dst:
            dst.write(np.ones((1, 4, 4), np.uint8))
        with read.open_raster(mem.name) as ds:
            assert ds.read(1).sum() == 16
            env = rasterio.env.getenv()
            assert "GDAL_NUM_THREADS" not in env and env["VSI_CACHE"] in (True, "TRUE")


def test_a_url_is_not_looked_up_on_disk() -> None:
    """Remote paths go to GDAL (here: nothing listens on the loopback port), never to a file check."""
    for url in ("http://127.0.0.1:9/scene.tif", "/vsicurl/http://127.0.0.1:9/scene.tif"):
        with pytest.raises(InputError) as err, read.open_raster(url):
            pass
        assert not isinstance(err.value, InputNotFoundError)
        assert f"input raster {url!r} cannot be read by GDAL" in str(err.value)


def test_a_photo_without_georeferencing_opens_quietly(tmp_path: Path) -> None:
    import warnings

    photo = tmp_path / "photo.png"
    with rasterio.open(photo, "w", driver="PNG", count=3, height=8, width=6, dtype="uint8") as dst:
        dst.write(np.full((3, 8, 6), 7, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with read.open_raster(photo) as ds:
            assert ds.crs is None and ds.shape == (8, 6)


def _brute_fill(data: np.ndarray, valid: np.ndarray) -> list[set[tuple[float, ...]]]:
    """Per invalid pixel (row-major order): the values mirror_fill may give it (ties in distance)."""
    h, w = valid.shape
    vr, vc = np.nonzero(valid)
    out = []
    for r, c in zip(*np.nonzero(~valid), strict=True):
        d2 = (vr - r) ** 2 + (vc - c) ** 2
        options = set()
        for qr, qc in zip(vr[d2 == d2.min()], vc[d2 == d2.min()], strict=True):
            mr, mc = min(max(2 * qr - r, 0), h - 1), min(max(2 * qc - c, 0), w - 1)
            src = (mr, mc) if valid[mr, mc] else (qr, qc)
            options.add(tuple(data[:, src[0], src[1]].tolist()))
        out.append(options)
    return out


@settings(max_examples=150, deadline=None)
@given(
    valid=hnp.arrays(bool, st.tuples(st.integers(1, 7), st.integers(1, 7))),
    seed=st.integers(0, 2**16),
)
def test_mirror_fill_is_the_reflection_across_the_nearest_valid_pixel(valid: np.ndarray, seed: int) -> None:
    # what lies under invalid pixels is arbitrary (a nodata value, garbage): never a source
    data = np.random.default_rng(seed).integers(1, 1000, (2, *valid.shape)).astype(np.float32)
    filled = read.mirror_fill(data, valid)
    np.testing.assert_array_equal(filled[:, valid], data[:, valid])
    if valid.all() or not valid.any():
        np.testing.assert_array_equal(filled, data)  # nothing to fill, or nothing to fill from
        return
    got = [tuple(v.tolist()) for v in filled[:, ~valid].T]
    for value, options in zip(got, _brute_fill(data, valid), strict=True):
        assert value in options


def test_mirror_fill_reflects_across_the_edge_and_falls_back_to_the_edge_pixel() -> None:
    d = np.array([[[0.0, 0.0, 5.0, 6.0, 7.0]]])
    assert read.mirror_fill(d, np.array([[False, False, True, True, True]]))[0, 0].tolist() == [7, 6, 5, 6, 7]
    # the mirror of the first pixel (index 4) is past the valid run: clipped to the last pixel, then used
    d = np.array([[[0.0, 0.0, 0.0, 5.0, 6.0]]])
    assert read.mirror_fill(d, np.array([[False, False, False, True, True]]))[0, 0].tolist() == [
        6,
        6,
        6,
        5,
        6,
    ]
    # a mirror that lands on nodata again: the nearest valid pixel's own value
    d = np.array([[[3.0, 0.0, 0.0]]])
    assert read.mirror_fill(d, np.array([[True, False, False]]))[0, 0].tolist() == [3, 3, 3]
    column = np.array([[[0.0], [0.0], [5.0], [6.0], [7.0]]])
    mask = np.array([[False], [False], [True], [True], [True]])
    assert read.mirror_fill(column, mask)[0, :, 0].tolist() == [7, 6, 5, 6, 7]


@pytest.mark.parametrize(
    ("shape", "pad"),
    [((5, 6), Padding(1, 2, 3, 0)), ((5, 6), Padding(0, 3, 0, 1)), ((5, 6), Padding(2, 0, 1, 2)),
     ((2, 2), Padding(1, 1, 1, 1)), ((2, 3), Padding(0, 1, 2, 0))],
)  # fmt: skip
def test_mirror_pad_is_numpys_reflect_per_side(shape: tuple[int, int], pad: Padding) -> None:
    data = np.arange(2 * shape[0] * shape[1], dtype=np.float32).reshape(2, *shape)
    want = np.pad(data, ((0, 0), (pad.top, pad.bottom), (pad.left, pad.right)), mode="reflect")
    np.testing.assert_array_equal(read.mirror_pad(data, pad), want)
    mask = read._pad_mask(np.ones(shape, bool), pad)
    assert mask.shape == want.shape[1:] and mask.sum() == data[0].size
    assert mask[pad.top : pad.top + shape[0], pad.left : pad.left + shape[1]].all()


def test_mirror_pad_repeats_a_single_row_or_column() -> None:
    row = np.array([[[1.0, 2.0, 3.0]]])
    assert read.mirror_pad(row, Padding(2, 1, 1, 1))[0].tolist() == [[2, 1, 2, 3, 2]] * 4
    col = np.array([[[1.0], [2.0], [3.0]]])
    assert read.mirror_pad(col, Padding(1, 1, 2, 0))[0].tolist() == [
        [2, 2, 2], [1, 1, 1], [2, 2, 2], [3, 3, 3], [2, 2, 2]]  # fmt: skip
    unpadded = np.ones((1, 2, 2))
    assert read.mirror_pad(unpadded, Padding(0, 0, 0, 0)) is unpadded


def test_array_chip_is_the_in_memory_twin_of_chip(tmp_path: Path) -> None:
    """Every tile of a small plan: the same padded data and valid mask from the array and the file."""
    image = np.random.default_rng(3).integers(0, 255, (2, 37, 29)).astype(np.uint8)
    path = _tif(tmp_path / "twin.tif", image)
    plan = grid((37, 29), tile=24, halo=4)
    with read.open_raster(path) as ds:
        for tile in plan:
            a, b = read.array_chip(image, tile), read.chip(ds, tile, bands=(1, 2))
            assert a.data.dtype == b.data.dtype == np.float32 and a.data.shape == (2, 24, 24)
            assert a.valid.dtype == b.valid.dtype == bool  # a mask, to index pixels with
            np.testing.assert_array_equal(a.data, b.data)
            np.testing.assert_array_equal(a.valid, b.valid)
            inside = tile.read.clip(37, 29).relative_to(tile.read)
            assert a.valid.sum() == inside.size and a.valid[inside.to_slices()].all()
            assert a.core_valid.shape == tile.core.shape and a.core_valid.all()
    with read.open_raster(path) as ds:
        swapped = read.chip(ds, plan[0], bands=(2, 1))
    np.testing.assert_array_equal(swapped.data, read.array_chip(image[::-1], plan[0]).data)


def test_nodata_core_pixels_are_invalid_and_a_fully_empty_window_stays_as_read(tmp_path: Path) -> None:
    image = np.full((1, 16, 16), 9, np.uint8)
    image[:, :, :8] = 0  # the left half is nodata
    path = _tif(tmp_path / "half.tif", image, nodata=0)
    plan = grid((16, 16), tile=8, halo=0)
    with read.open_raster(path) as ds:
        empty = read.chip(ds, plan[0], bands=(1,))
        full = read.chip(ds, plan[1], bands=(1,))
        mixed = read.chip(ds, grid((16, 16), tile=16, halo=0)[0], bands=(1,))
    assert not empty.valid.any() and not empty.core_valid.any() and (empty.data == 0).all()
    assert full.valid.all() and (full.data == 9).all()
    assert (mixed.valid == (image[0] == 9)).all() and (mixed.data == 9).all()  # nodata mirror-filled


def test_read_window_reads_the_part_inside_the_raster(tmp_path: Path) -> None:
    image = np.arange(3 * 6 * 5, dtype=np.int16).reshape(3, 6, 5)
    path = _tif(tmp_path / "w.tif", image)
    np.testing.assert_array_equal(read.read_window(path, Window(-2, 1, 5, 10)), image[:, 0:3, 1:5])
    np.testing.assert_array_equal(
        read.read_window(path, Window(2, 0, 2, 2), bands=[3, 1]), image[[2, 0], 2:4, 0:2]
    )


def test_a_failing_window_read_is_a_read_error_naming_the_window(tmp_path: Path) -> None:
    from rasterio.shutil import copy as rio_copy

    image = np.random.default_rng(5).integers(0, 255, (1, 512, 512)).astype(np.uint8)
    cog = tmp_path / "whole.tif"
    rio_copy(_tif(tmp_path / "src.tif", image), cog, driver="COG", compress="deflate", blocksize=256)
    broken = tmp_path / "cut.tif"
    broken.write_bytes(cog.read_bytes()[: cog.stat().st_size // 2])  # the header is first (COG), data cut
    with read.open_raster(broken) as ds:
        tile = grid((512, 512), tile=256, halo=0)[3]
        with pytest.raises(read.ReadError) as err:
            read.chip(ds, tile, bands=(1,))
    message = str(err.value)
    with rasterio.open(broken) as ds, pytest.raises(RasterioIOError) as gdal:
        ds.read(1, window=read.RioWindow(256, 256, 256, 256))
    assert message.startswith(
        f"reading window {tile.read} of {str(broken)!r} failed ({first_line(gdal.value)}); "
    )
    assert message.endswith("the file may be truncated or corrupt: re-download or re-export it")
    assert "\n" not in message


def test_any_alpha_above_zero_is_data_and_only_transparent_pixels_are_invalid(tmp_path: Path) -> None:
    """GDAL's mask of an RGBA raster is its alpha band: a faint edge pixel (alpha 1, e.g. from an
    antialiased warp) is data; only alpha 0 is nodata, and it is mirror-filled from its row."""
    data = np.zeros((4, 4, 4), np.uint8)
    data[:3] = np.arange(1, 17, dtype=np.uint8).reshape(4, 4)
    data[3] = [[0, 1, 128, 255]] * 4
    path = _tif(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    with read.open_raster(path) as ds:
        chip = read.chip(ds, grid((4, 4), tile=4, halo=0)[0], bands=(1, 2, 3))
    np.testing.assert_array_equal(chip.valid, data[3] > 0)
    np.testing.assert_array_equal(chip.data[:, :, 1:], data[:3, :, 1:])
    np.testing.assert_array_equal(chip.data[:, :, 0], data[:3, :, 2])  # mirrored across column 1
