"""The read and predict stages of a batch of tiles, and the in-process executor.

:func:`read_chips` (tiles → chips, from a local raster or composited from STAC scenes) and
:class:`TilePredictor` (chips → :class:`~geounet.jobs.TileResult`: the network, then the core
crop and the class decision) are the stage functions every executor runs:
:func:`local_results` here, with reader threads so GDAL decoding overlaps the forward pass,
and :mod:`geounet.distributed` in Ray tasks and actors.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet import heap, merge
from geounet import model as model_mod
from geounet import read as read_mod
from geounet.jobs import Job, TileResult
from geounet.model import Bundle
from geounet.planning import load_bundle
from geounet.read import Chip
from geounet.tiling import Tile

if TYPE_CHECKING:
    from geounet.resume import TileStore

log = logging.getLogger(__name__)


def read_chips(job: Job, tiles: Sequence[Tile]) -> list[Chip | None]:
    """Read the chips of ``tiles``; ``None`` for tiles with no valid pixel in their core."""
    if job.scenes:
        return _scene_chips(job, tiles)
    out: list[Chip | None] = []
    with read_mod.open_raster(job.source) as ds:
        for tile in tiles:
            chip = read_mod.chip(ds, tile, bands=job.bands)
            out.append(chip if chip.core_valid.any() else None)
    return out


def read_chips_timed(job: Job, tiles: Sequence[Tile]) -> tuple[float, list[Chip | None]]:
    """:func:`read_chips` with the CPU seconds it took (a Ray read task's share of the job's CPU time)."""
    t0 = time.process_time()
    chips = read_chips(job, tiles)
    return time.process_time() - t0, chips


def _scene_chips(job: Job, tiles: Sequence[Tile]) -> list[Chip | None]:
    """Chips composited from ``job.scenes`` onto ``job.grid``, invalid outside ``job.aoi``.

    A scene whose asset fails is logged and left out of the composite (the others still count).
    With ``--outputs ...,observations`` each chip carries its core's count of clear valid
    observations (0 outside the AOI), counted from the reads the composite makes anyway.
    """
    from rasterio.features import geometry_mask
    from shapely.geometry import box

    from geounet import scenes as scenes_mod

    out: list[Chip | None] = []
    counting = "observations" in job.options.outputs
    for tile in tiles:
        if job.aoi is not None and not job.aoi.intersects(box(*job.grid.window_grid(tile.core).bounds)):
            out.append(None)  # nothing of the AOI in this core: not read, written as nodata
            continue
        failures: list[Any] = []
        counts: list[np.ndarray] | None = [] if counting else None
        chip = scenes_mod.chip(
            list(job.scenes),
            tile,
            grid=job.grid,
            failures=failures,
            resampling=job.options.resampling,  # e.g. bilinear, as in training
            method=str(job.extra.get("composite", "first")),  # per-pixel rule (geounet.masks.METHODS)
            observations=counts,
        )
        for exc in failures:
            log.warning("tile %d: scene left out: %s", tile.index, exc)
        if job.aoi is not None:
            inside = geometry_mask(
                [job.aoi],
                out_shape=tile.read.shape,
                transform=job.grid.window_grid(tile.read).transform,
                invert=True,
            )
            chip = Chip(tile=tile, data=chip.data, valid=chip.valid & inside)
            if counts:
                counts[0] = counts[0] * inside[tile.core_in_read.to_slices()]
        if failures and not chip.core_valid.any():
            raise failures[0]  # the failed scenes were all this tile had: never write it as nodata
        if counts:
            chip = dataclasses.replace(chip, observations=counts[0])
        out.append(chip if chip.core_valid.any() else None)
    return out


class TilePredictor:
    """The predict stage: loads the bundle once, turns chips into :class:`TileResult`.

    Used in-process by :func:`local_results` and inside Ray actors by
    :mod:`geounet.distributed`.
    """

    def __init__(self, job: Job, *, device: str | None = None) -> None:
        from geounet.infer import Predictor

        self.job = job
        self.bundle: Bundle = load_bundle(job.model_path)
        opts = job.options
        self.predictor = Predictor(
            self.bundle,
            device=device or opts.device,
            batch_size=opts.batch_size,
            amp=opts.amp,
            tta=opts.tta,
        )
        self.class_ids = np.array([c.id for c in self.bundle.classes], dtype=np.uint8)
        #: Stream tiles through the network in strips of rows (memory grows with the tile's
        #: width only) where the plan asks for it; the result is the same as a whole-tile pass.
        self.streamed = bool(opts.stream) if opts.stream is not None else not self.predictor.cuda

    def __call__(self, tiles: Sequence[Tile], chips: Sequence[Chip | None]) -> list[TileResult]:
        """Predict the non-empty chips (one batch, or one streamed tile at a time); empty ones come back ``skipped``."""
        todo = [c for c in chips if c is not None]
        if self.streamed:
            streamed = []
            for chip in todo:
                streamed.append(self._streamed(chip))
                heap.trim()  # a large tile's strip buffers go back to the OS, not to a thread's arena
            done = iter(streamed)
        else:
            probs = self._probs(todo) if todo else np.empty((0,))
            done = iter([self._result(c, p) for c, p in zip(todo, probs, strict=True)])
        return [
            TileResult(tile=t, skipped=True) if c is None else _counted(next(done), c)
            for t, c in zip(tiles, chips, strict=True)
        ]

    def _probs(self, chips: Sequence[Chip]) -> np.ndarray:
        batch = np.stack([c.data for c in chips])
        return self.predictor.predict(model_mod.normalize(batch, self.bundle.normalization))

    def _result(self, chip: Chip, probs: np.ndarray) -> TileResult:
        if self.job.options.merge == "blend":
            return TileResult(tile=chip.tile, probs=probs.astype(np.float16), valid=chip.valid)
        core = merge.crop(probs, chip.tile)
        classes, confidence = merge.decide(core, valid=chip.core_valid, class_ids=self.class_ids)
        kept = core.astype(np.float16) if self.job.options.keeps_probabilities else None
        return TileResult(tile=chip.tile, classes=classes, confidence=confidence, probs=kept)

    def _streamed(self, chip: Chip) -> TileResult:
        """One tile through the network strip by strip; only its core's classes (and probabilities, when
        the job writes them) are kept."""
        # Raw bands in: each strip is normalized as it enters the network (no normalized copy of the tile).
        x, norm = chip.data, self.bundle.normalization
        if self.job.options.merge == "blend":
            probs = np.empty((self.predictor.n_classes, *chip.data.shape[1:]), np.float16)
            for r0, p in self.predictor.predict_rows(x, normalization=norm):
                probs[:, r0 : r0 + p.shape[1]] = p
            return TileResult(tile=chip.tile, probs=probs, valid=chip.valid)
        core = chip.tile.core_in_read
        classes = np.empty(core.shape, np.uint8)
        confidence = np.empty(core.shape, np.uint8)
        valid = chip.core_valid
        keep = self.job.options.keeps_probabilities
        kept = np.empty((self.predictor.n_classes, *core.shape), np.float16) if keep else None
        for r0, p in self.predictor.predict_rows(x, normalization=norm):
            a, b = max(r0, core.row), min(r0 + p.shape[1], core.row_stop)
            if a < b:
                rows = slice(a - core.row, b - core.row)
                strip = p[:, a - r0 : b - r0, core.col : core.col_stop]
                classes[rows], confidence[rows] = merge.decide(
                    strip, valid=valid[rows], class_ids=self.class_ids
                )
                if kept is not None:
                    kept[:, rows] = strip
        return TileResult(tile=chip.tile, classes=classes, confidence=confidence, probs=kept)


def _counted(result: TileResult, chip: Chip) -> TileResult:
    """``result`` with its chip's observation counts (``--outputs ...,observations``), if it has them."""
    return (
        result if chip.observations is None else dataclasses.replace(result, observations=chip.observations)
    )


