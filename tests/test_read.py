"""Reading chips from real rasters: windowed reads, mirror padding, valid masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geounet import read
from geounet.errors import InputError, InputNotFoundError
from geounet.tiling import grid


@pytest.fixture(scope="module")
def landsat(data_dir: Path) -> Path:
    return data_dir / "landsat7-rgb" / "RGB.byte.tif"


def _edge_tile_with_nodata(ds, plan):
    """A tile padded past the raster edge whose inside part is part valid, part nodata border."""
    for t in plan:
        inner = t.read.clip(ds.height, ds.width)
        if not t.padding.any:
            continue
        mask = ds.dataset_mask(window=rasterio.windows.Window(inner.col, inner.row, inner.width, inner.height))
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
