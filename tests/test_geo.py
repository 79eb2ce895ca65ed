"""Grids and windows against independent oracles: numpy slicing, rasterio's transforms, pyproj."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.transform
import rasterio.windows
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geounet.errors import InputError
from geounet.geo import Grid, Window, from_bounds, utm_crs

windows = st.builds(
    Window,
    row=st.integers(-20, 40),
    col=st.integers(-20, 40),
    height=st.integers(0, 30),
    width=st.integers(0, 30),
)


def _pixels(w: Window) -> set[tuple[int, int]]:
    return {(r, c) for r in range(w.row, w.row_stop) for c in range(w.col, w.col_stop)}


@settings(max_examples=200, deadline=None)
@given(w=windows, rows=st.integers(1, 40), cols=st.integers(1, 40))
def test_clip_is_the_set_of_pixels_inside_the_grid(w: Window, rows: int, cols: int) -> None:
    inside = {(r, c) for r, c in _pixels(w) if 0 <= r < rows and 0 <= c < cols}
    clipped = w.clip(rows, cols)
    assert _pixels(clipped) == inside and clipped.size == len(inside)
    assert clipped.height >= 0 and clipped.width >= 0
    if inside:
        assert (clipped.row, clipped.col) == min(inside)


@settings(max_examples=200, deadline=None)
@given(a=windows, b=windows)
def test_intersects_iff_a_pixel_is_shared(a: Window, b: Window) -> None:
    assert a.intersects(b) == bool(_pixels(a) & _pixels(b)) == b.intersects(a)


@settings(max_examples=100, deadline=None)
@given(w=windows, outer=windows)
def test_relative_to_shifts_the_origin(w: Window, outer: Window) -> None:
    rel = w.relative_to(outer)
    assert {(r + outer.row, c + outer.col) for r, c in _pixels(rel)} == _pixels(w)
    assert rel.shape == w.shape


def test_window_slices_stops_shape_and_size() -> None:
    a = np.arange(100).reshape(10, 10)
    w = Window(row=2, col=3, height=4, width=5)
    assert (w.row_stop, w.col_stop, w.shape, w.size) == (6, 8, (4, 5), 20)
    np.testing.assert_array_equal(a[w.to_slices()], a[2:6, 3:8])
    assert Grid((7, 9)).full_window() == Window(0, 0, 7, 9)


ROTATED = Affine(8.0, 3.0, 500000.0, 2.0, -9.0, 5800000.0)
NORTH_UP = Affine(10.0, 0.0, 500000.0, 0.0, -20.0, 5800000.0)


@pytest.mark.parametrize("transform", [NORTH_UP, ROTATED], ids=["north-up", "rotated"])
def test_grid_measures_and_coordinates_match_rasterio(transform: Affine) -> None:
    g = Grid(shape=(30, 50), transform=transform, crs="EPSG:32633")
    assert (g.rows, g.cols) == (30, 50) and g.is_georeferenced
    assert g.pixel_area == pytest.approx(abs(transform.a * transform.e - transform.b * transform.d))
    assert g.resolution == (abs(transform.a), abs(transform.e))
    # rasterio's own bounds of the four corners (array_bounds only handles north-up: take corners)
    xs, ys = rasterio.transform.xy(transform, [0, 0, 30, 30], [0, 50, 0, 50], offset="ul")
    assert g.bounds == pytest.approx((min(xs), min(ys), max(xs), max(ys)))
    for row, col in [(0, 0), (12.5, 7.5), (30, 50)]:
        x, y = rasterio.transform.xy(transform, [row], [col], offset="ul")
        assert g.xy(row, col) == pytest.approx((x[0], y[0]))
        assert g.rowcol(*g.xy(row, col)) == pytest.approx((row, col))
    r, c = rasterio.transform.rowcol(transform, [g.xy(12.5, 7.5)[0]], [g.xy(12.5, 7.5)[1]])
    assert (r[0], c[0]) == (12, 7)


def test_window_grid_matches_rasterio_window_transform() -> None:
    g = Grid(shape=(100, 200), transform=ROTATED, crs="EPSG:32633")
    for w in (Window(10, 20, 5, 6), Window(-16, -8, 40, 40)):
        sub = g.window_grid(w)
        expected = rasterio.windows.transform(
            rasterio.windows.Window(w.col, w.row, w.width, w.height), ROTATED
        )
        assert sub.transform.almost_equals(expected) and sub.shape == w.shape and sub.crs == g.crs


def test_one_pixel_grids_are_valid() -> None:
    assert Grid((1, 1)).shape == (1, 1) and Grid((1, 7)).cols == 7 and Grid((7, 1)).rows == 7


def test_photo_grid_is_not_georeferenced() -> None:
    g = Grid((4, 5))
    assert not g.is_georeferenced and g.transform == Affine.identity() and g.pixel_area == 1.0
    assert g.bounds == (0.0, 0.0, 5.0, 4.0)


@pytest.mark.parametrize(
    ("shape", "transform", "fragment"),
    [
        ((0, 5), NORTH_UP, "grid shape=(0, 5) must be positive"),
        ((5, -1), NORTH_UP, "grid shape=(5, -1) must be positive"),
        (
            (5, 0),
            NORTH_UP,
            "grid shape=(5, 0) must be positive in both axes; check the input raster or the AOI/resolution",
        ),
        ((5, 5), Affine(0, 0, 0, 0, 0, 0), "is degenerate; fix the georeferencing"),
    ],
)
def test_bad_grids_name_the_value(shape: tuple[int, int], transform: Affine, fragment: str) -> None:
    with pytest.raises(InputError, match=None) as err:
        Grid(shape=shape, transform=transform)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (12.6, 52.4, "EPSG:32633"),
        (-77.7, -24.5, "EPSG:32718"),
        (0.1, 0.1, "EPSG:32631"),
        (-179.9, 10, "EPSG:32601"),
    ],
)
def test_utm_zone_matches_pyproj(lon: float, lat: float, epsg: str) -> None:
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    [info] = query_utm_crs_info("WGS 84", AreaOfInterest(lon, lat, lon, lat))[:1]
    assert utm_crs(lon, lat) == epsg == f"EPSG:{info.code}"


def test_from_bounds_snaps_outward_to_the_resolution_lattice() -> None:
    bounds = (330001.0, 5814359.0, 345360.0, 5822041.0)
    g = from_bounds(bounds, crs="EPSG:32633", resolution=10)
    left, bottom, right, top = g.bounds
    assert (left, top) == (330000.0, 5822050.0) and (right, bottom) == (345360.0, 5814350.0)
    assert g.resolution == (10.0, 10.0) and g.crs == "EPSG:32633"
    assert left <= bounds[0] and bottom <= bounds[1] and right >= bounds[2] and top >= bounds[3]
    assert all(v % 10 == 0 for v in g.bounds)
    assert g.shape == (round((top - bottom) / 10), round((right - left) / 10))
    fine = from_bounds((0.0, 0.0, 2.0, 1.0), crs="EPSG:32633", resolution=0.5)
    assert fine.shape == (2, 4) and fine.resolution == (0.5, 0.5)


@pytest.mark.parametrize(
    ("bounds", "resolution"),
    [
        ((0, 0, 10, 10), 0),
        ((0, 0, 10, 10), -5),
        ((10, 0, 0, 10), 1),
        ((5, 0, 5, 10), 1),
        ((0, 10, 10, 10), 1),
    ],
)
def test_from_bounds_rejects_empty_bounds_and_bad_resolution(bounds: tuple, resolution: float) -> None:
    with pytest.raises(InputError, match="are empty; give left<right, bottom<top and a positive resolution"):
        from_bounds(bounds, crs="EPSG:32633", resolution=resolution)
