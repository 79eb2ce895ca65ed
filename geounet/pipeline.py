"""Compose the stages of one prediction job: plan → read → predict → merge → write → publish.

Read it in data-flow order: :mod:`geounet.planning` (the job), :mod:`geounet.predict`
(read and predict, and the in-process executor), :mod:`geounet.rasters` (the write stage),
:mod:`geounet.publishing` (the publish stage). This module only runs them: :func:`run` takes
the results of an executor (:func:`geounet.predict.local_results`, or
:class:`geounet.distributed.RayExecutor`, which writes parts on its workers), resumes from the
tile cache and holds the output folder's lock. No Ray here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from geounet import publishing, rasters
from geounet.errors import ExecutionError, WriteError
from geounet.jobs import Job, TileResult
from geounet.predict import ResultsFn, local_results, resumed
from geounet.resume import TileStore

log = logging.getLogger(__name__)


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
        preview = publishing.start_preview(job)  # drawn while the model works
        store = TileStore.open(job, resume=resume)
        todo = [t for t in job.plan if t.index not in store.done]
        produce = getattr(results, "produce", None)
        if produce is not None:
            # A parts executor (Ray): workers read, predict, write raster parts and vectorize;
            # it assembles classes.tif/confidence.tif (and the polygon layer) from the parts.
            counts = produce(job, tiles=todo, store=store, progress=progress)
        else:
            stream = resumed(store, results(job, tiles=todo))
            try:
                counts = rasters.write_rasters(job, _progress(stream, total=len(job.plan), enabled=progress))
            finally:
                stream.close()  # stops the executor (Ray actors) even when writing failed
        counts["reused"] = store.reused
        raster_s = time.time() - started
        outputs = publishing.publish_outputs(
            job, counts=counts, timings={"rasters_s": raster_s}, started=started, preview=preview
        )
        store.remove()
        return outputs


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
