"""Issue 13, acceptance 1: geounet vs the hand-written loop and the whole-image pass, side by side.

    python -m bench.compare --sizes 2048,6000 [--repeats 3] [--width 16 --depth 4]

One seeded geounet U-Net bundle (steep head, :func:`bench.common.make_bundle`), the same
weights exported to TorchScript for the loop, the same mirror-tiled Sentinel-2 inputs. In one
run and one process tree (this process starts every runner as a child), alternating
a, b, c, d, a, c, d, ... (:func:`bench.common.interleave`):

* (a) ``loop``: the hand-written rasterio loop (``bench.runners loop``: 512-px windows,
  64-px overlap, centre crop, batch 1, one plain tiled GeoTIFF written window by window);
* (b) ``whole``: one whole-image forward pass, the oracle: run once per size (it needs
  ~300 B/px at width 16, ~11 GB at 6000²), not repeated;
* (c) ``geounet``: ``geounet predict SRC --model M --out O``, everything default (executor,
  plan, polygons);
* (d) ``rasters``: the same with rasters only (``--outputs classes,confidence`` or
  ``--no-polygons`` when this CLI has them; else the library fallback, said in the output).

Figures: Mpx/s of the output grid by wall time of the child (start-up included, as a user
waits for it), geounet/loop speed ratios per pair, peak RSS summed over each runner's whole
process tree (:mod:`bench.proctree`), and the pixel check: pixels whose class differs from the
whole-image pass in the interior (a border of one halo dropped).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common, predict_cli, proctree, runners

RUNNERS = ("loop", "whole", "geounet", "rasters")
LABELS = {
    "loop": "(a) hand-written loop (TorchScript, 512/64 centre crop, batch 1)",
    "whole": "(b) whole-image forward pass (oracle, 1 run)",
    "geounet": "(c) geounet predict, all default (polygons)",
    "rasters": "(d) geounet predict, rasters only",
}


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every runner of one benchmark run shares."""

    bundle: Path
    scripted: Path
    halo: int
    cli: predict_cli.PredictCli
    env: Mapping[str, str]
    extra: tuple[str, ...]


def command(name: str, setup: Setup, src: Path, out: Path) -> list[str]:
    """The child command of one runner, writing into the folder ``out``."""
    if name == "loop":
        return [
            sys.executable,
            "-m",
            "bench.runners",
            "loop",
            "--src",
            str(src),
            "--model",
            str(setup.scripted),
            "--out",
            str(out / "classes.tif"),
        ]
    if name == "whole":
        return [
            sys.executable,
            "-m",
            "bench.runners",
            "whole",
            "--src",
            str(src),
            "--model",
            str(setup.bundle),
            "--out",
            str(out / "classes.npy"),
        ]
    return setup.cli.command(src, setup.bundle, out, rasters_only=name == "rasters", extra=setup.extra)


def read_classes(out: Path) -> np.ndarray:
    """The classes a runner wrote into ``out`` (``classes.npy`` or ``classes.tif``)."""
    import rasterio

    if (out / "classes.npy").exists():
        return np.load(out / "classes.npy")
    with rasterio.open(out / "classes.tif") as ds:
        return ds.read(1)


def interior_diff(classes: np.ndarray, reference: np.ndarray, border: int) -> tuple[int, int]:
    """(differing pixels, pixels compared) of the interior: ``border`` px dropped on each side.

    Example:
        >>> a = np.zeros((6, 6), np.uint8); b = a.copy(); b[0, 0] = 1; b[3, 3] = 2
        >>> interior_diff(a, b, 1)
        (1, 16)
    """
    h, w = reference.shape
    inner = (slice(border, max(border, h - border)), slice(border, max(border, w - border)))
    return int(np.count_nonzero(classes[inner] != reference[inner])), int(reference[inner].size)


def histogram(classes: np.ndarray) -> dict[int, float]:
    """Share of each class value, in percent.

    Example:
        >>> histogram(np.array([0, 0, 1, 3]))
        {0: 50.0, 1: 25.0, 3: 25.0}
    """
    values, counts = np.unique(classes, return_counts=True)
    return {int(v): round(100.0 * int(c) / classes.size, 2) for v, c in zip(values, counts, strict=True)}


