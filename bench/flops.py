"""FLOPs per pixel of geounet's U-Nets (torch's FlopCounterMode) and the FLOP/s achieved here.

Run: ``python -m bench.flops [--widths 8,16,32] [--depth 4] [--tile 480] [--repeats 3]``

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass of
the inference network (BatchNorm folded, as :class:`geounet.infer.Predictor` runs it), so a
multiply-add counts 2. "per network pixel" divides by the tile's area (halo included);
the pipeline benchmarks convert to per *output* pixel with their tile counts. The achieved
FLOP/s (counted FLOPs / wall time of :meth:`Predictor.predict`) shows the distance to the
hardware's peak.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from bench import common


def count(module: object, shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of ``module`` on a zero tensor of ``shape``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(torch.zeros(shape))  # type: ignore[operator]
    return int(counter.get_total_flops())


def measure(
    *, width: int, depth: int, tile: int | None, batch: int, repeats: int, device: str = "cpu"
) -> dict[str, object]:
    """FLOPs per tile and per pixel of one U-Net, and its measured FLOP/s on ``device``."""
    import tempfile
    from pathlib import Path

    from geounet import infer, model

    with tempfile.TemporaryDirectory() as tmp:
        b = model.load(common.make_bundle(Path(tmp) / "m.safetensors", width=width, depth=depth, tile=tile))
    pred = infer.Predictor(b, device=device, batch_size=batch)
    side = tile or b.tile
    flops = count(pred.module.cpu(), (1, b.spec.in_channels, side, side))
    if device != "cpu":
        pred = infer.Predictor(b, device=device, batch_size=batch)
    x = np.random.default_rng(0).standard_normal((batch, b.spec.in_channels, side, side), dtype=np.float32)
    pred.predict(x[:1])  # warm-up (allocator, kernels)
    secs = common.Stat(tuple(common.timed(lambda: pred.predict(x))[0] for _ in range(repeats)))
    gflops = secs.map(lambda s: flops * batch / s / 1e9)
    return {
        "width": width,
        "depth": depth,
        "tile": side,
        "RF": b.receptive_field,
        "GFLOP/tile": f"{flops / 1e9:.2f}",
        "kFLOP/px": f"{flops / side**2 / 1e3:.1f}",
        "s/batch": secs.fmt(2),
        "GFLOP/s": gflops.fmt(1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flops", description=__doc__.split("\n")[0])
    ap.add_argument("--widths", default="8,16,32", help="comma-separated base widths")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--tile", type=int, default=None, help="network input side [bundle default]")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)
    info = common.machine_info()
    print(common.machine_line(info))
    rows = [
        measure(
            width=int(w),
            depth=args.depth,
            tile=args.tile,
            batch=args.batch,
            repeats=args.repeats,
            device=args.device,
        )
        for w in args.widths.split(",")
    ]
    common.print_table(rows, title="U-Net FLOPs (FlopCounterMode, BN folded) and achieved FLOP/s")
    if not args.no_record:
        for r in rows:
            common.append_result(
                "flops",
                settings={
                    "width": r["width"],
                    "depth": r["depth"],
                    "tile": r["tile"],
                    "batch": args.batch,
                    "device": args.device,
                    "repeats": args.repeats,
                },
                results={"kFLOP/px": r["kFLOP/px"], "GFLOP/tile": r["GFLOP/tile"], "GFLOP/s": r["GFLOP/s"]},
                info=info,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
