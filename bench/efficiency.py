"""Pipeline efficiency: end-to-end ``predict`` throughput against the model-only ceiling.

Run: ``python -m bench.efficiency [--size 1024] [--width 16] [--batch 4] [--repeats 3] [--profile]``

Same model, tile, halo, batch and input for both:

(a) model-only: :meth:`geounet.infer.Predictor.predict` (forward + softmax) on pre-made
    float32 arrays of the exact tile shape, as many tiles as the pipeline predicts;
(b) end-to-end: ``plan`` + ``run`` from the GeoTIFF to the final COGs, polygons (GeoPackage),
    areas, quicklook, QGIS project, STAC Item and manifest, exactly what ``geounet predict`` does.

Both are reported in Mpx/s of the *output* grid and as the ratio (b)/(a) (target >= 0.90 on
CPU). (a) and (b) alternate (a, b, a, b, ...) so background load hits both alike; the ratio
is taken per pair. ``--profile`` adds one instrumented end-to-end run that reports where the
wall time goes, stage by stage (reads run in the prefetch thread, overlapped with the model).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common, flops


def model_only(bundle_path: Path, *, n_tiles: int, tile: int, batch: int, device: str) -> float:
    """Seconds for ``n_tiles`` forward passes of pre-made tiles in batches of ``batch``."""
    from geounet import infer, model

    b = model.load(bundle_path)
    pred = infer.Predictor(b, device=device, batch_size=batch)
    x = np.random.default_rng(0).standard_normal((batch, b.spec.in_channels, tile, tile), dtype=np.float32)
    pred.predict(x[:1])  # warm-up, as the pipeline's first batch pays it too (not timed there either)
    t0 = time.perf_counter()
    for i in range(0, n_tiles, batch):
        pred.predict(x[: min(batch, n_tiles - i)])
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far, all threads (contention-robust work measure)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def polygon_count(out_dir: Path) -> int:
    """Features in the run's polygon layer (vectorizing cost grows with it)."""
    import pyogrio

    return int(pyogrio.read_info(out_dir / "polygons.gpkg", layer="polygons")["features"])


def end_to_end(src: Path, bundle_path: Path, out_dir: Path, **options: Any) -> tuple[float, dict[str, int]]:
    """Seconds for ``plan`` + ``run`` (what ``geounet predict`` does) and the run's tile counts."""
    from geounet import jobs, pipeline, planning

    t0 = time.perf_counter()
    job = planning.plan(src, model=bundle_path, out_dir=out_dir, options=jobs.PredictOptions(**options))
    pipeline.run(job, progress=False, resume=False)
    secs = time.perf_counter() - t0
    import json

    counts = json.loads((out_dir / "run.json").read_text())["counts"]
    return secs, counts


# --------------------------------------------------------------------------- profile