def check_structure(hist: Mapping[int, float], *, min_classes: int = 2, min_share: float = 1.0) -> None:
    """Refuse a model whose classes are (nearly) constant: seams and polygons would mean nothing."""
    big = [k for k, v in hist.items() if v >= min_share]
    if len(big) < min_classes:
        raise SystemExit(
            f"class histogram {hist}: fewer than {min_classes} classes hold >= {min_share} % of the "
            "pixels; the model has no structure (raise make_bundle's steep, or change --seed)"
        )


def measure(size: int, setup: Setup, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """All runners on one input size, alternating; timings, peaks and the pixel checks."""
    _, src = common.announce(size, workdir=args.workdir)
    runs: dict[str, list[proctree.TreeRun]] = {k: [] for k in RUNNERS}
    kept: dict[str, np.ndarray] = {}
    digests: dict[str, set[str]] = {k: set() for k in RUNNERS}
    for i, name in common.interleave(args.repeats, *RUNNERS):
        if name == "whole" and i > 0:
            continue
        out = tmp / f"{size}-{name}-{i}"
        out.mkdir()
        res = proctree.run_tree(command(name, setup, src, out), env=setup.env)
        runs[name].append(res)
        kept[name] = read_classes(out)
        digests[name].add(hashlib.sha256(kept[name].tobytes()).hexdigest())
        shutil.rmtree(out)
        print(
            f"  {size}² repeat {i} {name}: {res.seconds:.1f} s, peak RSS {res.peak_rss_mb:.0f} MiB "
            f"over {res.processes} processes",
            flush=True,
        )
        if name == "whole":  # before the next, long runs: refuse a model without structure early
            hist = histogram(kept["whole"])
            print(f"  {size}² class histogram of the whole-image pass (%): {hist}")
            check_structure(hist)
    reference = kept["whole"]
    diffs = {k: interior_diff(kept[k], reference, setup.halo) for k in ("loop", "geounet", "rasters")}
    return {
        "size": size,
        "runs": runs,
        "diffs": diffs,
        "hist": histogram(reference),
        "repeatable": {k: len(v) == 1 for k, v in digests.items()},
    }


def _stats(runs: Sequence[proctree.TreeRun], mpx: float) -> dict[str, common.Stat]:
    secs = common.Stat(tuple(r.seconds for r in runs))
    return {
        "s": secs,
        "mpxs": secs.map(lambda s: mpx / s),
        "rss": common.Stat(tuple(r.peak_rss_mb / 1024 for r in runs)),
    }


def ratio(runs: Mapping[str, Sequence[proctree.TreeRun]], fast: str, base: str) -> common.Stat:
    """Speed of ``fast`` over ``base`` per pair (repeat i of each): base seconds / fast seconds."""
    pairs = zip(runs[base], runs[fast], strict=True)
    return common.Stat(tuple(b.seconds / f.seconds for b, f in pairs))


def summarize(m: Mapping[str, Any]) -> dict[str, str]:
    """Print the table of one size; return its figures for the results log."""
    size, runs, diffs = m["size"], m["runs"], m["diffs"]
    mpx = size * size / 1e6
    stats = {k: _stats(v, mpx) for k, v in runs.items()}
    rows = []
    for k in RUNNERS:
        n, total = diffs.get(k, (0, 0))
        rows.append(
            {
                "runner": LABELS[k],
                "s": stats[k]["s"].fmt(1),
                "Mpx/s": stats[k]["mpxs"].fmt(3),
                "peak RSS GB (tree)": stats[k]["rss"].fmt(2),
                "processes": max(r.processes for r in runs[k]),
                "interior px != whole": "oracle" if k == "whole" else f"{n} of {total}",
            }
        )
    common.print_table(rows, title=f"{size}x{size}")
    with_poly, rasters = ratio(runs, "geounet", "loop"), ratio(runs, "rasters", "loop")
    print(f"  geounet/loop (polygons) {with_poly.fmt(2)}, geounet/loop (rasters only) {rasters.fmt(2)}")
    fig = {f"{size}² {k} Mpx/s": stats[k]["mpxs"].fmt(3) for k in RUNNERS}
    fig |= {f"{size}² {k} peak GB": stats[k]["rss"].fmt(2) for k in RUNNERS}
    fig |= {
        f"{size}² geounet/loop": with_poly.fmt(2),
        f"{size}² rasters/loop": rasters.fmt(2),
        f"{size}² interior px != whole (geounet; rasters; loop)": "; ".join(
            f"{diffs[k][0]}/{diffs[k][1]}" for k in ("geounet", "rasters", "loop")
        ),
        f"{size}² classes %": " ".join(f"{k}:{v}" for k, v in m["hist"].items()),
    }
    return fig


def acceptance(measured: Sequence[Mapping[str, Any]]) -> list[str]:
    """Issue 13 acceptance 1, criterion by criterion, from the figures of this run."""
    lines = []
    for m in measured:
        runs, size = m["runs"], m["size"]
        poly, ras = ratio(runs, "geounet", "loop").median, ratio(runs, "rasters", "loop").median
        zero = all(m["diffs"][k][0] == 0 for k in ("geounet", "rasters"))
        peak = max(max(r.peak_rss_mb for r in runs[k]) for k in ("geounet", "rasters")) / 1024
        lines += [
            f"{size}²: geounet/loop with polygons {poly:.2f} (>= 1.0: {'met' if poly >= 1.0 else 'NOT met'})",
            f"{size}²: geounet/loop rasters only {ras:.2f} (>= 1.3: {'met' if ras >= 1.3 else 'NOT met'})",
            f"{size}²: interior pixels equal to the whole-image pass: {'met' if zero else 'NOT met'}",
        ]
        if size >= 6000:
            lines.append(
                f"{size}²: geounet peak RSS {peak:.2f} GB (<= 1.5: {'met' if peak <= 1.5 else 'NOT met'})"
            )
    return lines


def setup(args: argparse.Namespace, tmp: Path) -> Setup:
    from geounet import model

    bundle = common.make_bundle(tmp / "model.safetensors", width=args.width, depth=args.depth, seed=args.seed)
    b = model.load(bundle)
    scripted = runners.export_torchscript(bundle, tmp / "model.pt")
    env = proctree.child_env(args.threads)
    cli = predict_cli.detect(env)
    print(
        f"model: geounet U-Net width {args.width} depth {args.depth}, seed {args.seed}, head x100 "
        f"(random weights); RF {b.receptive_field}, halo {b.halo}; TorchScript: {scripted.name}"
    )
    print(cli.note)
    extra = ("--executor", args.executor) if args.executor else ()
    return Setup(bundle, scripted, b.halo, cli, env, extra)


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine_info()
    print(common.machine_line(info))
    print(
        f"peak RSS: psutil, every 0.1 s, summed over each runner's process and all descendants "
        f"(Ray's GCS/raylet/workers included); threads: {args.threads or 'torch default'}"
    )
    with tempfile.TemporaryDirectory(prefix="geounet-compare-") as tmp_s:
        tmp = Path(tmp_s)
        s = setup(args, tmp)
        measured = [measure(size, s, args, tmp) for size in args.sizes]
    figures: dict[str, str] = {}
    for m in measured:
        figures |= summarize(m)
    verdict = acceptance(measured)
    print("\nacceptance 1 (issue 13):\n  " + "\n  ".join(verdict))
    settings = {
        "sizes": ",".join(map(str, args.sizes)),
        "width": args.width,
        "depth": args.depth,
        "repeats": args.repeats,
        "threads": args.threads or "default",
        "executor": args.executor or f"default ({s.cli.default_executor})",
        "rasters only via": " ".join(s.cli.rasters_args()) or "library fallback (no CLI flag)",
        "input": "mirror-tiled S2",
        "peak RSS": "sum over process tree",
    }
    if not args.no_record:
        print(
            f"row appended to {common.append_result('compare', settings=settings, results=figures, info=info)}"
        )
    return {"measured": measured, "figures": figures, "acceptance": verdict}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sizes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[2048, 6000],
        help="input sides, px, comma-separated (mirror-tiled real scene) [2048,6000]",
    )
    ap.add_argument("--repeats", type=int, default=3, help="rounds of a, c, d (b runs once) [3]")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=None, help="OMP/MKL threads of every runner [torch default]"
    )
    ap.add_argument(
        "--executor",
        choices=("ray", "local"),
        default=None,
        help="force geounet's executor (default: the CLI's own default, as a user runs it)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="cache of built inputs [bench/_work]")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
