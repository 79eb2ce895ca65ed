"""geounet against the hand-written loop a user would write: speed, peak memory, seam error.

Run: ``python -m bench.baseline [--size 1024] [--width 16] [--repeats 3]``

The naive loop (:func:`naive_loop`) is the obvious script: rasterio windows of the model's
tile size in a for-loop, no overlap (edge tiles zero-padded to the tile size, the padding
cropped off again), one tile per forward pass, the probabilities stitched into one
whole-raster array in memory, argmax, one GeoTIFF written at the end. geounet runs
``plan`` + ``run`` with the same model, the same network input size and the same input,
and produces more (COGs with overviews, a confidence raster, polygons, areas, STAC Item...).

Each variant runs in a fresh process (``--child``), so its peak RSS (``ru_maxrss``) is its
own. Seam error: the fraction of pixels whose class differs from the *whole-image*
prediction (the whole raster, mirror-padded by the halo, in one forward pass), which is
what a tiled prediction should reproduce. geounet's overlap-tile cores make it 0 up to float
ties; the naive loop's tile edges see zero padding instead of their neighbours.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common


def naive_loop(src: Path, model_path: Path, out: Path) -> None:
    """The hand-written loop: non-overlapping windows, zero padding, whole-array stitching."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from geounet import model
    from geounet.model import networks

    b = model.load(model_path)
    net = networks.module_from_bundle(b)
    mean = np.array(b.normalization.mean, np.float32)[:, None, None]
    std = np.array(b.normalization.std, np.float32)[:, None, None]
    t = b.tile
    with rasterio.open(src) as ds:
        h, w = ds.height, ds.width
        probs = np.zeros((b.spec.n_classes, h, w), np.float32)
        for r in range(0, h, t):
            for c in range(0, w, t):
                win = Window(c, r, min(t, w - c), min(t, h - r))
                x = (ds.read(window=win).astype(np.float32) * b.normalization.scale - mean) / std
                xh, xw = x.shape[1:]
                x = np.pad(x, ((0, 0), (0, t - xh), (0, t - xw)))
                with torch.no_grad():
                    p = torch.softmax(net(torch.from_numpy(x[None])), dim=1)[0].numpy()
                probs[:, r : r + xh, c : c + xw] = p[:, :xh, :xw]
        profile = ds.profile | {"count": 1, "dtype": "uint8", "nodata": None, "predictor": 1}
    classes = np.asarray(b.class_ids, np.uint8)[probs.argmax(axis=0)]
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes, 1)


def geounet_run(src: Path, model_path: Path, out_dir: Path) -> None:
    """``geounet predict`` in-process: plan + run with the local executor."""
    from geounet import jobs, pipeline, planning

    job = planning.plan(src, model=model_path, out_dir=out_dir, options=jobs.PredictOptions(device="cpu"))
    pipeline.run(job, progress=False, resume=False)


