"""Polygon pieces → GeoDataFrames in map coordinates, with attributes; block by block or whole.

Pure math, no I/O. :func:`to_frame` maps dissolved pieces (pixel coordinates) to map
coordinates with the grid's affine transform, simplifies them as a coverage when asked
(shared edges stay shared: no gaps or overlaps between neighbours), drops polygons under
``min_area`` and computes ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m`` and
``mean_confidence``.

:func:`vectorize_block` and :func:`dissolve_seams` are the API for vectorizing blocks
where and when they are produced (a worker, a thread beside the model): a block gives its
final polygons as a frame at once, plus its seam pieces (a small picklable
:class:`~geounet.vectorize.parts.BlockParts`); all seam pieces together give the rest.

Example:
    >>> import numpy as np
    >>> from geounet.geo import Grid, Window
    >>> from geounet.model import ClassInfo
    >>> grid, classes = Grid(shape=(3, 4)), [ClassInfo(1, "field", "#ffff00")]
    >>> a = np.array([[1, 1, 255, 1], [255, 1, 1, 1], [1, 255, 255, 255]], dtype=np.uint8)
    >>> left, seam_a = vectorize_block(a[:, :2], window=Window(0, 0, 3, 2), grid=grid, classes=classes)
    >>> right, seam_b = vectorize_block(a[:, 2:], window=Window(0, 2, 3, 2), grid=grid, classes=classes)
    >>> len(left), len(right), dissolve_seams([seam_a, seam_b], grid=grid, classes=classes).area_m2.tolist()
    (1, 0, [6.0])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from pyproj import CRS, Geod

from geounet.errors import ConfigError
from geounet.geo import Grid, Window
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.vectorize.outline import Outlines
from geounet.vectorize.parts import BlockParts, Parts, dissolve, seam_mask, seam_parts, trace_block

#: Columns of the polygon table, in order (``mean_confidence`` only with a confidence raster).
COLUMNS = ("class_id", "class_name", "area_m2", "perimeter_m", "mean_confidence", "geometry")

#: Where GIS software (QGIS, GDAL's default geotransform as QGIS reads it) draws a photo
#: without georeferencing: x = column, y = -row, so polygons land on the image.
PHOTO_TRANSFORM = Affine(1, 0, 0, 0, -1, 0)


def to_frame(
    parts: Parts,
    *,
    grid: Grid,
    classes: Sequence[ClassInfo],
    simplify: float | None = None,
    min_area: float = 0.0,
    with_confidence: bool = False,
) -> gpd.GeoDataFrame:
    """Dissolved pieces → GeoDataFrame in map coordinates, simplified, filtered, with attributes.

    Args:
        parts: output of :func:`~geounet.vectorize.parts.dissolve` (pixel coordinates).
        grid: the raster's grid (transform and CRS of the result).
        classes: id → name; pieces of ids not listed get the name ``class_<id>``.
        simplify: tolerance in map units for the topology-preserving coverage
            simplification; None = half a pixel; 0 = keep the exact pixel outlines.
        min_area: drop polygons smaller than this (map units²) after simplification.
        with_confidence: add ``mean_confidence`` (NaN where no valid confidence pixel).
    """
    tolerance = checked_tolerance(simplify, min_area, grid)
    if isinstance(parts.geometry, Outlines) and exact_outlines(tolerance, grid):
        geoms = parts.shapes(map_transform(grid))  # straight to map coordinates: one GEOS copy
    else:
        geoms = _simplify(parts.shapes(), tolerance, grid)
    # The attributes are all the frame needs now: the vertex arrays (117 MB for the dissolved
    # seams of a 6000² scene) can go while the frame is built, if the caller holds no reference.
    parts = dataclasses.replace(parts, geometry=np.empty(0, dtype=object))
    return _frame(
        parts,
        geoms,
        grid,
        classes,
        exact=exact_outlines(tolerance, grid),
        min_area=min_area,
        with_confidence=with_confidence,
    )


def vectorize_block(
    array: np.ndarray,
    *,
    window: Window,
    grid: Grid,
    classes: Sequence[ClassInfo],
    confidence: np.ndarray | None = None,
    nodata: int = NODATA_CLASS,
    confidence_nodata: float | None = None,
    simplify: float | None = None,
    min_area: float = 0.0,
) -> tuple[gpd.GeoDataFrame, BlockParts]:
    """One in-memory block → (its final polygons as a frame, its seam pieces).

    ``window`` places the block (its own pixels, no halo) in ``grid``, the whole raster's
    grid. The frame holds the regions that touch no internal block edge, in map
    coordinates with all attributes (as :func:`to_frame`); the seam pieces go to
    :func:`dissolve_seams` with those of every other block. The frames of all blocks plus
    that result hold the same polygons as :func:`geounet.vectorize.iter_polygons`. With a
    tolerance that needs the whole coverage (``simplify`` >= sqrt(pixel area / 2)) every
    piece is a seam piece and the frame is empty.
    """
    tolerance = checked_tolerance(simplify, min_area, grid)
    traced = trace_block(
        array, window=window, confidence=confidence, nodata=nodata, confidence_nodata=confidence_nodata
    )
    n = len(traced.pixels)
    seam = seam_mask(window, grid.shape, traced.edges, n)
    if not exact_outlines(tolerance, grid):
        seam[:] = True
    final = traced.parts(~seam, window, map_transform(grid))
    frame = _frame(
        final,
        final.shapes(),
        grid,
        classes,
        exact=True,
        min_area=min_area,
        with_confidence=confidence is not None,
    )
    return frame, seam_parts(window, traced.pieces(seam, window), seam, traced.edges)


def dissolve_seams(
    seams: Iterable[BlockParts],
    *,
    grid: Grid,
    classes: Sequence[ClassInfo],
    simplify: float | None = None,
    min_area: float = 0.0,
    with_confidence: bool = False,
) -> gpd.GeoDataFrame:
    """The seam pieces of all blocks (from :func:`vectorize_block`), dissolved, as one frame."""
    return to_frame(
        dissolve(seams),
        grid=grid,
        classes=classes,
        simplify=simplify,
        min_area=min_area,
        with_confidence=with_confidence,
    )


def checked_tolerance(simplify: float | None, min_area: float, grid: Grid) -> float:
    """The simplification tolerance in map units (None = half a pixel), after checking both options."""
    if min_area < 0:
        raise ConfigError(f"min_area={min_area} must be >= 0 (map units²)")
    tolerance = 0.5 * min(grid.resolution) if simplify is None else float(simplify)
    if tolerance < 0:
        raise ConfigError(f"simplify={simplify} must be >= 0 (map units; 0 disables simplification)")
    return tolerance


def exact_outlines(tolerance: float, grid: Grid) -> bool:
    """Whether simplifying with ``tolerance`` keeps the exact pixel outlines (see :func:`_simplify`)."""
    return tolerance <= 0 or tolerance**2 < 0.5 * grid.pixel_area


def map_transform(grid: Grid) -> Affine:
    """Pixel (col, row) → map (x, y); photos without georeferencing get :data:`PHOTO_TRANSFORM`."""
    if grid.crs is None and grid.transform == Affine.identity():
        return PHOTO_TRANSFORM
    return grid.transform


# -- internals ---------------------------------------------------------------------------


def _frame(
    parts: Parts,
    geoms: np.ndarray,
    grid: Grid,
    classes: Sequence[ClassInfo],
    *,
    exact: bool,
    min_area: float,
    with_confidence: bool,
) -> gpd.GeoDataFrame:
    """The table of ``parts`` with their map-space ``geoms``: attributes, filter, sort.

    For exact pixel outlines the area is the pixel count times the pixel area (exact, no
    geometry pass); otherwise that of the simplified geometry.
    """
    map_area = parts.pixels * grid.pixel_area if exact else shapely.area(geoms)
    area, perimeter = _measure(geoms, map_area, grid.crs)
    data: dict[str, Any] = {
        "class_id": parts.class_id.astype(np.int32),
        "class_name": _names(parts.class_id, classes),
        "area_m2": area,
        "perimeter_m": perimeter,
    }
    if with_confidence:
        with np.errstate(invalid="ignore", divide="ignore"):
            data["mean_confidence"] = np.where(
                parts.conf_count > 0, parts.conf_sum / np.maximum(parts.conf_count, 1), np.nan
            )
    frame = gpd.GeoDataFrame(pd.DataFrame(data), geometry=gpd.GeoSeries(geoms), crs=grid.crs)
    if min_area > 0:
        frame = frame[map_area >= min_area]
    frame = frame.sort_values(["class_id", "area_m2"], ascending=[True, False], kind="stable")
    return frame.reset_index(drop=True)


def _names(class_id: np.ndarray, classes: Sequence[ClassInfo]) -> np.ndarray:
    """Class names by id, looked up in one array operation (``class_<id>`` for unknown ids)."""
    if len(class_id) == 0:
        return np.zeros(0, dtype=object)
    ids, inverse = np.unique(class_id, return_inverse=True)
    names = {c.id: c.name for c in classes}
    table = np.array([names.get(int(i), f"class_{int(i)}") for i in ids], dtype=object)
    return table[inverse]


def _simplify(geoms: np.ndarray, tolerance: float, grid: Grid) -> np.ndarray:
    """Pixel-space pieces → map-space polygons, coverage-simplified with ``tolerance`` (map units).

    GEOS's coverage simplification (Visvalingam-Whyatt) removes vertices whose triangle
    is smaller than tolerance². Between pixel-corner vertices every non-degenerate
    triangle has at least half a pixel's area, so below sqrt(pixel_area / 2) it could
    only drop collinear vertices, and the tracer and the seam dissolve leave none:
    that case keeps the exact pixel outlines without running the simplifier.
    """
    if len(geoms) == 0:
        return geoms
    if exact_outlines(tolerance, grid):
        return _to_map(geoms, map_transform(grid))
    # Vertices at every pixel corner along every edge: neighbours then share identical
    # vertices (a valid coverage), which coverage simplification needs to keep them shared.
    dense = _to_map(shapely.segmentize(geoms, 1.0), map_transform(grid))
    return np.asarray(shapely.coverage_simplify(dense, tolerance, simplify_boundary=True), dtype=object)


def _to_map(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    if transform == Affine.identity():
        return geoms
    a, b, c, d, e, f = transform[:6]

    def apply(xy: np.ndarray) -> np.ndarray:
        return np.column_stack((a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f))

    return np.asarray(shapely.transform(geoms, apply), dtype=object)


def _measure(geoms: np.ndarray, map_area: np.ndarray, crs: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Area (m²) and perimeter (m): geodesic for geographic CRSs, planar in metres otherwise.

    A projected CRS's map unit is scaled to metres (its axis unit factor); without a CRS
    (photos) the figures stay in pixel units.
    """
    if len(geoms) == 0:
        return np.zeros(0), np.zeros(0)
    if crs is None:
        return np.asarray(map_area, dtype=np.float64), shapely.length(geoms)
    c = CRS.from_user_input(crs)
    if c.is_geographic:
        geod = c.get_geod() or Geod(ellps="WGS84")
        ap = np.array([geod.geometry_area_perimeter(g) for g in geoms])
        return np.abs(ap[:, 0]), ap[:, 1]
    unit = c.axis_info[0].unit_conversion_factor if c.axis_info else 1.0
    return np.asarray(map_area, dtype=np.float64) * unit**2, shapely.length(geoms) * unit


def combine(frames: Sequence[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """Frames of one raster as one, sorted by class and decreasing area like :func:`to_frame`."""
    items = [f for f in frames if len(f)] or list(frames[-1:])
    if len(items) == 1:
        return items[0]
    whole = gpd.GeoDataFrame(pd.concat(items, ignore_index=True), crs=items[0].crs)
    whole = whole.sort_values(["class_id", "area_m2"], ascending=[True, False], kind="stable")
    return whole.reset_index(drop=True)
