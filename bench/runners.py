"""The runners geounet is compared with, each a child process of the benchmark.

    python -m bench.runners loop --src S.tif --model M.pt --out classes.tif
    python -m bench.runners whole --src S.tif --model M.safetensors --out classes.npy
    python -m bench.runners rasters --src S.tif --model M.safetensors --out DIR [--executor ray]

* ``loop``: the hand-written rasterio loop of issue 13 (:func:`hand_loop`), running the
  bundle's network exported to TorchScript (:func:`export_torchscript`) the way a user ships
  a model: ``torch.jit.trace``, saved, loaded with ``torch.jit.load``; the normalization
  and class ids travel inside the ``.pt`` file (``_extra_files``), so the loop needs torch,
  rasterio and numpy only.
* ``whole``: the oracle (:func:`whole_image`): the whole raster mirror-padded by the halo
  in one forward pass of geounet's network (batch norm fused, as geounet predicts).
* ``rasters``: classes + confidence COGs only through the library (plan, executor,
  ``rasters.write_rasters``): the fallback for a ``geounet predict`` without
  ``--outputs``/``--no-polygons``.

Each prints one JSON line last: ``{"seconds": ...}`` (the work itself, imports excluded).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

WINDOW = 512
OVERLAP = 64
META = "geounet.json"


def networks() -> ModuleType:
    """geounet's torch side: ``geounet.model.networks`` where the model is a package, else ``geounet.model``."""
    try:
        return importlib.import_module("geounet.model.networks")
    except ImportError:
        return importlib.import_module("geounet.model")


def export_torchscript(bundle_path: Path, out: Path, *, window: int = WINDOW) -> Path:
    """Trace the bundle's network on a ``window``² input and save it with its normalization."""
    import torch

    from geounet import model

    b = model.load(bundle_path)
    net = networks().module_from_bundle(b).eval()
    example = torch.zeros((1, b.spec.in_channels, window, window))
    with torch.no_grad(), warnings.catch_warnings():
        # The network's stride check is a Python bool on the input shape: constant for the traced size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, example)
    meta = {
        "mean": list(b.normalization.mean),
        "std": list(b.normalization.std),
        "scale": b.normalization.scale,
        "class_ids": list(b.class_ids),
    }
    torch.jit.save(traced, str(out), _extra_files={META: json.dumps(meta)})
    return out


def hand_loop(src: Path, scripted: Path, out: Path, *, window: int = WINDOW, overlap: int = OVERLAP) -> None:
    """Issue 13's loop: ``window``-px windows overlapping by ``overlap``, centre crop, batch 1.

    Windows start every ``window - overlap`` px (448), one ``overlap/2`` margin before the
    output block they keep (their central 448 px); past the raster edge rasterio reads them
    boundless (zero-filled). Each kept block goes straight into a plain tiled GeoTIFF
    (512-px blocks, the input's deflate compression, no overviews: not a COG).
    """
    import rasterio
    import torch
    from rasterio.windows import Window

    extra = {META: ""}
    net = torch.jit.load(str(scripted), _extra_files=extra)
    meta = json.loads(extra[META])
    mean = np.array(meta["mean"], np.float32)[:, None, None]
    std = np.array(meta["std"], np.float32)[:, None, None]
    class_ids = np.array(meta["class_ids"], np.uint8)
    keep, margin = window - overlap, overlap // 2
    with rasterio.open(src) as ds:
        h, w = ds.height, ds.width
        profile = ds.profile | {
            "count": 1,
            "dtype": "uint8",
            "nodata": None,
            "predictor": 1,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
        }
        with rasterio.open(out, "w", **profile) as dst:
            for r in range(0, h, keep):
                for c in range(0, w, keep):
                    win = Window(c - margin, r - margin, window, window)
                    x = ds.read(window=win, boundless=True, fill_value=0).astype(np.float32)
                    x = (x * meta["scale"] - mean) / std
                    with torch.inference_mode():
                        logits = net(torch.from_numpy(x[None]))[0]
                    cls = logits.argmax(dim=0).numpy()[margin : margin + keep, margin : margin + keep]
                    hh, ww = min(keep, h - r), min(keep, w - c)
                    dst.write(class_ids[cls[:hh, :ww]], 1, window=Window(c, r, ww, hh))


def whole_image(src: Path, bundle_path: Path, out: Path, *, channels_last: bool = True) -> None:
    """The oracle: the whole raster, mirror-padded by the halo, in one forward pass (classes .npy).

    ``channels_last=False`` runs the default layout, the one the hand-written loop uses.
    """
    import rasterio
    import torch

    from geounet import model

    nets = networks()
    b = model.load(bundle_path)
    with rasterio.open(src) as ds:
        image = ds.read().astype(np.float32)
    _, h, w = image.shape
    halo, s = b.halo, b.spec.stride
    ph, pw = -(-(h + 2 * halo) // s) * s, -(-(w + 2 * halo) // s) * s
    padded = np.pad(image, ((0, 0), (halo, ph - h - halo), (halo, pw - w - halo)), mode="reflect")
    del image
    # Channels-last, the layout geounet's predictor runs: each layout's convolutions are
    # shift-invariant bit for bit (tests/test_infer.py), but the two layouts differ by ~2e-6 in
    # the logits, which flips about one near-tie pixel in 3 million between them.
    cl = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.from_numpy(model.normalize(padded[None], b.normalization)).contiguous(memory_format=cl)
    del padded
    net = nets.fuse_batchnorm(nets.module_from_bundle(b)).to(memory_format=cl).eval()
    with torch.inference_mode():
        logits = net(x)[0, :, halo : halo + h, halo : halo + w]
    np.save(out, np.asarray(b.class_ids, np.uint8)[logits.argmax(dim=0).numpy()])


def geounet_rasters(src: Path, bundle_path: Path, out: Path, *, executor: str) -> None:
    """Classes + confidence COGs through the library, no publishing (fallback for an older CLI)."""
    from geounet import jobs, pipeline, planning, predict, rasters

    job = planning.plan(
        src, model=bundle_path, out_dir=out, options=jobs.PredictOptions(outputs=("classes", "confidence"))
    )
    results: predict.ResultsFn = predict.local_results
    if executor == "ray":
        from geounet import distributed, pool

        results = distributed.RayExecutor(pool.RayOptions())
    with pipeline.output_lock(job.out_dir):
        computed = results(job, tiles=list(job.plan))
        try:
            rasters.write_rasters(job, computed)
        finally:
            close = getattr(computed, "close", None)
            if close is not None:
                close()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.runners", description=__doc__.split("\n")[0])
    ap.add_argument("runner", choices=("loop", "whole", "rasters"))
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True, help="bundle (.safetensors) or TorchScript (.pt)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--executor", choices=("ray", "local"), default="ray", help="rasters: the executor")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    t0 = time.perf_counter()
    if args.runner == "loop":
        hand_loop(args.src, args.model, args.out)
    elif args.runner == "whole":
        whole_image(args.src, args.model, args.out)
    else:
        geounet_rasters(args.src, args.model, args.out, executor=args.executor)
    print(json.dumps({"seconds": time.perf_counter() - t0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
