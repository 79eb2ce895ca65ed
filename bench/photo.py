"""Issue 13, acceptance 6: a 512² photo with geounet's default executor vs in-process.

    python -m bench.photo [--repeats 3] [--width 16 --depth 4]

A real UAV75 drone photo (512x512 RGB JPEG of a concrete bridge, ``crack-uav75/val_img`` of
the data folder, GPL-3.0, read in place) and a seeded RGB U-Net bundle with a steep head
(classes background / crack; random weights: only the cost is measured). Alternating in
one run: ``geounet predict PHOTO --model M --out O`` with everything default, and the same
with ``--executor local``; wall time of each child (start-up included: for a photo it is
most of the cost), peak RSS of its process tree; the ratio default/local per pair
(target <= 1.2).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common, predict_cli, proctree, runners

PHOTOS = "crack-uav75/val_img"


def photo(name: str | None = None) -> Path:
    """A real 512² crack-uav75 JPEG (``name``, else the first of the validation folder by name)."""
    folder = common.data_dir() / PHOTOS
    path = folder / name if name else min(folder.glob("*.jpg"))
    if not path.exists():
        raise SystemExit(f"photo {path} not found; pass --photo with a file name from {folder}")
    return path


def photo_bundle(path: Path, *, width: int, depth: int, seed: int = 0, steep: float = 100.0) -> Path:
    """A random RGB U-Net bundle (background / crack) with its head steepened, saved to ``path``."""
    from geounet import model

    nets = runners.networks()
    spec = model.ModelSpec(in_channels=3, n_classes=2, depth=depth, width=width)
    classes = [model.ClassInfo(0, "background", "#000000"), model.ClassInfo(1, "crack", "#ff0000")]
    bundle = nets.init_bundle(
        bands=("red", "green", "blue"),
        classes=classes,
        spec=spec,
        seed=seed,
        normalization=model.Normalization(mean=(128.0,) * 3, std=(64.0,) * 3),
    )
    weights = dict(bundle.weights)
    weights["head.weight"] = weights["head.weight"] * steep
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(model.save(dataclasses.replace(bundle, weights=weights), path))


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = common.machine_info()
    print(common.machine_line(info))
    src = photo(args.photo)
    print(f"input: real UAV75 photo {src} (512x512 RGB JPEG, GPL-3.0 data, read in place)")
    env = proctree.child_env(args.threads)
    cli = predict_cli.detect(env)
    print(cli.flags_note)
    runs: dict[str, list[proctree.TreeRun]] = {"default": [], "local": []}
    with tempfile.TemporaryDirectory(prefix="geounet-photo-") as tmp_s:
        tmp = Path(tmp_s)
        bundle = photo_bundle(tmp / "photo.safetensors", width=args.width, depth=args.depth)
        print(f"model: RGB U-Net width {args.width} depth {args.depth} (random weights, head x100)")
        for i, name in common.interleave(args.repeats, "default", "local"):
            out = tmp / f"{name}{i}"
            extra = ["--executor", "local"] if name == "local" else []
            runs[name].append(proctree.run_tree(cli.command(src, bundle, out, extra=extra), env=env))
            shutil.rmtree(out)
            r = runs[name][-1]
            print(
                f"  repeat {i} {name}: {r.seconds:.1f} s, peak RSS {r.peak_rss_mb:.0f} MiB over "
                f"{r.processes} processes",
                flush=True,
            )
    ratio = common.Stat(
        tuple(d.seconds / lo.seconds for d, lo in zip(runs["default"], runs["local"], strict=True))
    )
    figures = {
        "default s": common.Stat(tuple(r.seconds for r in runs["default"])).fmt(2),
        "local s": common.Stat(tuple(r.seconds for r in runs["local"])).fmt(2),
        "default/local": ratio.fmt(2),
        "default peak MiB (tree)": common.Stat(tuple(r.peak_rss_mb for r in runs["default"])).fmt(0),
        "local peak MiB (tree)": common.Stat(tuple(r.peak_rss_mb for r in runs["local"])).fmt(0),
        "default executor": cli.default_executor,
    }
    common.print_table([{"figure": k, "value": v} for k, v in figures.items()], title="photo 512²")
    verdict = f"default/local {ratio.median:.2f} (<= 1.2: {'met' if ratio.median <= 1.2 else 'NOT met'})"
    print(f"acceptance 6 (issue 13): {verdict}")
    settings = {
        "input": f"{src.name} (crack-uav75, 512^2 RGB)",
        "width": args.width,
        "depth": args.depth,
        "repeats": args.repeats,
        "threads": args.threads or "default",
    }
    if not args.no_record:
        print(
            f"row appended to {common.append_result('photo', settings=settings, results=figures, info=info)}"
        )
    return {"ratio": ratio, "figures": figures, "runs": runs}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.photo", description=__doc__.split("\n")[0])
    ap.add_argument("--photo", default=None, help=f"file name in {PHOTOS} [the first by name]")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of geounet [torch default]")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