def _batches(tiles: Iterable[Tile], size: int) -> Iterator[list[Tile]]:
    batch: list[Tile] = []
    for t in tiles:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


#: Reader threads of the in-process executor (GDAL releases the GIL while it reads and decodes).
READERS = 3


def local_results(job: Job, *, tiles: Iterable[Tile] | None = None) -> Iterator[TileResult]:
    """The in-process executor: reader threads prefetch the next batches while the model runs.

    Up to :data:`READERS` batches are read ahead (1 for streamed tiles, which are large: one
    tile is read while the model streams the other), so reading, the model and the writer's
    vectorizing thread overlap.
    """
    predictor = TilePredictor(job)
    batches = list(_batches(job.plan if tiles is None else tiles, job.options.batch_size))
    if not batches:
        return
    ahead = 1 if predictor.streamed else READERS
    with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="geounet-read") as pool:
        pending = [pool.submit(read_chips, job, b) for b in batches[:ahead]]
        for i, batch in enumerate(batches):
            chips = pending.pop(0).result()
            if i + ahead < len(batches):
                pending.append(pool.submit(read_chips, job, batches[i + ahead]))
            yield from predictor(batch, chips)


#: An executor: ``results(job, tiles=...)`` yields one :class:`TileResult` per tile of ``tiles``
#: (the whole plan when ``None``), in any order. :func:`local_results` and
#: :class:`geounet.distributed.RayExecutor` are the two shipped.
ResultsFn = Callable[..., Iterable[TileResult]]


def resumed(store: TileStore, computed: Iterable[TileResult]) -> Generator[TileResult, None, None]:
    """Cached tiles first, then an executor's results, recorded as they pass; closes the executor.

    Close the returned generator when done (also on error): that stops the executor (Ray actors).
    """
    try:
        yield from store.cached()
        yield from store.record(computed)
    finally:
        close = getattr(computed, "close", None)
        if close is not None:
            close()
