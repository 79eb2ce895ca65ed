"""GPU: a full Sentinel-2 tile (10980², 4 bands) end-to-end with a base-width-32 U-Net.

Run: ``python -m bench.gpu [--size 10980] [--width 32] [--batch 16] [--repeats 1]``

Skips cleanly (exit 0, a message, no results row) where torch sees no CUDA device.
Otherwise, on the mirror-tiled real scene: (a) model-only forward passes of the same number
of tiles of the same shape, (b) end-to-end ``plan`` + ``run`` on ``cuda`` to the final COGs
and polygons; seconds, Mpx/s, the ratio (b)/(a), GPU busy % sampled every 200 ms during
each (NVML through ``pynvml`` when installed, else ``nvidia-smi``), and one instrumented run
saying where the time goes (decode/read, normalize, transfer+forward, write, vectorize), so
what limits it is visible.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import common, efficiency, flops


class GpuSampler:
    """Sample GPU utilization (%) every ``interval`` s in a thread: NVML, else nvidia-smi."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = "none"

    def _nvml(self) -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.source = "NVML"
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:
            pass
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"

            def smi() -> float:
                out = subprocess.run(
                    ["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                return float(out.stdout.strip().splitlines()[0])

            return smi
        return None

    def __enter__(self) -> GpuSampler:
        read = self._nvml()
        if read is not None:

            def loop() -> None:
                while not self._stop.wait(self.interval):
                    with contextlib.suppress(Exception):
                        self.samples.append(read())

            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def busy(self) -> str:
        if not self.samples:
            return f"n/a ({self.source})"
        return f"{sum(self.samples) / len(self.samples):.0f}%"


@contextlib.contextmanager
def sampled() -> Iterator[GpuSampler]:
    with GpuSampler() as s:
        yield s


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"bench.gpu skipped: torch {torch.__version__} sees no CUDA device "
            f"(CUDA build: {torch.version.cuda or 'no'}); run it on a machine with an NVIDIA GPU"
        )
        return None
    from geounet import infer, jobs, model, planning

    info, src = common.announce(args.size, workdir=args.workdir)
    with tempfile.TemporaryDirectory(prefix="geounet-bench-") as tmp_s:
        tmp = Path(tmp_s)
        m = common.make_bundle(tmp / "m.safetensors", width=args.width, depth=args.depth, tile=args.tile)
        b = model.load(m)
        opts = {"batch_size": args.batch, "device": args.device}
        job = planning.plan(src, model=m, out_dir=tmp / "plan", options=jobs.PredictOptions(**opts))
        tile, n_tiles = job.plan.read_size, len(job.plan)
        mpx = job.grid.rows * job.grid.cols / 1e6
        print(
            f"model: U-Net width {args.width} depth {args.depth}; tile {tile} (halo {job.plan.halo}); "
            f"{n_tiles} tiles; batch {args.batch}; {info['gpu']}"
        )
        a_s: list[float] = []
        b_s: list[float] = []
        a_busy: list[str] = []
        b_busy: list[str] = []
        for i, which in common.interleave(args.repeats, "b", "a"):
            with sampled() as gs:
                if which == "b":
                    s, counts = efficiency.end_to_end(src, m, tmp / f"out{i}", **opts)
                    n_tiles = counts["predicted"]
                else:
                    s = efficiency.model_only(
                        m, n_tiles=n_tiles, tile=tile, batch=args.batch, device=args.device
                    )
            (b_s if which == "b" else a_s).append(s)
            (b_busy if which == "b" else a_busy).append(gs.busy)
            print(
                f"  repeat {i} {'model-only' if which == 'a' else 'end-to-end'}: {s:.1f} s, GPU busy {gs.busy}"
            )
        with efficiency.instrumented() as timer:
            wall, _ = efficiency.end_to_end(src, m, tmp / "profile", **opts)
        common.print_table(
            efficiency.profile_rows(timer, wall), title="where the end-to-end time goes (one run)"
        )
        tile_flops = flops.count(infer.Predictor(b, device="cpu").module, (1, b.spec.in_channels, tile, tile))
    a, e = common.Stat(tuple(a_s)), common.Stat(tuple(b_s))
    ratio = common.Stat(tuple(x / y for x, y in zip(a_s, b_s, strict=True)))
    figures = {
        "end-to-end s": e.fmt(1),
        "model-only s": a.fmt(1),
        "end-to-end Mpx/s": e.map(lambda s: mpx / s).fmt(2),
        "model-only Mpx/s": a.map(lambda s: mpx / s).fmt(2),
        "ratio (b)/(a)": ratio.fmt(3),
        "GPU busy end-to-end": "/".join(b_busy),
        "GPU busy model-only": "/".join(a_busy),
        "TFLOP/s model-only": a.map(lambda s: tile_flops * n_tiles / s / 1e12).fmt(2),
        "profile": "; ".join(f"{k.strip()} {v:.1f}s" for k, v in timer.seconds.items())
        + f"; wall {wall:.1f}s",
    }
    common.print_table(
        [{"figure": k, "value": v} for k, v in figures.items() if k != "profile"], title="GPU end-to-end"
    )
    settings = {
        "input": f"{args.size}^2 mirror-tiled S2, 4 bands",
        "tiles": n_tiles,
        "tile": tile,
        "batch": args.batch,
        "width": args.width,
        "depth": args.depth,
        "repeats": args.repeats,
    }
    if not args.no_record:
        print(f"row appended to {common.append_result('gpu', settings=settings, results=figures, info=info)}")
    return figures


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=10980, help="input side, px (mirror-tiled real scene)")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--tile", type=int, default=None, help="network input side [bundle default]")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--device",
        default="cuda",
        help="cuda[:N]; 'cpu' only to try the script's code path on a small --size",
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
