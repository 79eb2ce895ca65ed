"""Polygons of a class raster, file or array, block by block; the only I/O of the vectorizer.

:func:`iter_polygons` reads the class raster (and the optional confidence raster) in
windows, vectorizes each block with :func:`~geounet.vectorize.frame.vectorize_block` and
yields its final polygons at once, keeping only the seam pieces for the last chunk, so
memory stays flat. ``workers`` > 1 vectorizes that many blocks at a time in threads (the
tracing is numpy, shapely and scipy work that releases the GIL for most of its time).
:func:`polygons` and :func:`from_array` give the same polygons as one frame.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RioWindow

from geounet.errors import ConfigError, InputError, InputNotFoundError, ReadError
from geounet.geo import Grid, Window
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.vectorize.frame import (
    checked_tolerance,
    combine,
    dissolve_seams,
    exact_outlines,
    vectorize_block,
)
from geounet.vectorize.parts import BlockParts, block_polygons, blocks, consume

#: A block as read: its window, class ids, confidence (or None).
Block = tuple[Window, np.ndarray, np.ndarray | None]
T = TypeVar("T")


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
    workers: int = 1,
) -> gpd.GeoDataFrame:
    """Polygons of an in-memory class array laid out on ``grid`` (see :func:`polygons`)."""
    if array.shape != grid.shape:
        raise InputError(f"array shape {array.shape} != grid shape {grid.shape}; pass the array's grid")
    source = (
        (w, array[w.to_slices()], None if confidence is None else confidence[w.to_slices()])
        for w in blocks(grid.shape, block)
    )
    chunks = _chunks(
        source,
        grid=grid,
        classes=classes,
        nodata=nodata,
        confidence_nodata=confidence_nodata,
        with_confidence=confidence is not None,
        simplify=simplify,
        min_area=min_area,
        workers=workers,
    )
    return combine(list(chunks))


def polygons(
    classes_path: Path,
    *,
    classes: Sequence[ClassInfo],
    confidence_path: Path | None = None,
    block: int = 1024,
    simplify: float | None = None,
    min_area: float = 0.0,
    workers: int = 1,
) -> gpd.GeoDataFrame:
    """Polygons of a class raster file, read block by block (never the whole array at once).

    Columns: ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m`` (m² and m for
    projected CRSs in metres and geodesic for geographic ones; pixel units for photos
    without georeferencing, whose polygons lie at x = column, y = -row, where QGIS draws
    such images), ``mean_confidence`` (with ``confidence_path``, in that raster's units)
    and ``geometry``; CRS = the raster's. The raster's nodata value (255 by default) is
    excluded. See :func:`~geounet.vectorize.frame.to_frame` for ``simplify`` and
    ``min_area``. The whole table is held in memory; :func:`iter_polygons` yields the same
    polygons in chunks.
    """
    return combine(
        list(
            iter_polygons(
                classes_path,
                classes=classes,
                confidence_path=confidence_path,
                block=block,
                simplify=simplify,
                min_area=min_area,
                workers=workers,
            )
        )
    )


def iter_polygons(
    classes_path: Path,
    *,
    classes: Sequence[ClassInfo],
    confidence_path: Path | None = None,
    block: int = 1024,
    simplify: float | None = None,
    min_area: float = 0.0,
    workers: int = 1,
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
    and yielded as one chunk. ``workers`` blocks are vectorized at a time, in threads.
    """
    with _block_source(classes_path, confidence_path, block) as (grid, nodata, conf_nodata, source):
        yield from _chunks(
            source,
            grid=grid,
            classes=classes,
            nodata=nodata,
            confidence_nodata=conf_nodata,
            with_confidence=confidence_path is not None,
            simplify=simplify,
            min_area=min_area,
            workers=workers,
        )


def _chunks(
    source: Iterable[Block],
    *,
    grid: Grid,
    classes: Sequence[ClassInfo],
    nodata: int,
    confidence_nodata: float | None,
    with_confidence: bool,
    simplify: float | None,
    min_area: float,
    workers: int,
) -> Iterator[gpd.GeoDataFrame]:
    """Final polygons block by block, then the dissolved seams (or all at once, see above)."""
    tolerance = checked_tolerance(simplify, min_area, grid)
    if not exact_outlines(tolerance, grid):
        pieces = _ordered_map(
            lambda b: block_polygons(
                b[1], window=b[0], confidence=b[2], nodata=nodata, confidence_nodata=confidence_nodata
            ),
            source,
            workers,
        )
        yield dissolve_seams(
            pieces,
            grid=grid,
            classes=classes,
            simplify=simplify,
            min_area=min_area,
            with_confidence=with_confidence,
        )
        return

    def one(b: Block) -> tuple[gpd.GeoDataFrame, BlockParts]:
        return vectorize_block(
            b[1],
            window=b[0],
            grid=grid,
            classes=classes,
            confidence=b[2],
            nodata=nodata,
            confidence_nodata=confidence_nodata,
            simplify=simplify,
            min_area=min_area,
        )

    seams = []
    for frame, seam in _ordered_map(one, source, workers):
        seams.append(seam)
        if len(frame):
            yield frame
    yield dissolve_seams(
        consume(seams),
        grid=grid,
        classes=classes,
        simplify=simplify,
        min_area=min_area,
        with_confidence=with_confidence,
    )


def _ordered_map(fn: Callable[[Block], T], source: Iterable[Block], workers: int) -> Iterator[T]:
    """``map(fn, source)`` in order, ``workers`` calls at a time in threads (1: in this thread)."""
    if workers < 1:
        raise ConfigError(f"workers={workers} must be >= 1 (threads vectorizing blocks at once)")
    if workers == 1:
        yield from map(fn, source)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geounet-vectorize") as pool:
        pending: deque[Future[T]] = deque()
        for item in source:  # read here, in order; at most `workers` blocks in flight
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextmanager
def _block_source(
    classes_path: Path, confidence_path: Path | None, block: int
) -> Iterator[tuple[Grid, int, float | None, Iterator[Block]]]:
    """Open the class (and confidence) raster: grid, nodata values and the blocks, read lazily."""
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

            def read() -> Iterator[Block]:
                for w in blocks(grid.shape, block):
                    rw = RioWindow(w.col, w.row, w.width, w.height)
                    yield w, src.read(1, window=rw), conf.read(1, window=rw) if conf is not None else None

            yield grid, nodata, conf.nodata if conf is not None else None, read()
        finally:
            if conf is not None:
                conf.close()
