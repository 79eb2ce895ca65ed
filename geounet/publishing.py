"""The publish stage of a job: its manifest (provenance) and :func:`geounet.publish.products`.

Runs after the rasters are written: polygons (unless the write stage made them), styles,
the STAC Item, the quicklook and ``manifest.json``.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geounet import __version__, safety
from geounet.jobs import Job
from geounet.model import Bundle
from geounet.planning import load_bundle

log = logging.getLogger(__name__)


def _preview_source(job: Job) -> Path | None:
    """The input file the quicklook is drawn over (a local raster, not scenes), or None."""
    return Path(job.source) if not job.scenes and Path(job.source).is_file() else None


def start_preview(job: Job) -> Future[Any] | None:
    """Draw the quicklook's RGB of the input in a thread now, while the model works (it needs
    only the input); :func:`publish_outputs` takes the result. None when there is no input file."""
    source = _preview_source(job)
    if source is None:
        return None

    def draw() -> Any:
        from geounet.publish import preview_rgb  # PIL and the publishers load here, off the main thread

        return preview_rgb(source, job.grid)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geounet-preview")
    try:
        return pool.submit(draw)
    finally:
        pool.shutdown(wait=False)


def publish_outputs(
    job: Job,
    *,
    counts: dict[str, Any],
    timings: dict[str, float],
    started: float,
    preview: Future[Any] | None = None,
) -> dict[str, Path]:
    """Polygons (unless the raster stage made them), styles, STAC Item, quicklook and manifest.

    ``preview``: :func:`start_preview`'s drawing; when it failed, the quicklook draws it again
    (and reports what is wrong with the input there).
    """
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
    more: dict[str, Path] = {
        n: job.out_dir / f"{n}.tif" for n in ("probabilities", "observations") if n in job.options.outputs
    }
    paths = publish.products(
        job.out_dir,
        classes_path=rasters["classes"],
        confidence_path=rasters.get("confidence"),
        classes=bundle.classes,
        vector_format=job.options.vector_format,
        simplify=job.options.simplify,
        min_area=job.options.min_area,
        preview_path=_preview_source(job),
        preview=_drawn(preview),
        manifest=manifest,
        polygons=Path(vectors) if vectors is not None else "polygons" in job.options.outputs,
        more_rasters=more,
    )
    log.info("published %d outputs in %.1f s", len(paths), time.time() - t0)
    return {**rasters, **more, **paths}


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


def _drawn(preview: Future[Any] | None) -> Any:
    """The preview a thread drew, or None when there is none or it failed (drawn again then)."""
    if preview is None:
        return None
    try:
        return preview.result()
    except Exception as exc:  # any failure: the quicklook reads the input itself and reports it
        log.debug("quicklook preview drawn ahead failed (%s); drawing it again", exc)
        return None
