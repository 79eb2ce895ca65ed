"""Plan a prediction job: the target grid, the band mapping and the tiles (first stage of a run).

:func:`plan` (a local raster) and :func:`plan_scenes` (STAC scenes) build the
:class:`~geounet.jobs.Job` that every later stage reads; :func:`plan_grid` sizes the tiles
from the memory budget; :func:`describe` prints the plan for ``--dry-run``. The bundle is
read once per process (:func:`load_bundle`), whichever stage asks first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from geounet import harmonize
from geounet import model as model_mod
from geounet import read as read_mod
from geounet.errors import ConfigError, ReadError
from geounet.geo import Grid
from geounet.jobs import Job, PredictOptions
from geounet.model import Bundle
from geounet.tiling import TileGrid
from geounet.tiling import grid as plan_tiles

log = logging.getLogger(__name__)


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
    shape: tuple[int, int], *, bundle: Bundle, options: PredictOptions, device_type: str | None = None
) -> tuple[TileGrid, PredictOptions]:
    """The tiles of a grid, and the options with the planned tile, halo and streaming filled in.

    Without ``options.tile`` the tile comes from the memory budget (:func:`geounet.budget.choose`:
    the largest exact tile that fits, scene spread evenly); ``options.tile`` forces a size.
    ``device_type`` (``cpu`` | ``cuda``) plans for that kind of device instead of the one
    ``options.device`` resolves to here, so a GPU plan can be made on a machine without one
    (``options.memory`` is then the budget: there is no device to ask).
    """
    from geounet import budget
    from geounet.infer import default_memory, resolve_device

    halo = bundle.halo if options.halo is None else options.halo
    device = resolve_device(options.device) if device_type is None else None
    kind = device.type if device is not None else str(device_type)
    tile = options.tile
    streamed = options.stream
    if streamed is None:
        streamed = kind != "cuda" and (tile or 0) >= budget.STREAM_MIN
    if tile is None:
        if options.memory is not None:
            memory = options.memory
        elif device is not None:
            memory = default_memory(device)
        else:
            raise ConfigError(
                f"planning for a {kind} device that is not here needs its memory budget; pass --memory, "
                "e.g. --memory 48GB for an 80 GB GPU at the default 60% share"
            )
        chosen = budget.choose(shape, spec=bundle.spec, halo=halo, memory=memory, device=kind,
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
    from geounet.infer import Predictor

    opts = job.options
    predictor = Predictor(
        load_bundle(job.model_path),
        device=opts.device,
        batch_size=opts.batch_size,
        amp=opts.amp,
        tta=opts.tta,
    )
    width = min(job.plan.read_size, 1024)
    x = np.zeros((predictor.bundle.spec.in_channels, 64, width), np.float32)
    for _ in predictor.predict_rows(x):  # warm-up (allocations, kernel choice)
        pass
    t0 = time.perf_counter()
    for _ in predictor.predict_rows(x):
        pass
    return x.shape[1] * x.shape[2] / max(time.perf_counter() - t0, 1e-9)
