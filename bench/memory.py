"""Peak memory of prediction as the raster grows: in-process vs Ray (self-contained benchmark).

    python -m bench.memory                         # 2000², 6000², 10980²; executors local and ray
    python -m bench.memory --sizes 2000,6000 --executors ray --no-log

For each size it builds (once, cached under ``bench/_work/memory/``) a 3-band uint8 GeoTIFF by
mirror-tiling (symmetric reflection) the real Landsat 7 scene ``landsat7-rgb/RGB.byte.tif``
of the data folder (``$GEOUNET_DATA``, default ``../shared/data``; 791×718 px, so the large
inputs repeat it, nodata border included). Each (size, executor) runs in a fresh child
process: plan → read → predict → stream into the two COG writers (``rasters.write_rasters``;
with ``--publish`` also vectorizing and publishing, i.e. the whole ``geounet predict``). The parent samples the child's
whole process tree every 0.2 s (for Ray: the driver, GCS, raylet, every worker and actor) and
reports the peak of the summed RSS and the peak of the summed PSS (RSS double-counts shared
pages such as the object store and shared libraries; PSS splits them, so it is the fairer sum).

A flat peak across sizes is the claim under test: no process ever holds the whole raster.
One dated row per run is appended to ``bench/RESULTS.md`` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "_work" / "memory"
RESULTS = ROOT / "bench" / "RESULTS.md"
SCENE = "landsat7-rgb/RGB.byte.tif"
SOURCE_NOTE = (
    f"input: mirror-tiled (symmetric reflection) from the real Landsat 7 scene {SCENE} (791x718, RGB)"
)

_HEADER = """# Benchmark results

Appended by `python -m bench.<name>` (one dated row per run; see bench/README.md).

| date (UTC) | benchmark | machine | settings | results |
|---|---|---|---|---|
"""


def data_dir() -> Path:
    """``$GEOUNET_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("GEOUNET_DATA", str(ROOT.parent / "shared" / "data")))


def mirror_index(n: int, period: int) -> np.ndarray:
    """Indexes 0..n-1 folded into 0..period-1 by symmetric reflection (0 1 2 | 2 1 0 | 0 1 2 ...).

    >>> mirror_index(7, 3).tolist()
    [0, 1, 2, 2, 1, 0, 0]
    """
    i = np.arange(n) % (2 * period)
    return np.where(i < period, i, 2 * period - 1 - i)


def mirror_input(size: int) -> Path:
    """A size×size mirror-tiled copy of the real scene (tiled, deflate), built once and cached."""
    import rasterio

    path = WORK / f"landsat_mirror_{size}.tif"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    with rasterio.open(data_dir() / SCENE) as src:
        scene = src.read()
        profile = src.profile
    rows, cols = mirror_index(size, scene.shape[1]), mirror_index(size, scene.shape[2])
    profile.update(
        driver="GTiff",
        width=size,
        height=size,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
    )
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, size, 512):
            r = rows[r0 : r0 + 512]
            block = scene[:, r][:, :, cols]
            dst.write(block, window=rasterio.windows.Window(0, r0, size, len(r)))
    os.replace(tmp, path)
    return path


def bundle_path() -> Path:
    """A tiny random U-Net for the 3 bands (depth 2, width 4): the model's size is not what is measured."""
    from geounet import model
    from geounet.model import ClassInfo, ModelSpec, networks

    path = WORK / "rgb_d2w4.safetensors"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        classes = (
            ClassInfo(0, "dark", "#1f78b4"),
            ClassInfo(1, "mid", "#33a02c"),
            ClassInfo(2, "bright", "#e31a1c"),
        )
        bundle = networks.init_bundle(
            bands=("red", "green", "blue"),
            classes=classes,
            spec=ModelSpec(in_channels=3, n_classes=3, depth=2, width=4),
            normalization=model.Normalization(mean=(60.0,) * 3, std=(30.0,) * 3),
            seed=0,
        )
        model.save(bundle, path)
    return path


# --------------------------------------------------------------------------- child


def child(args: argparse.Namespace) -> None:
    """Run one job's rasters and print a JSON line: tiles, seconds."""
    from geounet import jobs, planning, predict, publishing, rasters

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = jobs.PredictOptions(tile=args.tile, halo=args.halo, batch_size=args.batch_size)
    job = planning.plan(args.input, model=args.model, out_dir=out, options=options)
    if args.executor == "ray":
        from geounet.distributed import RayExecutor
        from geounet.pool import RayOptions

        results: Any = RayExecutor(RayOptions(object_store_mb=args.object_store_mb))
    else:
        results = predict.local_results
    start = time.perf_counter()
    first: list[float] = []

    def timed() -> Any:
        for res in results(job):
            if not first:
                first.append(time.perf_counter())
            yield res

    counts = rasters.write_rasters(job, timed())
    if args.publish:  # polygons, styles, STAC Item, quicklook: the whole `geounet predict`
        publishing.publish_outputs(job, counts=counts, timings={}, started=start)
    end = time.perf_counter()
    steady = (len(job.plan) - 1) / max(end - first[0], 1e-9) if len(job.plan) > 1 else float("nan")
    print(
        json.dumps(
            {
                "tiles": len(job.plan),
                "predicted": counts["predicted"],
                "seconds": end - start,
                "startup_s": first[0] - start,
                "steady_tiles_per_s": steady,
            }
        )
    )