class StageTimer:
    """Wall time and call count per stage, collected by wrapping geounet's stage functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):
            return self._wrap_generator(name, fn)

        @functools.wraps(fn)
        def timed_fn(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed_fn

    def _wrap_generator(self, name: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        """Time the work inside each step of a generator (not the consumer's work between steps)."""

        @functools.wraps(fn)
        def timed_gen(*args: Any, **kwargs: Any) -> Iterator[Any]:
            it = fn(*args, **kwargs)
            self.calls[name] += 1
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    self.seconds[name] += time.perf_counter() - t0
                yield item

        return timed_gen


#: (stage label, module, attribute) wrapped by --profile; labels say which thread runs them.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("plan (load bundle, sha256, open)", "geounet.planning", "plan"),
    ("bundle loads (model.load, all callers)", "geounet.model", "load"),
    ("read chips [reader thread]", "geounet.predict", "read_chips"),
    ("  rasterio read + mask [reader thread]", "geounet.read", "chip"),
    ("stack+normalize+forward (TilePredictor._probs)", "geounet.predict", "TilePredictor._probs"),
    ("  normalize", "geounet.model", "normalize"),
    ("  forward+softmax (Predictor.predict)", "geounet.infer", "Predictor.predict"),
    ("crop+decide (TilePredictor._result)", "geounet.predict", "TilePredictor._result"),
    ("streamed tile (TilePredictor._streamed)", "geounet.predict", "TilePredictor._streamed"),
    ("  forward strips (Predictor.predict_rows)", "geounet.infer", "Predictor.predict_rows"),
    ("vectorize polygons [block thread, overlapped]", "geounet.vectorize", "vectorize_block"),
    ("  dissolve seams [block thread]", "geounet.vectorize", "dissolve_seams"),
    ("COG window writes", "geounet.write", "CogWriter.write"),
    ("COG build (overviews + copy)", "geounet.write", "CogWriter.close"),
    ("resume log (savez + fsync)", "geounet.resume", "TileStore._flush"),
    ("publish: everything", "geounet.publishing", "publish_outputs"),
    ("  vectorize polygons", "geounet.vectorize", "polygons"),
    ("  vectorize polygons (streamed blocks)", "geounet.vectorize", "iter_polygons"),
    ("  write vectors (gpkg + style)", "geounet.publish", "write_vectors"),
    ("  write vectors (streamed, incl. vectorizing)", "geounet.publish", "write_vector_chunks"),
    ("  area table", "geounet.publish", "area_table"),
    ("  quicklook", "geounet.publish", "quicklook"),
    ("  QGIS project", "geounet.publish", "qgis_project"),
    ("  STAC item", "geounet.publish", "stac_item"),
)


@contextlib.contextmanager
def instrumented() -> Iterator[StageTimer]:
    """Wrap :data:`STAGES` for the duration of the block (restored afterwards)."""
    import importlib

    timer = StageTimer()
    restore: list[tuple[Any, str, Any]] = []
    for label, mod_name, attr in STAGES:
        owner: Any = importlib.import_module(mod_name)
        *path, name = attr.split(".")
        for p in path:
            owner = getattr(owner, p, None)
        if owner is None or not hasattr(owner, name):
            continue  # a stage that this version of geounet does not have
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        restore.append((owner, name, original))
        setattr(owner, name, timer.wrap(label, original))
    try:
        yield timer
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)


