"""Polygon pieces of class-raster blocks, and the seam dissolve that joins the pieces a block edge cut.

Pure math, no I/O. :func:`block_polygons` labels one block's 4-connected regions of equal
class (nodata excluded) and traces their outlines (:mod:`geounet.vectorize.outline`) in
**pixel coordinates of the whole grid**: small integers, exact in floating point, so the
edges two blocks share coincide exactly. Each piece carries its pixel count and confidence
sum, and the block keeps which piece owns each pixel of its edge rows and columns.
:func:`split_seams` separates the pieces that touch an internal block edge (a *seam*) from
the final ones, and :func:`dissolve` joins seam pieces of one class that share an edge
(4-connectivity) into one polygon, so a field spanning four blocks is one feature.

Example:
    >>> a = np.array([[1, 2], [2, 2]], dtype=np.uint8)
    >>> b = block_polygons(a, window=Window(0, 0, 2, 2))
    >>> b.parts.class_id.tolist(), b.parts.pixels.tolist()
    ([1, 2], [1, 3])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geounet.errors import ConfigError, InputError
from geounet.geo import Window
from geounet.model import NODATA_CLASS
from geounet.vectorize import join, outline

_FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Parts:
    """Polygon pieces with their statistics: parallel arrays, geometries in pixel coordinates.

    ``geometry`` is either shapely polygons (an object array) or, for pieces that wait for
    the seam dissolve and its result, :class:`~geounet.vectorize.outline.Outlines` (ragged
    vertex arrays: compact, and the dissolve reads them without a conversion);
    :meth:`shapes` gives shapely polygons either way. ``conf_sum``/``conf_count`` hold the
    sum and count of valid confidence pixels under each piece (zeros without a confidence
    raster), so means stay exact after merging.
    """

    class_id: np.ndarray
    pixels: np.ndarray
    conf_sum: np.ndarray
    conf_count: np.ndarray
    geometry: np.ndarray | outline.Outlines

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
            geometry=geometry
            if isinstance(geometry, outline.Outlines)
            else np.asarray(geometry, dtype=object),
        )

    @classmethod
    def concat(cls, parts: Iterable[Parts]) -> Parts:
        """All pieces of several :class:`Parts` in one (their geometries all of one kind)."""
        items = list(parts)
        if not items:
            return cls.of([], [], [], [], [])
        class_id, pixels, conf_sum, conf_count = (
            np.concatenate([getattr(p, f) for p in items])
            for f in ("class_id", "pixels", "conf_sum", "conf_count")
        )
        ragged = [p.geometry for p in items if isinstance(p.geometry, outline.Outlines)]
        shapes = [p.geometry for p in items if not isinstance(p.geometry, outline.Outlines)]
        if ragged and shapes:
            raise TypeError("Parts.concat got both outlines and shapely geometries; convert with shapes()")
        geometry = outline.Outlines.concat(ragged) if ragged else np.concatenate(shapes)
        return cls(class_id, pixels, conf_sum, conf_count, geometry)

    def select(self, index: np.ndarray) -> Parts:
        """The pieces at ``index`` (a boolean mask, or integer indices; ascending for outlines)."""
        geometry = self.geometry
        return Parts(
            self.class_id[index],
            self.pixels[index],
            self.conf_sum[index],
            self.conf_count[index],
            geometry.take(index) if isinstance(geometry, outline.Outlines) else geometry[index],
        )

    def shapes(self, transform: Affine | None = None) -> np.ndarray:
        """The geometries as shapely polygons, mapped by ``transform`` if given (outlines only)."""
        if isinstance(self.geometry, outline.Outlines):
            return self.geometry.polygons(transform)
        if transform is not None and transform != Affine.identity():
            raise ValueError("Parts.shapes maps outlines only; these are shapely polygons already")
        return self.geometry


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


@dataclass(frozen=True)
class Traced:
    """One block's regions: their outlines (block pixel coordinates), statistics and edge owners."""

    outlines: outline.Outlines
    class_id: np.ndarray
    pixels: np.ndarray
    conf_sum: np.ndarray
    conf_count: np.ndarray
    edges: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # top, bottom, left, right

    def parts(self, keep: np.ndarray, window: Window, transform: Affine | None = None) -> Parts:
        """The regions where ``keep`` is True as :class:`Parts`: vertices in the whole grid's pixel
        coordinates (the block placed at ``window``), mapped by ``transform`` if given."""
        return Parts(
            self.class_id[keep],
            self.pixels[keep],
            self.conf_sum[keep],
            self.conf_count[keep],
            self.outlines.select(keep).polygons(transform, offset=(window.col, window.row)),
        )

    def pieces(self, keep: np.ndarray, window: Window) -> Parts:
        """Like :meth:`parts` in pixel coordinates, the geometries kept as compact outlines
        (the seam pieces, which wait in memory until the dissolve reads them as they are)."""
        return Parts(
            self.class_id[keep],
            self.pixels[keep],
            self.conf_sum[keep],
            self.conf_count[keep],
            self.outlines.select(keep).shifted(window.col, window.row),
        )


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