# --------------------------------------------------------------------------- parent


@dataclass
class Peak:
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    driver_rss_mb: float = 0.0
    driver_uss_mb: float = 0.0
    processes: int = 0


def _sample(pid: int, peak: Peak, stop: threading.Event) -> None:
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss = pss = 0.0
        for p in procs:
            try:
                info = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        peak.rss_mb = max(peak.rss_mb, rss / 2**20)
        peak.pss_mb = max(peak.pss_mb, pss / 2**20)
        peak.processes = max(peak.processes, len(procs))
        try:
            driver = root.memory_full_info()
        except psutil.NoSuchProcess:
            return
        peak.driver_rss_mb = max(peak.driver_rss_mb, driver.rss / 2**20)
        peak.driver_uss_mb = max(peak.driver_uss_mb, getattr(driver, "uss", driver.rss) / 2**20)
        stop.wait(0.2)


def measure(size: int, executor: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one child and sample its process tree; returns the row of the results table."""
    source = mirror_input(size)
    out = WORK / f"out_{executor}_{size}"
    cmd = [
        sys.executable,
        "-m",
        "bench.memory",
        "--child",
        "--input",
        str(source),
        "--model",
        str(bundle_path()),
        "--out",
        str(out),
        "--executor",
        executor,
        "--tile",
        str(args.tile),
        "--halo",
        str(args.halo),
        "--batch-size",
        str(args.batch_size),
        *(["--object-store-mb", str(args.object_store_mb)] if args.object_store_mb else []),
        *(["--publish"] if args.publish else []),
    ]
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, stop = Peak(), threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc.pid, peak, stop), daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{executor} {size}² failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    run = json.loads(stdout.strip().splitlines()[-1])
    return {
        "size": f"{size}x{size}",
        "executor": executor,
        "tiles": run["tiles"],
        "seconds": round(run["seconds"], 1),
        "tiles_per_s": round(run["tiles"] / run["seconds"], 2),
        "startup_s": round(run["startup_s"], 1),
        "steady_tiles_per_s": round(run["steady_tiles_per_s"], 2),
        "peak_rss_sum_mb": round(peak.rss_mb),
        "peak_pss_sum_mb": round(peak.pss_mb),
        "driver_peak_rss_mb": round(peak.driver_rss_mb),
        "driver_peak_uss_mb": round(peak.driver_uss_mb),
        "processes": peak.processes,
    }


def machine() -> str:
    """CPU model, usable cores, load, memory, GPU and versions, on one line."""
    import rasterio
    import torch

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        import ray

        ray_v = ray.__version__
    except ImportError:
        ray_v = "-"
    return (
        f"{cpu}, {cores} cores, load {os.getloadavg()[0]:.1f}, {mem:.1f} GB, GPU {gpu}; "
        f"torch {torch.__version__}, GDAL {rasterio.__gdal_version__}, ray {ray_v}"
    )


def append_row(settings: str, results: str, machine_line: str) -> None:
    """One dated row in bench/RESULTS.md (created with its header when missing)."""
    if not RESULTS.exists() or not RESULTS.read_text().strip():
        RESULTS.write_text(_HEADER)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    cells = [when, "memory", machine_line, settings, results]
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write("| " + " | ".join(c.replace("|", "/") for c in cells) + " |\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,6000,10980", help="square raster sides, comma-separated")
    parser.add_argument("--executors", default="local,ray", help="local and/or ray, comma-separated")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--halo", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--object-store-mb", type=int, default=None, help="object store of the local Ray")
    parser.add_argument("--no-log", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also vectorize and publish (the whole predict), not rasters only",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--executor", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    machine_line = machine()
    print(SOURCE_NOTE)
    print(f"machine: {machine_line}")
    print(
        f"model: U-Net depth 2 width 4 (random), tile {args.tile}, halo {args.halo}, batch {args.batch_size}"
    )
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for executor in args.executors.split(","):
            row = measure(size, executor, args)
            rows.append(row)
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if not args.no_log:
        store = f", object store {args.object_store_mb} MB" if args.object_store_mb else ""
        settings = f"tile={args.tile}, halo={args.halo}, batch={args.batch_size}{store}, {'rasters + polygons/publish' if args.publish else 'rasters only'}; {SOURCE_NOTE}"
        results = "; ".join(
            f"{r['executor']} {r['size']}: peak RSS sum {r['peak_rss_sum_mb']} MB, PSS sum "
            f"{r['peak_pss_sum_mb']} MB, driver RSS {r['driver_peak_rss_mb']} MB (USS {r['driver_peak_uss_mb']} MB), "
            f"{r['tiles_per_s']} tiles/s "
            f"({r['steady_tiles_per_s']} after {r['startup_s']} s start-up)"
            for r in rows
        )
        append_row(settings, results, machine_line)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
