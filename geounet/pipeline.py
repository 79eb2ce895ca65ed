"""Compose the stages of one prediction job: plan → read → predict → merge → write → publish.

No Ray here: :func:`local_results` is the plain in-process executor (with a reader
thread so GDAL decoding overlaps the forward pass); :mod:`geounet.distributed` runs
the same stage functions (:func:`read_chips`, :class:`TilePredictor`) in Ray tasks and
actors and hands its results to the same :func:`write_rasters`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from geounet import __version__, harmonize, merge, safety
from geounet import model as model_mod
from geounet import read as read_mod
from geounet.errors import ExecutionError, InputError, ReadError, WriteError
from geounet.geo import Grid
from geounet.jobs import Job, PredictOptions, TileResult
from geounet.model import NODATA_CLASS, Bundle
from geounet.read import Chip
from geounet.resume import TileStore
from geounet.tiling import Tile, TileGrid
from geounet.tiling import grid as plan_tiles

log = logging.getLogger(__name__)

#: GDAL block cache (MB) while the rasters are written: bounded, so memory stays flat in raster size.
WRITE_CACHE_MB = 128


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (the model hash recorded in manifests)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_bundle(path: str | Path) -> Bundle:
    """:func:`geounet.model.load`, cached in this process by path, size and modification time.

    A job's stages (plan, predict, write, publish) each need the bundle; the cache reads and
    verifies the file once per job instead of four times (~0.3 s each for a width-32 U-Net).
    """
    try:
        st = os.stat(path)
    except OSError:
        return model_mod.load(path)  # raises the typed "not found" error
    return _load_bundle(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_bundle(path: str, size: int, mtime_ns: int) -> Bundle:
    return model_mod.load(path)


def plan(source: str | Path, *, model: str | Path, out_dir: str | Path, options: PredictOptions) -> Job:
    """Plan a prediction of a local raster: grid, band mapping and tiles.

    Raises:
        InputNotFoundError, InputError, BundleError, ConfigError: with the value and the fix.
    """
    bundle = load_bundle(model)
    with read_mod.open_raster(source) as ds:
        grid = Grid.of_dataset(ds)
        bands = read_mod.band_indexes(ds, bundle.bands, explicit=options.bands)
    tiles, options = plan_grid(grid.shape, bundle=bundle, options=options)
    halo = tiles.halo
    if halo < bundle.receptive_field:
        log.warning(
            "halo=%d is below the model's receptive-field radius %d: tile seams may show; "
            "use --merge blend or --halo %d for an exact result",
            halo,
            bundle.receptive_field,
            model_mod.recommended_halo(bundle.spec),
        )
    return Job(
        source=str(source),
        model_path=str(model),
        out_dir=Path(out_dir),
        grid=grid,
        plan=tiles,
        bands=bands,
        options=options,
        model_sha256=file_sha256(model),
    )


def plan_grid(
    shape: tuple[int, int], *, bundle: Bundle, options: PredictOptions
) -> tuple[TileGrid, PredictOptions]:
    """The tiles of a grid, and the options with the planned tile, halo and streaming filled in.

    Without ``options.tile`` the tile comes from the memory budget (:func:`geounet.budget.choose`:
    the largest exact tile that fits, scene spread evenly); ``options.tile`` forces a size.
    """
    from geounet import budget
    from geounet.infer import default_memory, resolve_device

    halo = bundle.halo if options.halo is None else options.halo
    device = resolve_device(options.device)
    tile = options.tile
    streamed = options.stream
    if streamed is None:
        streamed = device.type != "cuda" and (tile or 0) >= budget.STREAM_MIN
    if tile is None:
        memory = options.memory or default_memory(device)
        chosen = budget.choose(shape, spec=bundle.spec, halo=halo, memory=memory, device=device.type,
                               amp=options.amp)  # fmt: skip
        tile, streamed = chosen.tile, chosen.streamed
        if not chosen.streamed:
            options = replace(options, batch_size=min(options.batch_size, chosen.batch))
    tiles = plan_tiles(shape, tile=tile, halo=halo, align=bundle.spec.stride)
    if streamed:  # streamed tiles go one at a time: a batch would only hold more chips in memory
        options = replace(options, batch_size=1)
    return tiles, replace(options, tile=tiles.read_size, halo=halo, stream=streamed)


def plan_scenes(
    scenes: Sequence[Any],
    *,
    model: str | Path,
    out_dir: str | Path,
    options: PredictOptions,
    grid: Grid | None = None,
    aoi: Any = None,
    source: str = "stac",
) -> Job:
    """Plan a prediction of STAC scenes (searched with the model's bands), composited onto ``grid``.

    Without ``grid`` the scenes' own pixel grid is the target (:func:`geounet.scenes.native_grid`),
    so predicting a STAC item gives what predicting its local file gives. ``aoi`` (shapely, in
    the grid's CRS) makes pixels outside it nodata. ``source`` labels the job in the manifest.

    Raises:
        InputError: no scenes, or scenes on different grids without a ``grid``.
        ReadError, BundleError, ConfigError: with the value and the fix.
    """
    from geounet import scenes as scenes_mod

    bundle = load_bundle(model)
    scenes, failed = scenes_mod.preflight(harmonize.for_bundle(scenes, bundle.provenance))
    if failed and not scenes:
        raise ReadError(f"no scene can be read: {failed[0]['error']}")
    for bad in failed:
        log.warning("scene %s left out: %s", bad["id"], bad["error"])
    target = grid if grid is not None else scenes_mod.native_grid(scenes)
    tiles, options = plan_grid(target.shape, bundle=bundle, options=options)
    dates = sorted(s.datetime for s in scenes if s.datetime is not None)
    extra: dict[str, Any] = {"scenes": [s.to_dict() for s in scenes]}
    if failed:
        extra["failed_scenes"] = failed
    if dates:
        extra["datetime"] = dates[-1].isoformat()
    return Job(
        source=source,
        model_path=str(model),
        out_dir=Path(out_dir),
        grid=target,
        plan=tiles,
        bands=tuple(range(1, len(bundle.bands) + 1)),
        options=options,
        model_sha256=file_sha256(model),
        extra=extra,
        scenes=tuple(scenes),
        aoi=aoi,
    )


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


def _scene_chips(job: Job, tiles: Sequence[Tile]) -> list[Chip | None]:
    """Chips composited from ``job.scenes`` onto ``job.grid``, invalid outside ``job.aoi``.

    A scene whose asset fails is logged and left out of the composite (the others still count).
    """
    from rasterio.features import geometry_mask
    from shapely.geometry import box

    from geounet import scenes as scenes_mod

    out: list[Chip | None] = []
    for tile in tiles:
        if job.aoi is not None and not job.aoi.intersects(box(*job.grid.window_grid(tile.core).bounds)):
            out.append(None)  # nothing of the AOI in this core: not read, written as nodata
            continue
        failures: list[Any] = []
        chip = scenes_mod.chip(
            list(job.scenes),
            tile,
            grid=job.grid,
            failures=failures,
            resampling=job.options.resampling,  # e.g. bilinear, as in training
            method=str(job.extra.get("composite", "first")),  # per-pixel rule (geounet.masks.METHODS)
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
        if failures and not chip.core_valid.any():
            raise failures[0]  # the failed scenes were all this tile had: never write it as nodata
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
            done = iter([self._streamed(c) for c in todo])
        else:
            probs = self._probs(todo) if todo else np.empty((0,))
            done = iter([self._result(c, p) for c, p in zip(todo, probs, strict=True)])
        return [
            TileResult(tile=t, skipped=True) if c is None else next(done)
            for t, c in zip(tiles, chips, strict=True)
        ]

    def _probs(self, chips: Sequence[Chip]) -> np.ndarray:
        batch = np.stack([c.data for c in chips])
        return self.predictor.predict(model_mod.normalize(batch, self.bundle.normalization))

    def _result(self, chip: Chip, probs: np.ndarray) -> TileResult:
        if self.job.options.merge == "blend":
            return TileResult(tile=chip.tile, probs=probs.astype(np.float16), valid=chip.valid)
        classes, confidence = merge.decide(
            merge.crop(probs, chip.tile), valid=chip.core_valid, class_ids=self.class_ids
        )
        return TileResult(tile=chip.tile, classes=classes, confidence=confidence)

    def _streamed(self, chip: Chip) -> TileResult:
        """One tile through the network strip by strip; only its core's classes are kept."""
        x = model_mod.normalize(chip.data, self.bundle.normalization)
        if self.job.options.merge == "blend":
            probs = np.empty((self.predictor.n_classes, *chip.data.shape[1:]), np.float16)
            for r0, p in self.predictor.predict_rows(x):
                probs[:, r0 : r0 + p.shape[1]] = p
            return TileResult(tile=chip.tile, probs=probs, valid=chip.valid)
        core = chip.tile.core_in_read
        classes = np.empty(core.shape, np.uint8)
        confidence = np.empty(core.shape, np.uint8)
        valid = chip.core_valid
        for r0, p in self.predictor.predict_rows(x):
            a, b = max(r0, core.row), min(r0 + p.shape[1], core.row_stop)
            if a < b:
                rows = slice(a - core.row, b - core.row)
                classes[rows], confidence[rows] = merge.decide(
                    p[:, a - r0 : b - r0, core.col : core.col_stop],
                    valid=valid[rows],
                    class_ids=self.class_ids,
                )
        return TileResult(tile=chip.tile, classes=classes, confidence=confidence)


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

    Up to :data:`READERS` batches are read ahead (2 for streamed tiles, which are large), so
    reading, the model and the writer's vectorizing thread overlap.
    """
    predictor = TilePredictor(job)
    batches = list(_batches(job.plan if tiles is None else tiles, job.options.batch_size))
    if not batches:
        return
    ahead = 2 if predictor.streamed else READERS
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


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Refuse a second job writing into the same output folder at the same time."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(
            f"cannot create output folder {str(out_dir)!r} ({exc.strerror}); choose a writable --out"
        ) from exc
    if not os.access(out_dir, os.W_OK):
        raise WriteError(f"output folder {str(out_dir)!r} is not writable; choose a writable --out")
    lock = FileLock(str(out_dir / ".geounet.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ExecutionError(
            f"another geounet job is writing into {str(out_dir)!r}; wait for it or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


def run(
    job: Job, *, results: ResultsFn = local_results, progress: bool | None = None, resume: bool = True
) -> dict[str, Path]:
    """Execute a planned job and publish its outputs; returns output name → path.

    Finished tiles are recorded in ``out_dir/.geounet-run`` (see :mod:`geounet.resume`); with
    ``resume`` a rerun after a crash reuses them and predicts only the rest.
    """
    with output_lock(job.out_dir):
        started = time.time()
        store = TileStore.open(job, resume=resume)
        todo = [t for t in job.plan if t.index not in store.done]
        produce = getattr(results, "produce", None)
        if produce is not None:
            # A parts executor (Ray): workers read, predict, write raster parts and vectorize;
            # it assembles classes.tif/confidence.tif (and the polygon layer) from the parts.
            counts = produce(job, tiles=todo, store=store, progress=progress)
        else:
            stream = _resumed(store, results(job, tiles=todo))
            try:
                counts = write_rasters(job, _progress(stream, total=len(job.plan), enabled=progress))
            finally:
                stream.close()  # stops the executor (Ray actors) even when writing failed
        counts["reused"] = store.reused
        raster_s = time.time() - started
        outputs = publish_outputs(job, counts=counts, timings={"rasters_s": raster_s}, started=started)
        store.remove()
        return outputs


def _resumed(store: TileStore, computed: Iterable[TileResult]) -> Generator[TileResult, None, None]:
    """Cached tiles first, then the executor's results, recorded as they pass; closes the executor."""
    try:
        yield from store.cached()
        yield from store.record(computed)
    finally:
        close = getattr(computed, "close", None)
        if close is not None:
            close()


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
            if blender is not None:
                if res.skipped:
                    blender.skip(res.tile)
                else:
                    assert res.probs is not None and res.valid is not None
                    blender.add(res.tile, res.probs.astype(np.float32), res.valid)
                for block in blender.ready():
                    c, f = merge.decide(block.probs, valid=block.valid, class_ids=class_ids)
                    _write_block(writers, polygons, block.window, c, f)
            elif res.skipped:
                shape = res.tile.core.shape
                _write_block(writers, None, res.tile.core, np.full(shape, NODATA_CLASS, np.uint8),
                             np.full(shape, merge.NODATA_CONFIDENCE, np.uint8))  # fmt: skip
            else:
                assert res.classes is not None and res.confidence is not None
                _write_block(writers, polygons, res.tile.core, res.classes, res.confidence)
        if counts["predicted"] == 0:  # raised inside the writers: they abort, no empty COG is left
            raise InputError(
                f"{job.source!r} has no valid pixel in any of its {counts['tiles']} tiles (all nodata or "
                "outside the AOI); check the input's nodata value, the AOI and the scenes' dates"
            )
        if polygons is not None:
            counts["vectors"] = polygons.path
    return counts


def _raster_writers(job: Job, bundle: Bundle, stack: contextlib.ExitStack) -> dict[str, Any]:
    """The COG writers of the rasters the job asks for (classes always)."""
    from geounet.write import CogWriter

    writers = {
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
    return writers


def _block_polygons(job: Job, bundle: Bundle, stack: contextlib.ExitStack) -> Any:
    """A :class:`geounet.blocks.BlockPolygons` when polygons are wanted and can stream, else None."""
    from geounet import blocks, publish

    opts = job.options
    if "polygons" not in opts.outputs or not blocks.streams(opts.simplify, job.grid):
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
    writers: dict[str, Any], polygons: Any, window: Any, classes: np.ndarray, conf: np.ndarray
) -> None:
    writers["classes"].write(window, classes)
    if "confidence" in writers:
        writers["confidence"].write(window, conf)
    if polygons is not None:
        polygons.add(window, classes, conf)


def publish_outputs(
    job: Job, *, counts: dict[str, Any], timings: dict[str, float], started: float
) -> dict[str, Path]:
    """Polygons (unless the raster stage made them), styles, STAC Item, quicklook and manifest."""
    from geounet import publish

    bundle = load_bundle(job.model_path)
    t0 = time.time()
    counts = dict(counts)
    vectors = counts.pop("vectors", None)
    manifest = safety.redact_obj(
        manifest_for(job, bundle=bundle, counts=counts, timings=timings, started=started)
    )
    rasters = {"classes": job.out_dir / "classes.tif"}
    if "confidence" in job.options.outputs:
        rasters["confidence"] = job.out_dir / "confidence.tif"
    paths = publish.products(
        job.out_dir,
        classes_path=rasters["classes"],
        confidence_path=rasters.get("confidence"),
        classes=bundle.classes,
        vector_format=job.options.vector_format,
        simplify=job.options.simplify,
        min_area=job.options.min_area,
        preview_path=Path(job.source) if not job.scenes and Path(job.source).is_file() else None,
        manifest=manifest,
        polygons=Path(vectors) if vectors is not None else "polygons" in job.options.outputs,
    )
    log.info("published %d outputs in %.1f s", len(paths), time.time() - t0)
    return {**rasters, **paths}


def manifest_for(
    job: Job, *, bundle: Bundle, counts: dict[str, int], timings: dict[str, float], started: float
) -> dict[str, Any]:
    """Provenance of a run: inputs, model hash, options, tile counts, versions, timings."""
    import rasterio
    import torch

    return {
        "geounet_version": __version__,
        "created": datetime.now(UTC).isoformat(),
        "started": datetime.fromtimestamp(started, UTC).isoformat(),
        "source": job.source,
        "model": {"path": job.model_path, "sha256": job.model_sha256, "bands": list(bundle.bands)},
        "grid": {
            "shape": list(job.grid.shape),
            "transform": list(job.grid.transform)[:6],
            "crs": job.grid.crs,
        },
        "tiling": {"tile": job.plan.read_size, "core": job.plan.size, "halo": job.plan.halo},
        "options": {k: v for k, v in asdict(job.options).items() if k != "bands"}
        | {"bands": list(job.bands)},
        "counts": counts,
        "timings": timings,
        "versions": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "torch": torch.__version__,
            "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__,
        },
        **job.extra,
    }


def _progress(results: Iterable[TileResult], *, total: int, enabled: bool | None) -> Iterator[TileResult]:
    """Progress bar on a terminal (tiles, tiles/s, ETA); plain log lines every ~10% otherwise."""
    interactive = sys.stderr.isatty() and not os.environ.get("CI") if enabled is None else enabled
    if interactive:
        from tqdm import tqdm

        yield from tqdm(results, total=total, unit="tile", desc="predict", dynamic_ncols=True)
        return
    step = max(total // 10, 1)
    t0 = time.time()
    for i, res in enumerate(results, start=1):
        if i % step == 0 or i == total:
            rate = i / max(time.time() - t0, 1e-9)
            log.info("predict: %d/%d tiles (%.1f tiles/s, ETA %.0f s)", i, total, rate, (total - i) / rate)
        yield res


def describe(job: Job, *, probe: bool = False) -> str:
    """The tile plan as text, for ``--dry-run``: tiles, network px per output px, memory, time.

    With ``probe`` the model runs once on a small strip on the job's device to measure its
    speed here, and ``expected_s`` estimates the forward passes (the other stages overlap them).
    """
    from geounet import budget

    g, p = job.grid, job.plan
    bundle = load_bundle(job.model_path)
    seen = len(p) * p.read_size**2
    streamed = bool(job.options.stream)
    info: dict[str, Any] = {
        "source": job.source,
        "grid": {"rows": g.rows, "cols": g.cols, "crs": g.crs, "resolution": g.resolution},
        "tiles": len(p),
        "tile_rows": p.n_rows,
        "tile_cols": p.n_cols,
        "tile": p.read_size,
        "core": p.size,
        "halo": p.halo,
        "receptive_field": bundle.receptive_field,
        "exact": p.halo >= bundle.receptive_field,
        "network_px_per_output_px": round(seen / (g.rows * g.cols), 3),
        "streamed": streamed,
        "batch_size": 1 if streamed else job.options.batch_size,
        "memory_estimate_mb": round(
            budget.tile_bytes(bundle.spec, p.read_size, streamed=streamed)
            * (1 if streamed else job.options.batch_size)
            / 2**20
        ),
        "bands": list(job.bands),
        "merge": job.options.merge,
        "outputs": list(job.options.outputs),
        "pixels": g.rows * g.cols,
    }
    if probe:
        rate = _probe_rate(job)
        info["model_mpx_per_s"] = round(rate / 1e6, 3)
        info["expected_s"] = round(seen / rate, 1)
    return json.dumps(info, indent=2)


def _probe_rate(job: Job) -> float:
    """Network pixels per second of the job's model on its device, timed on one small strip."""
    predictor = TilePredictor(job).predictor
    width = min(job.plan.read_size, 1024)
    x = np.zeros((predictor.bundle.spec.in_channels, 64, width), np.float32)
    for _ in predictor.predict_rows(x):  # warm-up (allocations, kernel choice)
        pass
    t0 = time.perf_counter()
    for _ in predictor.predict_rows(x):
        pass
    return x.shape[1] * x.shape[2] / max(time.perf_counter() - t0, 1e-9)