def trace_block(
    array: np.ndarray,
    *,
    window: Window,
    confidence: np.ndarray | None = None,
    nodata: int = NODATA_CLASS,
    confidence_nodata: float | None = None,
) -> Traced:
    """Label and trace one block: one region per 4-connected area of one class, nodata excluded."""
    if array.shape != window.shape:
        raise InputError(f"block shape {array.shape} != window shape {window.shape}; pass the block's window")
    labels, n, class_of = _label(array, nodata)
    idx = labels.ravel()
    pixels = np.bincount(idx, minlength=n + 1)[1:]
    conf_sum, conf_count = _confidence_sums(confidence, idx, n, confidence_nodata, array.shape)
    edge = labels - 1
    return Traced(
        outlines=outline.trace(labels, n),
        class_id=class_of,
        pixels=pixels,
        conf_sum=conf_sum,
        conf_count=conf_count,
        edges=(edge[0, :].copy(), edge[-1, :].copy(), edge[:, 0].copy(), edge[:, -1].copy()),
    )


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
    traced = trace_block(
        array, window=window, confidence=confidence, nodata=nodata, confidence_nodata=confidence_nodata
    )
    everything = np.ones(len(traced.pixels), dtype=bool)
    return BlockParts(window, traced.pieces(everything, window), *traced.edges)


def seam_mask(window: Window, shape: tuple[int, int], edges: tuple[np.ndarray, ...], n: int) -> np.ndarray:
    """Which of a block's ``n`` pieces touch an internal block edge of a ``shape`` grid."""
    top, bottom, left, right = edges
    rows, cols = shape
    seam = np.zeros(n, dtype=bool)
    for strip, inside in (
        (top, window.row > 0),
        (bottom, window.row_stop < rows),
        (left, window.col > 0),
        (right, window.col_stop < cols),
    ):
        if inside:
            seam[strip[strip >= 0]] = True
    return seam


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
    edges = (piece.top, piece.bottom, piece.left, piece.right)
    seam = seam_mask(piece.window, shape, edges, len(piece.parts))
    return piece.parts.select(~seam), seam_parts(piece.window, piece.parts.select(seam), seam, edges)


def seam_parts(window: Window, parts: Parts, seam: np.ndarray, edges: tuple[np.ndarray, ...]) -> BlockParts:
    """The seam pieces of a block with its edge strips re-indexed to them (-1 elsewhere)."""
    index = np.full(len(seam) + 1, -1, dtype=np.int64)  # old index + 1 → new index
    index[1:][seam] = np.arange(int(seam.sum()))
    return BlockParts(window, parts, *(index[e + 1] for e in edges))


