"""Shared helpers of the benchmarks: machine info, inputs, bundles, timing, the results log.

Every benchmark prints a table and appends one dated row to ``bench/RESULTS.md`` (see
:func:`append_result`) that names the machine (CPU model, cores, load, GPU, versions), so
figures from different machines and days stay comparable.

Inputs larger than the real data are built by mirror-tiling (symmetric reflection) the
real Sentinel-2 scene of the data folder (``GEOUNET_DATA``, default ``../shared/data``):
:func:`mirror_scene` says so in what it returns (:data:`SOURCE_NOTE`), and benchmarks
print it. Built inputs are cached under ``bench/_work/`` (git-ignored).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
WORK = ROOT / "bench" / "_work"

#: The real scene the large inputs are made from: Sentinel-2A L1C, T33UUU, 2017-02-16, 10 m bands.
S2_DIR = "s2-brandenburg-20170216"
S2_BANDS = ("B02", "B03", "B04", "B08")
SOURCE_NOTE = (
    "input: mirror-tiled (symmetric reflection) from the real Sentinel-2 L1C scene "
    f"{S2_DIR} (T33UUU 2017-02-16, bands {'/'.join(S2_BANDS)}, 768x1536 px at 10 m)"
)

_RESULTS_HEADER = """# Benchmark results

Appended by `python -m bench.<name>` (one dated row per run; see bench/README.md).
Figures are "median (min-max)" over the repeats of one run. `load` is the 1-minute load
average at the start of the run: on a shared machine it says how noisy the figures are.

