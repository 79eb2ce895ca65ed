"""Vectorizing speed: geounet's vectorizer against GDAL's polygonize on the same class raster.

Run: ``python -m bench.vectorize [--size 2048] [--workers 1 2] [--repeats 5]``

Input: a class raster with real spatial structure, from a steep 1x1 head (seeded random
weights x100 over the normalized bands, as a near-free model would give) over the real
Brandenburg Sentinel-2 bands mirror-tiled to ``--size``², plus its confidence (max softmax,
percent). Both are written as GeoTIFFs, and both variants read them:

* ``gdal``: ``rasterio.features.shapes`` on the class band (one GDAL polygonize call over
  the whole raster, 4-connectivity, map coordinates), consuming its generator;
* ``geounet w=N``: ``geounet.vectorize.iter_polygons`` with the confidence raster, all
  chunks consumed: 1024-px blocks, dissolved across block seams (feature count = connected
  components), attributes ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m``,
  ``mean_confidence``, map coordinates; ``N`` threads vectorize blocks at once.

Runs alternate (gdal, geounet w=1, geounet w=2, gdal, ...) so background load hits all
alike; figures are "median (min-max)" of polygons per second by wall time, and the speed
ratio geounet/gdal is taken per round. CPU seconds (this process, all threads) are
recorded too: on a shared machine they say how much work each variant did.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common

HEAD_STEEP = 100.0


def class_raster(src: Path, out_dir: Path, *, n_classes: int, seed: int) -> tuple[Path, Path, int, int]:
    """Classes and confidence of a steep 1x1 head over the bands of ``src``, written beside.

    Returns the two paths, the pixel count and the number of 4-connected regions.
    """
    import rasterio
    from scipy import ndimage

    from geounet.geo import Grid
    from geounet.model import ClassInfo
    from geounet.write import write_array

    with rasterio.open(src) as ds:
        bands = (ds.read().astype(np.float32) - 1500.0) / 700.0
        grid = Grid(shape=ds.shape, transform=ds.transform, crs=ds.crs.to_string())
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((n_classes, bands.shape[0])).astype(np.float32) * HEAD_STEEP
    bias = rng.standard_normal(n_classes).astype(np.float32) * 10.0
    logits = np.einsum("kc,chw->khw", weights, bands) + bias[:, None, None]
    classes = logits.argmax(0).astype(np.uint8)
    e = np.exp(logits - logits.max(0))
    confidence = np.round(100.0 * e.max(0) / e.sum(0)).astype(np.uint8)
    info = [ClassInfo(k, f"class{k}", "#808080") for k in range(n_classes)]
    classes_path = write_array(out_dir / "classes.tif", classes, grid, nodata=255, classes=info)
    conf_path = write_array(out_dir / "confidence.tif", confidence, grid, nodata=255)
    four = ndimage.generate_binary_structure(2, 1)
    regions = sum(ndimage.label(classes == v, structure=four)[1] for v in np.unique(classes))
    return classes_path, conf_path, classes.size, int(regions)


def gdal_polygons(classes_path: Path) -> int:
    """Features from one ``rasterio.features.shapes`` call over the whole class band."""
    import rasterio
    import rasterio.features

    with rasterio.open(classes_path) as ds:
        band = rasterio.band(ds, 1)
        mask = ds.read_masks(1) > 0
        return sum(
            1 for _ in rasterio.features.shapes(band, mask=mask, connectivity=4, transform=ds.transform)
        )


def geounet_polygons(classes_path: Path, conf_path: Path, *, n_classes: int, block: int, workers: int) -> int:
    """Features from ``geounet.vectorize.iter_polygons`` (dissolved, with attributes)."""
    from geounet import vectorize
    from geounet.model import ClassInfo

    info = [ClassInfo(k, f"class{k}", "#808080") for k in range(n_classes)]
    chunks = vectorize.iter_polygons(
        classes_path, classes=info, confidence_path=conf_path, block=block, workers=workers
    )
    return sum(len(c) for c in chunks)


def measure(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall s, CPU s of this process, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    return time.perf_counter() - t0, time.process_time() - c0, n


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure, print and (unless --no-record) log; returns the figures."""
    info, src = common.announce(args.size, workdir=args.workdir)
    with tempfile.TemporaryDirectory(prefix="geounet-bench-vec-") as tmp:
        classes_path, conf_path, pixels, regions = class_raster(
            src, Path(tmp), n_classes=args.classes, seed=args.seed
        )
        print(f"classes: steep 1x1 head (seed {args.seed}, {args.classes} classes): {regions} regions")
        variants: dict[str, Callable[[], int]] = {"gdal": lambda: gdal_polygons(classes_path)}
        for w in args.workers:
            variants[f"geounet w={w}"] = functools.partial(
                geounet_polygons, classes_path, conf_path, n_classes=args.classes, block=args.block, workers=w
            )
        geounet_polygons(classes_path, conf_path, n_classes=args.classes, block=args.block, workers=1)  # warm
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        for _, name in common.interleave(args.repeats, *variants):
            secs, cpu_s, n = measure(variants[name])
            if n != regions:
                raise SystemExit(f"{name} gave {n} polygons, expected {regions} (connected components)")
            wall[name].append(secs)
            cpu[name].append(cpu_s)
    rate = {k: common.Stat(tuple(regions / s for s in v)) for k, v in wall.items()}
    rows, results = [], {}
    for name in variants:
        ratio = common.Stat(tuple(g / s for g, s in zip(wall["gdal"], wall[name], strict=True)))
        cpu_ratio = statistics.median(cpu["gdal"]) / statistics.median(cpu[name])
        rows.append(
            {
                "variant": name,
                "wall s": common.Stat(tuple(wall[name])).fmt(2),
                "CPU s": common.Stat(tuple(cpu[name])).fmt(2),
                "polygons/s": rate[name].fmt(0),
                "speed vs gdal": ratio.fmt(2),
                "CPU-work ratio": f"{cpu_ratio:.2f}",
            }
        )
        results[f"{name} polygons/s"] = rate[name].fmt(0)
        if name != "gdal":
            results[f"{name}/gdal"] = ratio.fmt(2)
            results[f"{name}/gdal by CPU s"] = f"{cpu_ratio:.2f}"
    common.print_table(rows, title=f"{regions} polygons, {pixels / 1e6:.1f} Mpx ({args.repeats} rounds)")
    settings = {
        "size": f"{args.size}x{args.size}",
        "polygons": regions,
        "classes": f"steep 1x1 head, {args.classes} classes, seed {args.seed}",
        "block": args.block,
        "repeats": args.repeats,
        "input": "mirror-tiled real S2 (see bench/README.md)",
    }
    if not args.no_record:
        path = common.append_result("vectorize", settings=settings, results=results, info=info)
        print(f"appended to {path}")
    return {"settings": settings, "results": results, "rows": rows}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.vectorize", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="raster side, px (mirror-tiled real scene)")
    ap.add_argument("--classes", type=int, default=6, help="outputs of the 1x1 head")
    ap.add_argument("--seed", type=int, default=2, help="seed of the head's weights")
    ap.add_argument("--block", type=int, default=1024, help="geounet's vectorizing block, px")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="geounet thread counts to run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None, help="where built inputs are cached [bench/_work]")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