def dissolve(blocks: Iterable[BlockParts]) -> Parts:
    """Merge the pieces of all blocks: same-class pieces sharing a block edge become one polygon.

    Two pieces are joined when a pixel of one and the pixel across the block edge of the
    other have the same class (4-connectivity: touching only at a corner does not join),
    transitively, so the result has one polygon per connected region of the raster.
    The blocks may come in any order; they must not overlap. The outlines are joined by
    :func:`geounet.vectorize.join.merge` (shared edges cancel), not by a GEOS union.
    """
    items = list(blocks)
    if not items:
        return Parts.concat([])
    offsets = np.cumsum([0] + [len(b.parts) for b in items])
    allp = Parts.concat(b.parts for b in items)
    pairs = _seam_pairs(items, offsets, allp.class_id)
    if len(pairs) == 0:
        return _as_outlines(allp)
    seams = (
        np.unique([v for b in items for v in (b.window.col, b.window.col_stop)]).astype(np.float64),
        np.unique([v for b in items for v in (b.window.row, b.window.row_stop)]).astype(np.float64),
    )
    del items  # with a consuming iterable (see dissolve_seams' callers) the pieces' geometries go early
    n = len(allp)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    single = np.bincount(comp)[comp] == 1
    multi = np.flatnonzero(~single)
    groups, group = np.unique(comp[multi], return_inverse=True)
    g = len(groups)
    first = np.full(g, len(multi))
    np.minimum.at(first, group, np.arange(len(multi)))
    stats = Parts.of(
        allp.class_id[multi][first],
        np.bincount(group, weights=allp.pixels[multi], minlength=g),
        np.bincount(group, weights=allp.conf_sum[multi], minlength=g),
        np.bincount(group, weights=allp.conf_count[multi], minlength=g),
        outline.Outlines.concat([]),
    )
    pieces = _outlines(allp).take(multi)
    singles = allp.select(single)
    del allp
    merged = join.merge(pieces, group, g, seams)
    del pieces
    return Parts.concat([_as_outlines(singles), dataclasses.replace(stats, geometry=merged)])


def _outlines(parts: Parts) -> outline.Outlines:
    """The pieces' geometries as outlines (converted when they are shapely polygons)."""
    if isinstance(parts.geometry, outline.Outlines):
        return parts.geometry
    if len(parts.geometry) == 0:
        return outline.Outlines.concat([])
    _, coords, (ring_offsets, poly_offsets) = shapely.to_ragged_array(parts.geometry)
    return outline.Outlines(coords[:, 0], coords[:, 1], ring_offsets, poly_offsets)


def _as_outlines(parts: Parts) -> Parts:
    return dataclasses.replace(parts, geometry=_outlines(parts))


def consume(items: list[Any]) -> Iterator[Any]:
    """The items of ``items`` in order, each removed from the list as it is given (the list ends
    empty): a caller that hands its list to :func:`dissolve` this way lets go of the pieces."""
    items.reverse()
    while items:
        yield items.pop()


# -- internals ---------------------------------------------------------------------------


def _label(array: np.ndarray, nodata: int) -> tuple[np.ndarray, int, np.ndarray]:
    """4-connected components of equal class: labels 1..n (int32, 0 for nodata), n, class of each."""
    labels = np.zeros(array.shape, dtype=np.int32)
    lab = np.empty(array.shape, dtype=np.int32)
    n = 0
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:
        values = np.flatnonzero(np.bincount(array.ravel()))  # the classes present, without a sort
    else:
        values = np.unique(array)
    class_of = []
    for value in values[values != nodata]:
        mask = array == value
        k = ndimage.label(mask, structure=_FOUR, output=lab)
        lab += n
        np.copyto(labels, lab, where=mask)
        class_of.append(np.full(k, value, dtype=np.int64))
        n += k
    return labels, n, np.concatenate(class_of) if class_of else np.zeros(0, dtype=np.int64)


def _confidence_sums(
    confidence: np.ndarray | None,
    idx: np.ndarray,
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
    values = confidence.ravel()
    ok = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        ok &= values != nodata
    idx = np.where(ok, idx, 0)
    sums = np.bincount(idx, weights=values, minlength=n + 1)[1:]
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