def profile_rows(timer: StageTimer, total: float) -> list[dict[str, Any]]:
    rows = []
    for label, _, _ in STAGES:
        if label in timer.seconds:
            s = timer.seconds[label]
            rows.append(
                {
                    "stage": label,
                    "calls": timer.calls[label],
                    "s": f"{s:.2f}",
                    "% of wall": f"{100 * s / total:.1f}",
                }
            )
    rows.append({"stage": "end-to-end wall", "calls": 1, "s": f"{total:.2f}", "% of wall": "100.0"})
    return rows


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure, print and (unless --no-record) log; returns the figures."""
    from geounet import jobs, model, planning

    info, src = common.announce(args.size, workdir=args.workdir)
    with tempfile.TemporaryDirectory(prefix="geounet-bench-") as tmp_s:
        tmp = Path(tmp_s)
        bundle_path = common.make_bundle(
            tmp / "model.safetensors", width=args.width, depth=args.depth, tile=args.tile
        )
        b = model.load(bundle_path)
        opts = {"batch_size": args.batch, "device": args.device}
        job = planning.plan(src, model=bundle_path, out_dir=tmp / "plan", options=jobs.PredictOptions(**opts))
        tile, n_plan = job.plan.read_size, len(job.plan)
        out_px = job.grid.rows * job.grid.cols
        print(
            f"model: U-Net width {args.width} depth {args.depth} (random weights), RF {b.receptive_field}; "
            f"tile {tile} = core {job.plan.size} + 2x halo {job.plan.halo}; {n_plan} tiles; batch {args.batch}; "
            f"device {args.device}"
        )
        secs: dict[str, list[float]] = {"a": [], "b": []}
        cpu: dict[str, list[float]] = {"a": [], "b": []}
        n_tiles, n_polygons = n_plan, 0
        for i, which in common.interleave(args.repeats, "b", "a"):
            c0 = cpu_seconds()
            if which == "b":
                s, counts = end_to_end(src, bundle_path, tmp / f"out{i}", **opts)
                n_tiles, n_polygons = counts["predicted"], polygon_count(tmp / f"out{i}")
            else:
                s = model_only(bundle_path, n_tiles=n_tiles, tile=tile, batch=args.batch, device=args.device)
            secs[which].append(s)
            cpu[which].append(cpu_seconds() - c0)
            print(
                f"  repeat {i} {'model-only' if which == 'a' else 'end-to-end'}: {s:.2f} s wall, "
                f"{cpu[which][-1]:.1f} s CPU"
            )
        a, bb = common.Stat(tuple(secs["a"])), common.Stat(tuple(secs["b"]))
        ratio = common.Stat(tuple(x / y for x, y in zip(secs["a"], secs["b"], strict=True)))
        cpu_ratio = common.Stat(tuple(x / y for x, y in zip(cpu["a"], cpu["b"], strict=True)))
        import torch

        with torch.inference_mode():
            from geounet.infer import Predictor

            module = Predictor(b, device="cpu", batch_size=1).module
        tile_flops = flops.count(module, (1, b.spec.in_channels, tile, tile))
        total_flops = tile_flops * n_tiles
        mpx = out_px / 1e6
        figures = {
            "model-only Mpx/s": a.map(lambda s: mpx / s).fmt(3),
            "end-to-end Mpx/s": bb.map(lambda s: mpx / s).fmt(3),
            "ratio (b)/(a)": ratio.fmt(3),
            "CPU-time ratio (a)/(b)": cpu_ratio.fmt(3),
            "polygons": n_polygons,
            "model-only s": a.fmt(1),
            "end-to-end s": bb.fmt(1),
            "kFLOP/output px": f"{total_flops / out_px / 1e3:.0f}",
            "kFLOP/network px": f"{tile_flops / tile**2 / 1e3:.0f}",
            "GFLOP/s model-only": a.map(lambda s: total_flops / s / 1e9).fmt(1),
            "GFLOP/s end-to-end": bb.map(lambda s: total_flops / s / 1e9).fmt(1),
        }
        common.print_table(
            [{"figure": k, "median (min-max)": v} for k, v in figures.items()],
            title=f"efficiency, {args.repeats} repeats (load {info['load1']} at start)",
        )
        if args.profile:
            with instrumented() as timer:
                wall, _ = end_to_end(src, bundle_path, tmp / "profile", **opts)
            common.print_table(profile_rows(timer, wall), title="where the end-to-end time goes (one run)")
            figures["profile"] = (
                "; ".join(f"{k.strip()} {v:.1f}s" for k, v in timer.seconds.items()) + f"; wall {wall:.1f}s"
            )
    settings = {
        "input": f"{args.size}^2 mirror-tiled S2",
        "tiles": n_tiles,
        "tile": tile,
        "halo": job.plan.halo,
        "batch": args.batch,
        "width": args.width,
        "depth": args.depth,
        "device": args.device,
        "repeats": args.repeats,
    }
    if not args.no_record:
        path = common.append_result("efficiency", settings=settings, results=figures, info=info)
        print(f"row appended to {path}")
    return {"settings": settings, "figures": figures, "ratio": ratio.median}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.efficiency", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="input side, px (mirror-tiled real scene)")
    ap.add_argument("--width", type=int, default=16, help="U-Net base width")
    ap.add_argument("--depth", type=int, default=4, help="U-Net depth")
    ap.add_argument("--tile", type=int, default=None, help="network input side [bundle default]")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="add one instrumented run: time per stage")
    ap.add_argument("--workdir", type=Path, default=None, help="where built inputs are cached [bench/_work]")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
