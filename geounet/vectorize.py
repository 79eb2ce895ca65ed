"""Class raster → polygons, block by block, with the polygons cut by block edges dissolved.

The work splits in three steps so a distributed executor can run the first one in
parallel workers and never hold a whole-region array in one process:

1. :func:`block_polygons` polygonizes one block (4-connected regions of equal class,
   nodata excluded) in **pixel coordinates of the whole grid**. Those are small
   integers, exact in floating point, so the edges two blocks share coincide exactly.
   Each piece carries its pixel count and confidence sum, and whether it touches an
   internal block edge (a *seam*).
2. :func:`dissolve` unions the seam pieces of one class that share an edge (not just a
   corner: 4-connectivity) into one polygon, so a field spanning four blocks is one
   feature. Pieces away from seams pass through untouched.
3. :func:`to_frame` maps pixel to map coordinates with the grid's affine transform,
   simplifies the polygons as a coverage (shared edges stay shared: no gaps or
   overlaps between neighbours), drops polygons under ``min_area`` and computes the
   attributes.

:func:`polygons` runs the three steps over a class raster file (the only I/O here:
windowed reads of the raster and the optional confidence raster); :func:`from_array`
runs them on an in-memory array. :func:`iter_polygons` yields the same polygons in chunks,
block by block, keeping only the seam pieces until the end, so memory stays flat
(whole-coverage simplification, tolerance >= sqrt(1/2) pixel, still holds them all).

Example:
    >>> import numpy as np
    >>> from geounet.geo import Grid
    >>> from geounet.model import ClassInfo
    >>> a = np.array([[1, 1, 2], [1, 2, 2], [255, 2, 1]], dtype=np.uint8)
    >>> classes = [ClassInfo(1, "field", "#ffff00"), ClassInfo(2, "forest", "#00aa00")]
    >>> gdf = from_array(a, grid=Grid(shape=a.shape), classes=classes, block=2, simplify=0)
    >>> sorted(zip(gdf.class_name, gdf.area_m2))
    [('field', 1.0), ('field', 3.0), ('forest', 4.0)]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS, Geod
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RioWindow
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geounet.errors import ConfigError, InputError, InputNotFoundError, ReadError
from geounet.geo import Grid, Window
from geounet.model import NODATA_CLASS, ClassInfo

#: Columns of the polygon table, in order (``mean_confidence`` only with a confidence raster).
COLUMNS = ("class_id", "class_name", "area_m2", "perimeter_m", "mean_confidence", "geometry")

_FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Parts:
    """Polygon pieces with their statistics: parallel arrays, geometries in pixel coordinates.

    ``conf_sum``/``conf_count`` hold the sum and count of valid confidence pixels under
    each piece (zeros without a confidence raster), so means stay exact after merging.
    """

    class_id: np.ndarray
    pixels: np.ndarray
    conf_sum: np.ndarray
    conf_count: np.ndarray
    geometry: np.ndarray

    def __len__(self) -> int:
        return len(self.class_id)

    @classmethod
    def of(cls, class_id: Any, pixels: Any, conf_sum: Any, conf_count: Any, geometry: Any) -> Parts:
        """Parts from sequences, with the canonical dtypes."""
        return cls(
            class_id=np.asarray(class_id, dtype=np.int64),
            pixels=np.asarray(pixels, dtype=np.int64),
            conf_sum=np.asarray(conf_sum, dtype=np.float64),
            conf_count=np.asarray(conf_count, dtype=np.int64),
            geometry=np.asarray(geometry, dtype=object),
        )

    @classmethod
    def concat(cls, parts: Iterable[Parts]) -> Parts:
        """All pieces of several :class:`Parts` in one."""
        items = list(parts)
        if not items:
            return cls.of([], [], [], [], [])
        return cls(*(np.concatenate([getattr(p, f) for p in items]) for f in cls.__dataclass_fields__))

    def select(self, index: np.ndarray) -> Parts:
        """The pieces at ``index`` (integer indices or boolean mask)."""
        return Parts(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class BlockParts:
    """The pieces of one block and, for the seam dissolve, which piece owns each edge pixel.

    ``top``/``bottom`` (length = block width) and ``left``/``right`` (length = block
    height) hold the index into ``parts`` of the piece at each pixel of the block's
    first/last row and column, -1 for nodata. Picklable: workers return it.
    """

    window: Window
    parts: Parts
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray


def blocks(shape: tuple[int, int], block: int) -> Iterator[Window]:
    """The block windows, row-major, partitioning a (rows, cols) grid; the last ones clipped.

    Example:
        >>> [(w.row, w.col, w.height, w.width) for w in blocks((3, 5), 2)][:3]
        [(0, 0, 2, 2), (0, 2, 2, 2), (0, 4, 2, 1)]
    """
    if block <= 0:
        raise ConfigError(f"block={block} must be a positive number of pixels; use e.g. 1024")
    rows, cols = shape
    for r in range(0, rows, block):
        for c in range(0, cols, block):
            yield Window(r, c, min(block, rows - r), min(block, cols - c))


def block_polygons(
    array: np.ndarray,
    *,
    window: Window,
    confidence: np.ndarray | None = None,
    nodata: int = NODATA_CLASS,
    confidence_nodata: float | None = None,
) -> BlockParts:
    """Polygonize one block: one piece per 4-connected region of one class, nodata excluded.

    Args:
        array: the block's class ids, shape ``window.shape``.
        window: where the block lies in the whole grid (its own pixels, no halo).
        confidence: the block's confidence values (same shape), or None.
        nodata: class value excluded from the polygons.
        confidence_nodata: confidence value left out of the means (NaN always is).

    Returns:
        The pieces in pixel coordinates of the whole grid (x = column, y = row), which
        are exact in floating point, plus the edge strips :func:`dissolve` matches.
    """
    if array.shape != window.shape:
        raise InputError(f"block shape {array.shape} != window shape {window.shape}; pass the block's window")
    labels, n = _label(array, array != nodata)
    idx = labels.ravel()
    pixels = np.bincount(idx, minlength=n + 1)[1:]
    class_of = np.zeros(n + 1, dtype=np.int64)
    class_of[idx] = array.ravel()
    conf_sum, conf_count = _confidence_sums(confidence, labels, n, confidence_nodata, array.shape)
    shift = Affine.translation(window.col, window.row)
    geoms = _polygonize(labels, shift, n) if n else np.empty(0, dtype=object)
    edge = labels - 1
    return BlockParts(
        window=window,
        parts=Parts.of(class_of[1:], pixels, conf_sum, conf_count, geoms),
        top=edge[0, :].copy(),
        bottom=edge[-1, :].copy(),
        left=edge[:, 0].copy(),
        right=edge[:, -1].copy(),
    )


def dissolve(blocks: Iterable[BlockParts]) -> Parts:
    """Merge the pieces of all blocks: same-class pieces sharing a block edge become one polygon.

    Two pieces are joined when a pixel of one and the pixel across the block edge of the
    other have the same class (4-connectivity: touching only at a corner does not join),
    transitively, so the result has one polygon per connected region of the raster.
    The blocks may come in any order; they must not overlap.
    """
    items = list(blocks)
    if not items:
        return Parts.concat([])
    offsets = np.cumsum([0] + [len(b.parts) for b in items])
    allp = Parts.concat(b.parts for b in items)
    pairs = _seam_pairs(items, offsets, allp.class_id)
    if len(pairs) == 0:
        return allp
    n = len(allp)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    counts = np.bincount(comp)
    single = counts[comp] == 1
    multi = np.flatnonzero(~single)
    order = multi[np.argsort(comp[multi], kind="stable")]
    groups = np.split(order, np.flatnonzero(np.diff(comp[order])) + 1)
    merged = Parts.of(
        [allp.class_id[g[0]] for g in groups],
        [allp.pixels[g].sum() for g in groups],
        [allp.conf_sum[g].sum() for g in groups],
        [allp.conf_count[g].sum() for g in groups],
        [_union(allp.geometry[g]) for g in groups],
    )
    return Parts.concat([allp.select(single), merged])


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
        parts: output of :func:`dissolve`.
        grid: the raster's grid (transform and CRS of the result).
        classes: id → name; pieces of ids not listed get the name ``class_<id>``.
        simplify: tolerance in map units for the topology-preserving coverage
            simplification; None = half a pixel; 0 = keep the exact pixel outlines.
        min_area: drop polygons smaller than this (map units²) after simplification.
        with_confidence: add ``mean_confidence`` (NaN where no valid confidence pixel).
    """
    if min_area < 0:
        raise ConfigError(f"min_area={min_area} must be >= 0 (map units²)")
    tolerance = _tolerance(simplify, grid)
    if tolerance < 0:
        raise ConfigError(f"simplify={simplify} must be >= 0 (map units; 0 disables simplification)")
    geoms = _simplify(parts.geometry, tolerance, grid)
    names = {c.id: c.name for c in classes}
    area, perimeter = _measure(geoms, grid.crs)
    data: dict[str, Any] = {
        "class_id": parts.class_id.astype(np.int32),
        "class_name": [names.get(int(i), f"class_{int(i)}") for i in parts.class_id],
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
        frame = frame[frame.geometry.area >= min_area]
    frame = frame.sort_values(["class_id", "area_m2"], ascending=[True, False], kind="stable")
    return frame.reset_index(drop=True)


def from_array(
    array: np.ndarray,
    *,
    grid: Grid,
    classes: Sequence[ClassInfo],
    confidence: np.ndarray | None = None,
    block: int = 1024,
    simplify: float | None = None,
    min_area: float = 0.0,
    nodata: int = NODATA_CLASS,
    confidence_nodata: float | None = None,
) -> gpd.GeoDataFrame:
    """Polygons of an in-memory class array laid out on ``grid`` (see :func:`polygons`)."""
    if array.shape != grid.shape:
        raise InputError(f"array shape {array.shape} != grid shape {grid.shape}; pass the array's grid")
    pieces = [
        block_polygons(
            array[w.to_slices()],
            window=w,
            confidence=None if confidence is None else confidence[w.to_slices()],
            nodata=nodata,
            confidence_nodata=confidence_nodata,
        )
        for w in blocks(grid.shape, block)
    ]
    return to_frame(
        dissolve(pieces),
        grid=grid,
        classes=classes,
        simplify=simplify,
        min_area=min_area,
        with_confidence=confidence is not None,
    )


def polygons(
    classes_path: Path,
    *,
    classes: Sequence[ClassInfo],
    confidence_path: Path | None = None,
    block: int = 1024,
    simplify: float | None = None,
    min_area: float = 0.0,
) -> gpd.GeoDataFrame:
    """Polygons of a class raster file, read block by block (never the whole array at once).

    Columns: ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m`` (m² and m for
    projected CRSs in metres and geodesic for geographic ones; pixel units for photos
    without georeferencing, whose polygons lie at x = column, y = -row, where QGIS draws
    such images), ``mean_confidence`` (with ``confidence_path``, in that raster's units)
    and ``geometry``; CRS = the raster's. The raster's nodata value (255 by default) is
    excluded. See :func:`to_frame` for ``simplify`` and ``min_area``. The whole table is
    held in memory; :func:`iter_polygons` yields the same polygons in chunks.
    """
    with _block_source(classes_path, confidence_path, block) as (grid, pieces):
        parts = dissolve(pieces)
    return to_frame(
        parts,
        grid=grid,
        classes=classes,
        simplify=simplify,
        min_area=min_area,
        with_confidence=confidence_path is not None,
    )


def iter_polygons(
    classes_path: Path,
    *,
    classes: Sequence[ClassInfo],
    confidence_path: Path | None = None,
    block: int = 1024,
    simplify: float | None = None,
    min_area: float = 0.0,
) -> Iterator[gpd.GeoDataFrame]:
    """The polygons of :func:`polygons` as GeoDataFrame chunks, so memory stays flat.

    Blocks are read in row-major order. The pieces of a block that touch no internal
    block edge are final: they are converted and yielded right after their block (one
    chunk per block). The seam pieces are kept and dissolved at the end (the last chunk,
    always yielded, possibly empty); they scale with the seam length, not the area.
    Together the chunks hold the same features as :func:`polygons` (each chunk sorted by
    class and area, not the whole). That holds while simplification works polygon by
    polygon: with ``simplify=0`` and tolerances below sqrt(pixel area / 2), the default
    half pixel included (only collinear vertices could go). Larger tolerances need the
    whole coverage (shared edges stay shared), so then all polygons are held in memory
    and yielded as one chunk.
    """
    with _block_source(classes_path, confidence_path, block) as (grid, pieces):

        def frame(parts: Parts) -> gpd.GeoDataFrame:
            return to_frame(
                parts,
                grid=grid,
                classes=classes,
                simplify=simplify,
                min_area=min_area,
                with_confidence=confidence_path is not None,
            )

        if not _exact_outlines(_tolerance(simplify, grid), grid):
            yield frame(dissolve(pieces))
            return
        seams = []
        for piece in pieces:
            final, seam = split_seams(piece, grid.shape)
            seams.append(seam)
            if len(final):
                yield frame(final)
        parts = dissolve(seams)
        seams.clear()  # the pieces, now merged: free them before the conversion copies the polygons
        yield frame(parts)


def split_seams(piece: BlockParts, shape: tuple[int, int]) -> tuple[Parts, BlockParts]:
    """Split a block's pieces: those touching no internal block edge, and the seam pieces.

    The first are final (no other block can join them); the second keep their edge
    strips (indices remapped, -1 where a final piece lies) for :func:`dissolve`.

    Example:
        >>> a = np.array([[1, 2], [2, 2]], dtype=np.uint8)
        >>> b = block_polygons(a, window=Window(0, 0, 2, 2))
        >>> final, seam = split_seams(b, (2, 4))  # the block's right edge is a seam
        >>> len(final), len(seam.parts), seam.right.tolist()
        (1, 1, [0, 0])
    """
    w = piece.window
    rows, cols = shape
    internal = (
        (piece.top, w.row > 0),
        (piece.bottom, w.row_stop < rows),
        (piece.left, w.col > 0),
        (piece.right, w.col_stop < cols),
    )
    seam = np.zeros(len(piece.parts), dtype=bool)
    for strip, inside in internal:
        if inside:
            seam[strip[strip >= 0]] = True
    index = np.full(len(piece.parts) + 1, -1, dtype=np.int64)  # old index + 1 → new index
    index[1:][seam] = np.arange(int(seam.sum()))
    return piece.parts.select(~seam), BlockParts(
        window=w,
        parts=piece.parts.select(seam),
        top=index[piece.top + 1],
        bottom=index[piece.bottom + 1],
        left=index[piece.left + 1],
        right=index[piece.right + 1],
    )


@contextmanager
def _block_source(
    classes_path: Path, confidence_path: Path | None, block: int
) -> Iterator[tuple[Grid, Iterator[BlockParts]]]:
    """Open the class (and confidence) raster; the grid and the blocks' pieces, read lazily."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # photos: no CRS on purpose
            src = rasterio.open(classes_path)
    except rasterio.errors.RasterioIOError as exc:
        if not Path(classes_path).exists():
            raise InputNotFoundError(f"class raster {classes_path} does not exist; check the path") from exc
        raise ReadError(f"cannot open class raster {classes_path}: {exc}") from exc
    with src:
        grid = Grid.of_dataset(src)
        nodata = NODATA_CLASS if src.nodata is None else int(src.nodata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            conf = rasterio.open(confidence_path) if confidence_path is not None else None
        try:
            if conf is not None and conf.shape != src.shape:
                raise InputError(
                    f"confidence raster {confidence_path} shape {conf.shape} != class raster shape "
                    f"{src.shape}; pass the confidence raster of the same run"
                )

            def read() -> Iterator[BlockParts]:
                for w in blocks(grid.shape, block):
                    rw = RioWindow(w.col, w.row, w.width, w.height)
                    yield block_polygons(
                        src.read(1, window=rw),
                        window=w,
                        confidence=conf.read(1, window=rw) if conf is not None else None,
                        nodata=nodata,
                        confidence_nodata=conf.nodata if conf is not None else None,
                    )

            yield grid, read()
        finally:
            if conf is not None:
                conf.close()


# -- internals ---------------------------------------------------------------------------


def _label(array: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of equal class; labels 1..n (int32), 0 for nodata."""
    labels = np.zeros(array.shape, dtype=np.int32)
    n = 0
    for value in np.unique(array[valid]):
        lab, k = ndimage.label(array == value, structure=_FOUR)
        hit = lab > 0
        labels[hit] = lab[hit] + n
        n += k
    return labels, n


def _polygonize(labels: np.ndarray, shift: Affine, n: int) -> np.ndarray:
    """One polygon per label 1..n (in label order), built in bulk from GDAL's polygonize rings."""
    lengths: list[int] = []
    owner: list[int] = []
    flat: list[tuple[float, float]] = []
    for geom, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=4, transform=shift):
        for ring in geom["coordinates"]:
            lengths.append(len(ring))
            owner.append(int(value) - 1)
            flat.extend(ring)
    rings = shapely.linearrings(
        np.asarray(flat, dtype=np.float64), indices=np.repeat(np.arange(len(lengths)), lengths)
    )
    # Rings of one polygon come together, shell first, as GDAL writes them.
    owner_arr = np.asarray(owner)
    first = np.r_[True, owner_arr[1:] != owner_arr[:-1]]
    polys = shapely.polygons(rings, indices=np.cumsum(first) - 1)
    out = np.empty(n, dtype=object)
    out[owner_arr[first]] = polys
    return out