| date (UTC) | benchmark | machine | settings | results |
|---|---|---|---|---|
"""


# --------------------------------------------------------------------------- machine


def data_dir() -> Path:
    """The real data folder: ``$GEOUNET_DATA``, defaulting to ``../shared/data`` beside the repository."""
    path = Path(os.environ.get("GEOUNET_DATA", str(ROOT.parent / "shared" / "data")))
    if not (path / "README.md").exists():
        raise SystemExit(f"real data not found at {path}; set GEOUNET_DATA to the shared data folder")
    return path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first CUDA device's name, or None when torch sees no GPU."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def git_commit() -> str:
    """The short commit of the working tree ('+dirty' when it has changes), or '-'."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "-"
    return out.stdout.strip() or "-"


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU, cores (usable/logical), load, GPU, library versions."""
    import rasterio
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": usable,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load1": round(os.getloadavg()[0], 1),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": gpu_name() or "none",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "ray": _version("ray"),
        "geounet": _version("geounet"),
        "commit": git_commit(),
    }


def machine_line(info: Mapping[str, Any]) -> str:
    """One-line summary of :func:`machine_info` for tables and the results log."""
    return (
        f"{info['cpu']}, {info['cores']} cores, load {info['load1']}, {info['memory_gb']} GB, "
        f"GPU {info['gpu']}; torch {info['torch']}, GDAL {info['gdal']}, ray {info['ray']}, "
        f"geounet {info['geounet']}@{info['commit']}"
    )


# --------------------------------------------------------------------------- results


def append_result(
    benchmark: str,
    *,
    settings: Mapping[str, Any],
    results: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
    path: Path | None = None,
) -> Path:
    """Append one dated row to the results log (``bench/RESULTS.md`` unless ``path``).

    ``$GEOUNET_BENCH_RESULTS`` overrides the default path (the smoke tests point it at a
    temp file so that they do not touch the real log).
    """
    path = path or Path(os.environ.get("GEOUNET_BENCH_RESULTS", str(RESULTS)))
    info = info or machine_info()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    row = "| " + " | ".join(
        cell.replace("|", "/").replace("\n", " ")
        for cell in (when, benchmark, machine_line(info), _kv(settings), _kv(results))
    )
    if not path.exists() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_RESULTS_HEADER)
    with path.open("a", encoding="utf-8") as f:
        f.write(row + " |\n")
    return path


def _kv(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def print_table(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> None:
    """Print rows (dicts with the same keys) as an aligned text table."""
    if title:
        print(f"\n{title}")
    if not rows:
        print("(no rows)")
        return
    keys = list(rows[0])
    cells = [[str(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass(frozen=True)
class Stat:
    """Median and spread (min, max) of repeated measurements."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    def fmt(self, digits: int = 2) -> str:
        """``median (min-max)``; just the value for a single measurement."""
        if len(self.values) == 1:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} ({self.lo:.{digits}f}-{self.hi:.{digits}f})"

    def map(self, fn: Callable[[float], float]) -> Stat:
        return Stat(tuple(fn(v) for v in self.values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call of ``fn`` and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(module: str, args: Sequence[str], *, timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh process; its last stdout line is a JSON result.

    A fresh process gives each variant its own peak RSS and a cold start like a user's.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"python -m {module} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- inputs


@functools.cache
def real_scene() -> tuple[np.ndarray, dict[str, Any]]:
    """The real Brandenburg Sentinel-2 10 m bands B02, B03, B04, B08: uint16 (4, 768, 1536) and profile."""
    import rasterio

    img = data_dir() / S2_DIR / "IMG_DATA"
    arrays = []
    for band in S2_BANDS:
        with rasterio.open(img / f"T33UUU_20170216T102101_{band}.jp2") as src:
            arrays.append(src.read(1))
            profile = {"crs": src.crs, "transform": src.transform}
    return np.stack(arrays), profile


def mirror_index(n: int, period: int) -> np.ndarray:
    """Indexes 0..n-1 folded onto 0..period-1 by symmetric reflection (0 1 2 2 1 0 0 1 ...).

    Example:
        >>> mirror_index(8, 3).tolist()
        [0, 1, 2, 2, 1, 0, 0, 1]
    """
    i = np.arange(n) % (2 * period)
    return np.where(i < period, i, 2 * period - 1 - i)


def announce(size: int, *, workdir: Path | None = None) -> tuple[dict[str, Any], Path]:
    """Print the machine and the input (mirror-tiled real scene, built once), return both."""
    info = machine_info()
    print(machine_line(info))
    src = mirror_scene(size, workdir=workdir)
    print(f"{SOURCE_NOTE}; {size}x{size} px, {src}")
    return info, src


def mirror_scene(rows: int, cols: int | None = None, *, workdir: Path | None = None) -> Path:
    """A 4-band uint16 GeoTIFF of ``rows x cols`` mirror-tiled from the real scene (cached).

    Written like a COG source (512 px tiles, deflate + horizontal predictor), strip by strip
    so that memory stays small at 10980², to a temp name and renamed when complete. Band
    descriptions are the Sentinel-2 band names, so bundles with those bands find them.
    """
    import rasterio

    cols = cols or rows
    workdir = workdir or WORK
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"s2_mirror_{rows}x{cols}.tif"
    if path.exists():
        return path
    scene, ref = real_scene()
    _, h, w = scene.shape
    ri, ci = mirror_index(rows, h), mirror_index(cols, w)
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": len(S2_BANDS),
        "dtype": "uint16",
        "crs": ref["crs"],
        "transform": ref["transform"],
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "predictor": 2,
        "bigtiff": "if_safer",
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for i, band in enumerate(S2_BANDS, start=1):
            dst.set_band_description(i, band)
        for r0 in range(0, rows, 512):
            r1 = min(rows, r0 + 512)
            strip = scene[:, ri[r0:r1]][:, :, ci]
            dst.write(strip, window=rasterio.windows.Window(0, r0, cols, r1 - r0))
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- models


def make_bundle(
    path: Path,
    *,
    width: int = 32,
    depth: int = 4,
    n_classes: int = 4,
    tile: int | None = None,
    seed: int = 0,
    steep: float = 100.0,
) -> Path:
    """A randomly initialised U-Net bundle for the Sentinel-2 bands, saved to ``path``.

    Weights are random (no trained model ships with the repository); the output head is
    multiplied by ``steep`` so the class decision is not a near-tie everywhere (as in
    tests/test_pipeline.py) and polygons and seams look like a real model's. Normalization
    is a fixed, plausible one for L1C digital numbers.
    """
    from geounet import model
    from geounet.model import networks

    spec = model.ModelSpec(in_channels=len(S2_BANDS), n_classes=n_classes, depth=depth, width=width)
    palette = ("#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3", "#fb9a99")
    classes = [model.ClassInfo(k, f"class{k}", palette[k % len(palette)]) for k in range(n_classes)]
    bundle = networks.init_bundle(
        bands=S2_BANDS,
        classes=classes,
        spec=spec,
        normalization=model.Normalization(mean=(1500.0,) * 4, std=(700.0,) * 4),
        tile=tile,
        seed=seed,
    )
    weights = dict(bundle.weights)
    weights["head.weight"] = weights["head.weight"] * steep
    path.parent.mkdir(parents=True, exist_ok=True)
    return model.save(dataclasses.replace(bundle, weights=weights), path)


def interleave(n: int, *names: str) -> Iterator[tuple[int, str]]:
    """(repeat, name) pairs a, b, a, b, ...: alternating variants spreads background load evenly."""
    for i in range(n):
        for name in names:
            yield i, name
