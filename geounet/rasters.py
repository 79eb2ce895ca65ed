"""The write stage: tile results → ``classes.tif``, ``confidence.tif``, on request ``probabilities.tif``
and ``observations.tif`` (and block polygons).

:func:`write_rasters` merges the results an executor yields (core crops, or blended
probabilities) into the COG writers of :mod:`geounet.write`, and vectorizes each finished
block in a thread meanwhile (:mod:`geounet.blocks`), so polygons are ready when the last tile is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from geounet import merge
from geounet.errors import InputError
from geounet.jobs import Job, TileResult
from geounet.model import NODATA_CLASS, Bundle
from geounet.planning import load_bundle

#: GDAL block cache (MB) while the rasters are written: bounded, so memory stays flat in raster size.
WRITE_CACHE_MB = 128


def write_rasters(job: Job, results: Iterable[TileResult]) -> dict[str, Any]:
    """Merge tile results into ``classes.tif`` and ``confidence.tif`` (COGs, written atomically).

    When polygons are wanted (and can be made block by block, :func:`geounet.blocks.streams`),
    each finished core is vectorized in a background thread while the model predicts the next
    tile; ``counts["vectors"]`` is then the finished polygon layer, which publishing keeps.

    GDAL's block cache is capped at :data:`WRITE_CACHE_MB` meanwhile: by default it may take 5%
    of the machine's memory and keeps every written block, so the writer's memory would grow
    with the raster.
    """
    import rasterio

    from geounet.write import CogWriter

    bundle = load_bundle(job.model_path)
    counts: dict[str, Any] = {"tiles": len(job.plan), "predicted": 0, "skipped": 0}
    blender = (
        merge.Blender(job.plan, n_classes=len(bundle.classes), window=job.options.blend_window)
        if job.options.merge == "blend"
        else None
    )
    class_ids = np.array([c.id for c in bundle.classes], dtype=np.uint8)
    with contextlib.ExitStack() as stack:
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=WRITE_CACHE_MB))
        writers = _raster_writers(job, bundle, stack)
        polygons = _block_polygons(job, bundle, stack)
        for res in results:
            counts["skipped" if res.skipped else "predicted"] += 1
            if polygons is not None and counts["predicted"] + counts["skipped"] == counts["tiles"]:
                polygons.model_done()  # the last tile: the vectorizer may take both cores
            if res.observations is not None:  # a skipped tile's count is 0: nothing to write
                writers["observations"].write(res.tile.core, res.observations)
            if blender is not None:
                if res.skipped:
                    blender.skip(res.tile)
                else:
                    assert res.probs is not None and res.valid is not None
                    blender.add(res.tile, res.probs.astype(np.float32), res.valid)
                for block in blender.ready():
                    c, f = merge.decide(block.probs, valid=block.valid, class_ids=class_ids)
                    _write_block(writers, polygons, block.window, c, f, block.probs)
            elif res.skipped:
                shape = res.tile.core.shape
                _write_block(writers, None, res.tile.core, np.full(shape, NODATA_CLASS, np.uint8),
                             np.full(shape, merge.NODATA_CONFIDENCE, np.uint8))  # fmt: skip
            else:
                assert res.classes is not None and res.confidence is not None
                _write_block(writers, polygons, res.tile.core, res.classes, res.confidence, res.probs)
        if counts["predicted"] == 0:  # raised inside the writers: they abort, no empty COG is left
            raise InputError(
                f"{job.source!r} has no valid pixel in any of its {counts['tiles']} tiles (all nodata or "
                "outside the AOI); check the input's nodata value, the AOI and the scenes' dates"
            )
        for writer in writers.values():
            if isinstance(writer, CogWriter):
                writer.finish_writing()  # GDAL's cached blocks go now, before the polygons' seams are dissolved
        if polygons is not None:
            counts["vectors"] = polygons.path
    return counts


def _raster_writers(job: Job, bundle: Bundle, stack: contextlib.ExitStack) -> dict[str, Any]:
    """The COG writers of the rasters the job asks for (classes always)."""
    from geounet.write import CogWriter

    writers: dict[str, Any] = {
        "classes": stack.enter_context(
            CogWriter(
                job.out_dir / "classes.tif",
                job.grid,
                dtype="uint8",
                nodata=NODATA_CLASS,
                classes=bundle.classes,
                resampling="mode",
                description="class id",
            )
        )
    }
    if "confidence" in job.options.outputs:
        writers["confidence"] = stack.enter_context(
            CogWriter(
                job.out_dir / "confidence.tif",
                job.grid,
                dtype="uint8",
                nodata=merge.NODATA_CONFIDENCE,
                resampling="average",
                description="confidence of the winning class (percent)",
            )
        )
    if "probabilities" in job.options.outputs:
        from geounet.publish.probabilities import ProbabilityWriter

        path = job.out_dir / "probabilities.tif"
        writers["probabilities"] = stack.enter_context(
            ProbabilityWriter(path, job.grid, classes=bundle.classes)
        )
    if "observations" in job.options.outputs:
        from geounet.publish import observations

        writers["observations"] = stack.enter_context(
            observations.writer(job.out_dir / "observations.tif", job.grid)
        )
    return writers


def _block_polygons(job: Job, bundle: Bundle, stack: contextlib.ExitStack) -> Any:
    """A :class:`geounet.blocks.BlockPolygons` when polygons are wanted and can stream, else None."""
    opts = job.options
    if "polygons" not in opts.outputs:
        return None  # before the import: geopandas and pandas cost ~1 s of a rasters-only run's start
    from geounet import blocks, publish

    if not blocks.streams(opts.simplify, job.grid):
        return None
    path = job.out_dir / f"polygons{publish.vector_extension(opts.vector_format)}"
    return stack.enter_context(
        blocks.BlockPolygons(
            path,
            grid=job.grid,
            classes=bundle.classes,
            fmt=opts.vector_format,
            simplify=opts.simplify,
            min_area=opts.min_area,
        )
    )


def _write_block(
    writers: dict[str, Any],
    polygons: Any,
    window: Any,
    classes: np.ndarray,
    conf: np.ndarray,
    probs: np.ndarray | None = None,
) -> None:
    writers["classes"].write(window, classes)
    if "confidence" in writers:
        writers["confidence"].write(window, conf)
    if "probabilities" in writers and probs is not None:  # None: a skipped tile, left nodata
        writers["probabilities"].write(window, probs, classes != NODATA_CLASS)
    if polygons is not None:
        polygons.add(window, classes, conf)