def _confidence_sums(
    confidence: np.ndarray | None,
    labels: np.ndarray,
    n: int,
    nodata: float | None,
    shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    if confidence is None:
        return np.zeros(n), np.zeros(n, dtype=np.int64)
    if confidence.shape != shape:
        raise InputError(
            f"confidence shape {confidence.shape} != class block shape {shape}; pass the same window"
        )
    values = confidence.astype(np.float64).ravel()
    ok = np.isfinite(values)
    if nodata is not None and not np.isnan(nodata):
        ok &= values != nodata
    idx = np.where(ok, labels.ravel(), 0)
    sums = np.bincount(idx, weights=np.where(ok, values, 0.0), minlength=n + 1)[1:]
    counts = np.bincount(idx, minlength=n + 1)[1:]
    return sums, counts


def _seam_pairs(items: list[BlockParts], offsets: np.ndarray, class_id: np.ndarray) -> np.ndarray:
    """(k, 2) global piece indices of same-class pieces facing each other across block edges."""
    by_col: dict[int, list[int]] = {}
    by_row: dict[int, list[int]] = {}
    for i, b in enumerate(items):
        by_col.setdefault(b.window.col, []).append(i)
        by_row.setdefault(b.window.row, []).append(i)
    found = []
    for i, a in enumerate(items):
        for j in by_col.get(a.window.col_stop, []):  # blocks to the right of a
            b = items[j]
            lo, hi = max(a.window.row, b.window.row), min(a.window.row_stop, b.window.row_stop)
            if hi > lo:
                pa = a.right[lo - a.window.row : hi - a.window.row]
                pb = b.left[lo - b.window.row : hi - b.window.row]
                found.append(_match(pa, pb, offsets[i], offsets[j], class_id))
        for j in by_row.get(a.window.row_stop, []):  # blocks below a
            b = items[j]
            lo, hi = max(a.window.col, b.window.col), min(a.window.col_stop, b.window.col_stop)
            if hi > lo:
                pa = a.bottom[lo - a.window.col : hi - a.window.col]
                pb = b.top[lo - b.window.col : hi - b.window.col]
                found.append(_match(pa, pb, offsets[i], offsets[j], class_id))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def _match(pa: np.ndarray, pb: np.ndarray, oa: int, ob: int, class_id: np.ndarray) -> np.ndarray:
    ok = (pa >= 0) & (pb >= 0)
    ga, gb = pa[ok] + oa, pb[ok] + ob
    same = class_id[ga] == class_id[gb]
    return np.column_stack((ga[same], gb[same]))


def _union(geoms: np.ndarray) -> Any:
    """Union of edge-connected pieces: one polygon (anything else is a bug upstream)."""
    # Tolerance 0 drops only the collinear vertices the seams leave: the outline is unchanged.
    geom = shapely.simplify(shapely.union_all(geoms), 0.0, preserve_topology=False)
    if shapely.get_type_id(geom) != shapely.GeometryType.POLYGON:
        raise RuntimeError(
            f"seam dissolve produced a {geom.geom_type}; the block pieces are not pixel-aligned"
        )
    return geom


#: Where GIS software (QGIS, GDAL's default geotransform as QGIS reads it) draws a photo
#: without georeferencing: x = column, y = -row, so polygons land on the image.
PHOTO_TRANSFORM = Affine(1, 0, 0, 0, -1, 0)


def _map_transform(grid: Grid) -> Affine:
    if grid.crs is None and grid.transform == Affine.identity():
        return PHOTO_TRANSFORM
    return grid.transform


def _tolerance(simplify: float | None, grid: Grid) -> float:
    """The simplification tolerance in map units: None = half a pixel."""
    return 0.5 * min(grid.resolution) if simplify is None else float(simplify)


def _exact_outlines(tolerance: float, grid: Grid) -> bool:
    """Whether simplifying with ``tolerance`` keeps the exact pixel outlines (see :func:`_simplify`)."""
    return tolerance <= 0 or tolerance**2 < 0.5 * grid.pixel_area


def _simplify(geoms: np.ndarray, tolerance: float, grid: Grid) -> np.ndarray:
    """Pixel-space pieces → map-space polygons, coverage-simplified with ``tolerance`` (map units).

    GEOS's coverage simplification (Visvalingam-Whyatt) removes vertices whose triangle
    is smaller than tolerance². Between pixel-corner vertices every non-degenerate
    triangle has at least half a pixel's area, so below sqrt(pixel_area / 2) it could
    only drop collinear vertices, and GDAL's polygonize and :func:`dissolve` leave none:
    that case keeps the exact pixel outlines without running the simplifier.
    """
    if len(geoms) == 0:
        return geoms
    if _exact_outlines(tolerance, grid):
        return _to_map(geoms, _map_transform(grid))
    # Vertices at every pixel corner along every edge: neighbours then share identical
    # vertices (a valid coverage), which coverage simplification needs to keep them shared.
    dense = _to_map(shapely.segmentize(geoms, 1.0), _map_transform(grid))
    return np.asarray(shapely.coverage_simplify(dense, tolerance, simplify_boundary=True), dtype=object)


def _to_map(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    if transform == Affine.identity():
        return geoms
    a, b, c, d, e, f = transform[:6]

    def apply(xy: np.ndarray) -> np.ndarray:
        return np.column_stack((a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f))

    return np.asarray(shapely.transform(geoms, apply), dtype=object)


def _measure(geoms: np.ndarray, crs: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Area (m²) and perimeter (m): geodesic for geographic CRSs, scaled planar otherwise."""
    if len(geoms) == 0:
        return np.zeros(0), np.zeros(0)
    if crs is None:
        return shapely.area(geoms), shapely.length(geoms)
    c = CRS.from_user_input(crs)
    if c.is_geographic:
        geod = c.get_geod() or Geod(ellps="WGS84")
        ap = np.array([geod.geometry_area_perimeter(g) for g in geoms])
        return np.abs(ap[:, 0]), ap[:, 1]
    unit = c.axis_info[0].unit_conversion_factor if c.axis_info else 1.0
    return shapely.area(geoms) * unit**2, shapely.length(geoms) * unit
