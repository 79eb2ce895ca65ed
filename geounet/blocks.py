"""Polygons of tile cores as they are predicted: vectorizing overlapped with prediction.

The raster stage hands every finished core (classes + confidence, in memory) to a
:class:`BlockPolygons`; a background thread polygonizes it with :mod:`geounet.vectorize`
(pieces away from the core's edges are final and go straight into the polygon layer,
pieces on an internal edge are kept), and when the last core has come the seam pieces are
dissolved and appended. The layer is written through :func:`geounet.publish.write_vector_chunks`
(atomically: a failed run leaves no finished-looking file). The result equals
:func:`geounet.vectorize.iter_polygons` over the written class raster with the cores as
blocks, without reading the raster back, and the vectorizing runs while the model works on
the next tile (GDAL's polygonize and numpy release the GIL; torch does too).

Coverage simplification (tolerances of sqrt(1/2) pixel and more) needs every polygon at
once: :func:`streams` says when the overlap applies; otherwise publishing vectorizes the COG.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet import cores, heap
from geounet.errors import ExecutionError
from geounet.geo import Grid, Window
from geounet.merge import NODATA_CONFIDENCE
from geounet.model import NODATA_CLASS, ClassInfo

if TYPE_CHECKING:
    import geopandas as gpd

    from geounet import vectorize

_DONE = object()

#: Largest block vectorized at once: a core is cut into blocks of at most this side. Tracing
#: needs ~120 B per pixel of the block at a time (488 MB for one 2048² block of 202k polygons,
#: 197 MB as four 1024² blocks, in the same time; measured on this project's 2-core CPU).
BLOCK = 1024
#: Blocks vectorized at once after the model's last tile (threads: GDAL, numpy and GEOS release
#: the GIL; ``bench.vectorize``: 1.42x the polygons per second of one thread on 2 cores).
TAIL_WORKERS = 2


def streams(simplify: float | None, grid: Grid) -> bool:
    """Whether the polygons can be made block by block (simplification keeps exact pixel outlines).

    Example:
        >>> streams(None, Grid(shape=(4, 4))), streams(5.0, Grid(shape=(4, 4)))
        (True, False)
    """
    tolerance = 0.5 * min(grid.resolution) if simplify is None else float(simplify)
    return tolerance <= 0 or tolerance**2 < 0.5 * grid.pixel_area


class _Abort(ExecutionError):
    """The raster stage failed: the polygon layer must not be finished."""


class BlockPolygons:
    """Vectorize cores in a background thread and write ``path`` (a polygon layer) from them.

    Use as a context manager: :meth:`add` each core, then leave the block normally to finish
    the layer (seams dissolved); leaving it with an exception aborts and removes the layer.
    """

    def __init__(
        self,
        path: Path,
        *,
        grid: Grid,
        classes: Sequence[ClassInfo],
        fmt: str,
        simplify: float | None,
        min_area: float,
    ) -> None:
        self.path = Path(path)
        self.grid, self.classes, self.fmt = grid, tuple(classes), fmt
        self.simplify, self.min_area = simplify, min_area
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="geounet-vectorize", daemon=True)
        self._model_done = threading.Event()
        self.polygons = 0

    def __enter__(self) -> BlockPolygons:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._queue.put(_Abort("the raster stage failed") if kind is not None else _DONE)
        self._thread.join()
        if kind is None and self._error is not None:
            raise self._error

    def add(self, window: Window, classes: np.ndarray, confidence: np.ndarray | None) -> None:
        """Queue one finished core (its window in the grid, class ids, confidence); blocks when 4 wait."""
        if self._error is not None:
            raise self._error
        self._queue.put((window, classes, confidence))

    def model_done(self) -> None:
        """Say that the model has no more tiles to predict: the cores still to vectorize take
        :data:`TAIL_WORKERS` blocks at a time (the CPU is theirs now), not one."""
        self._model_done.set()

    def _run(self) -> None:
        try:
            # The vector stack (geopandas, pandas, pyogrio: ~0.7 s of imports) loads here, in this
            # thread, while the raster stage reads the first tile and the model starts on it.
            from geounet import publish

            publish.write_vector_chunks(self._chunks(), self.path, classes=self.classes, fmt=self.fmt)
        except _Abort:
            return
        except BaseException as exc:  # re-raised in the raster stage's thread
            self._error = exc
            item = None
            while item is not _DONE and not isinstance(item, _Abort):  # keep the producer unblocked
                item = self._queue.get()

    def _chunks(self) -> Iterator[gpd.GeoDataFrame]:
        from geounet import vectorize

        seams = []
        while True:
            item = self._queue.get()
            if isinstance(item, _Abort):
                raise item
            if item is _DONE:
                break
            with cores.SHARE.beside():  # the model leaves a core to this thread meanwhile
                for final, seam in self._vectorize(*item):
                    seams.append(seam)
                    if len(final):
                        self.polygons += len(final)
                        yield final
        heap.trim()  # the prediction loop is over: its freed buffers go back before the dissolve
        merged = vectorize.dissolve_seams(
            vectorize.consume(seams),  # the list lets go of the pieces as they are merged
            grid=self.grid,
            classes=self.classes,
            simplify=self.simplify,
            min_area=self.min_area,
            with_confidence=True,
        )
        self.polygons += len(merged)
        yield merged

    def _vectorize(
        self, window: Window, classes: np.ndarray, confidence: np.ndarray | None
    ) -> Iterator[tuple[gpd.GeoDataFrame, vectorize.BlockParts]]:
        """One core, in blocks of at most :data:`BLOCK` px: final polygons and seam pieces of each.

        One block at a time while the model predicts (it has the other core); once it is done
        (:meth:`model_done`), the rest :data:`TAIL_WORKERS` at a time, in order.
        """
        from geounet import vectorize

        def one(sub: Window) -> tuple[gpd.GeoDataFrame, vectorize.BlockParts]:
            at = Window(window.row + sub.row, window.col + sub.col, sub.height, sub.width)
            return vectorize.vectorize_block(
                classes[sub.to_slices()],
                window=at,
                grid=self.grid,
                classes=self.classes,
                confidence=None if confidence is None else confidence[sub.to_slices()],
                nodata=NODATA_CLASS,
                confidence_nodata=NODATA_CONFIDENCE if confidence is not None else None,
                simplify=self.simplify,
                min_area=self.min_area,
            )

        todo = list(vectorize.blocks(window.shape, BLOCK))
        while todo:
            if self._model_done.is_set() and len(todo) > 1:
                with ThreadPoolExecutor(TAIL_WORKERS, thread_name_prefix="geounet-vectorize-tail") as pool:
                    yield from pool.map(one, todo)
                return
            yield one(todo.pop(0))