def whole_image(src: Path, model_path: Path, out: Path) -> None:
    """Reference classes: the whole raster mirror-padded by the halo, one forward pass (saved .npy)."""
    import rasterio
    import torch

    from geounet import model
    from geounet.model import networks

    b = model.load(model_path)
    with rasterio.open(src) as ds:
        image = ds.read().astype(np.float32)
    _, h, w = image.shape
    halo, s = b.halo, b.spec.stride
    ph, pw = -(-(h + 2 * halo) // s) * s, -(-(w + 2 * halo) // s) * s
    padded = np.pad(image, ((0, 0), (halo, ph - h - halo), (halo, pw - w - halo)), mode="reflect")
    del image
    x = torch.from_numpy(model.normalize(padded[None], b.normalization))
    del padded
    with torch.inference_mode():
        net = networks.fuse_batchnorm(networks.module_from_bundle(b))
        logits = net(x)[0, :, halo : halo + h, halo : halo + w]
    classes = np.asarray(b.class_ids, np.uint8)[logits.argmax(dim=0).numpy()]
    np.save(out, classes)


CHILDREN = {"naive": naive_loop, "geounet": geounet_run, "whole": whole_image}


def child(args: argparse.Namespace) -> int:
    """Run one variant in this (fresh) process; print seconds and peak RSS as JSON."""
    fn = CHILDREN[args.child]
    t0 = time.perf_counter()
    fn(args.src, args.model, args.out)
    secs = time.perf_counter() - t0
    print(json.dumps({"seconds": secs, "peak_rss_mb": common.peak_rss_mb()}))
    return 0


def variant(which: str, src: Path, model_path: Path, out: Path, *, in_process: bool) -> dict[str, Any]:
    """Seconds and peak RSS of one variant: in a fresh process, or (smoke tests) in this one, RSS n/a."""
    if in_process:
        secs, _ = common.timed(lambda: CHILDREN[which](src, model_path, out))
        return {"seconds": secs, "peak_rss_mb": float("nan")}
    args = ["--child", which, "--src", str(src), "--model", str(model_path), "--out", str(out)]
    return common.run_child("bench.baseline", args)


def _classes_of(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1)


def seam_error(classes: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of pixels whose class differs from the reference.

    Example:
        >>> seam_error(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [1, 0]]))
        0.25
    """
    return float(np.mean(classes != reference))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from geounet import jobs, model

    info, src = common.announce(args.size, workdir=args.workdir)
    with tempfile.TemporaryDirectory(prefix="geounet-bench-") as tmp_s:
        tmp = Path(tmp_s)
        m = common.make_bundle(tmp / "model.safetensors", width=args.width, depth=args.depth, tile=args.tile)
        b = model.load(m)
        print(
            f"model: U-Net width {args.width} depth {args.depth} (random weights, steep head), "
            f"RF {b.receptive_field}, tile {b.tile}, halo {b.halo}"
        )
        ref_path = tmp / "whole.npy"
        whole = variant("whole", src, m, ref_path, in_process=args.in_process)
        reference = np.load(ref_path)
        print(f"  whole-image reference: {whole['seconds']:.1f} s, peak {whole['peak_rss_mb']:.0f} MiB")
        runs: dict[str, list[dict[str, Any]]] = {"naive": [], "geounet": []}
        errors: dict[str, float] = {}
        for i, which in common.interleave(args.repeats, "naive", "geounet"):
            out = tmp / f"{which}{i}"
            out_arg = out / "classes.tif" if which == "naive" else out
            out.mkdir()
            res = variant(which, src, m, out_arg, in_process=args.in_process)
            runs[which].append(res)
            errors[which] = seam_error(_classes_of(out / "classes.tif"), reference)
            print(f"  repeat {i} {which}: {res['seconds']:.1f} s, peak {res['peak_rss_mb']:.0f} MiB")
    mpx = args.size * args.size / 1e6
    secs = {k: common.Stat(tuple(r["seconds"] for r in v)) for k, v in runs.items()}
    rss = {k: common.Stat(tuple(r["peak_rss_mb"] for r in v)) for k, v in runs.items()}
    speed = common.Stat(
        tuple(n["seconds"] / g["seconds"] for n, g in zip(runs["naive"], runs["geounet"], strict=True))
    )
    rows = [
        {
            "variant": name,
            "s": secs[k].fmt(1),
            "Mpx/s": secs[k].map(lambda s: mpx / s).fmt(3),
            "peak RSS MiB": rss[k].fmt(0),
            "pixels != whole-image": f"{100 * errors[k]:.3f} %",
        }
        for k, name in (("naive", "hand-written loop"), ("geounet", "geounet predict (local)"))
    ]
    common.print_table(rows, title=f"baseline, {args.repeats} repeats (load {info['load1']} at start)")
    figures = {
        "naive Mpx/s": secs["naive"].map(lambda s: mpx / s).fmt(3),
        "geounet Mpx/s": secs["geounet"].map(lambda s: mpx / s).fmt(3),
        "speed geounet/naive": speed.fmt(2),
        "naive peak MiB": rss["naive"].fmt(0),
        "geounet peak MiB": rss["geounet"].fmt(0),
        "memory geounet/naive": f"{rss['geounet'].median / rss['naive'].median:.2f}",
        "naive seam error": f"{100 * errors['naive']:.3f}%",
        "geounet seam error": f"{100 * errors['geounet']:.3f}%",
        "whole-image s": f"{whole['seconds']:.1f}",
        "whole-image peak MiB": f"{whole['peak_rss_mb']:.0f}",
    }
    common.print_table([{"figure": k, "value": v} for k, v in figures.items()], title="ratios")
    settings = {
        "input": f"{args.size}^2 mirror-tiled S2",
        "tile": b.tile,
        "halo": b.halo,
        "width": args.width,
        "depth": args.depth,
        "repeats": args.repeats,
        "naive batch": 1,
        "geounet batch": jobs.PredictOptions().batch_size,
    }
    if not args.no_record:
        print(
            f"row appended to {common.append_result('baseline', settings=settings, results=figures, info=info)}"
        )
    return {"figures": figures, "errors": errors}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="input side, px (mirror-tiled real scene)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--tile", type=int, default=None, help="network input side [bundle default]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument(
        "--in-process", action="store_true", help="run the variants in this process (fast; no peak RSS)"
    )
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.child:
        return child(args)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
