"""Issue 13, acceptance 4: the pipeline's ceiling, geounet end to end vs the I/O floor of GDAL alone.

    python -m bench.ceiling --size 6000 [--repeats 3]

The model is nearly free but its classes have the scene's real spatial structure: the smallest
U-Net geounet allows (depth 1, width 1) with hand-set weights (:func:`band_head_bundle`) that
pass one band combination through (the mean of the four normalized bands, centre taps only,
batch norm as identity, the coarse level muted) into a steep 1x1 head whose thresholds are the
combination's quantiles on the real scene, so the classes are brightness bins with their
edges where the scene's are (>= 20k polygons per Mpx, counted and printed).

Alternating, in one run: (a) ``geounet predict SRC --model M --out O``, everything default
(polygons included), a child process, wall time; (b) the floor by GDAL alone, in this
process on geounet's own output arrays: read every band of the input block window by block
window (rasterio), write both COGs with overviews (``rasterio.shutil.copy`` of a MEM dataset
to GDAL's COG driver, the options geounet's writer uses, all CPUs), and polygonize the classes
(``rasterio.features.shapes``, 4-connected, consumed fully). The floor is the sum of the
three; the figure is floor seconds / geounet seconds (target >= 0.5).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import common, predict_cli, proctree, runners

PALETTE = ("#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3", "#fb9a99")
COG_OPTIONS = {
    "BLOCKSIZE": "512",
    "COMPRESS": "DEFLATE",
    "PREDICTOR": "2",
    "BIGTIFF": "IF_SAFER",
    "NUM_THREADS": "ALL_CPUS",
}


def _identity_bn(bn: Any, bias: float = 0.0) -> None:
    bn.weight.data.fill_(1.0)
    bn.bias.data.fill_(bias)
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0)


def _centre(conv: Any, taps: dict[tuple[int, int], float]) -> None:
    """Zero a conv's weights except centre taps ``{(out, in): weight}``."""
    conv.weight.data.zero_()
    k = conv.weight.shape[-1] // 2
    for (o, i), v in taps.items():
        conv.weight.data[o, i, k, k] = v


def thresholds_head(feature: np.ndarray, n_classes: int, steep: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and biases of a 1x1 head on one feature whose argmax is the feature's quantile bin.

    Class k's logit is ``steep * (k * f - (t_1 + ... + t_k))``: it beats class k-1 exactly
    where ``f > t_k``, so the winner is the number of thresholds below ``f``.

    Example:
        >>> w, b = thresholds_head(np.arange(100.0), 4, 1.0)
        >>> f = np.array([5.0, 30.0, 60.0, 90.0])
        >>> (w[:, None] * f + b[:, None]).argmax(axis=0).tolist()
        [0, 1, 2, 3]
    """
    t = np.quantile(feature, np.linspace(0.0, 1.0, n_classes + 1)[1:-1])
    weights = steep * np.arange(n_classes, dtype=np.float64)
    biases = -steep * np.concatenate([[0.0], np.cumsum(t)])
    return weights.astype(np.float32), biases.astype(np.float32)


def band_head_bundle(path: Path, *, n_classes: int = 5, steep: float = 100.0) -> Path:
    """The near-free model: smallest U-Net, the bands' mean passed through, a steep quantile head."""
    import torch

    from geounet import model

    nets = runners.networks()
    n = len(common.S2_BANDS)
    spec = model.ModelSpec(in_channels=n, n_classes=n_classes, depth=1, width=1)
    classes = [model.ClassInfo(k, f"bin{k}", PALETTE[k % len(PALETTE)]) for k in range(n_classes)]
    norm = model.Normalization(mean=(1500.0,) * n, std=(700.0,) * n)
    bundle = nets.init_bundle(bands=common.S2_BANDS, classes=classes, spec=spec, normalization=norm, seed=0)
    net = nets.module_from_bundle(bundle)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        enc0, dec0 = net.encoder[0], net.decoder[0]  # (conv, BN, ReLU, conv, BN, ReLU) each
        _centre(enc0[0], {(0, i): 1.0 / n for i in range(n)})
        _identity_bn(enc0[1], bias=20.0)  # keeps the feature positive through the ReLUs
        _centre(enc0[3], {(0, 0): 1.0})
        _identity_bn(enc0[4])
        _centre(dec0[0], {(0, 0): 1.0})  # the skip (full resolution); the up-sampled half is muted
        _identity_bn(dec0[1])
        _centre(dec0[3], {(0, 0): 1.0})
        _identity_bn(dec0[4])
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            if not bn.weight.any():
                _identity_bn(bn)
        feature = _head_input(net, bundle)
        w, b = thresholds_head(feature, n_classes, steep)
        net.head.weight.data[:, 0, 0, 0] = torch.from_numpy(w)
        net.head.bias.data[:] = torch.from_numpy(b)
    weights = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(model.save(dataclasses.replace(bundle, weights=weights), path))


def _head_input(net: Any, bundle: Any) -> np.ndarray:
    """The head's input feature on the real scene (a forward hook), for the quantile thresholds."""
    import torch

    from geounet import model

    scene, _ = common.real_scene()
    x = torch.from_numpy(model.normalize(scene[None].astype(np.float32), bundle.normalization))
    seen: list[torch.Tensor] = []
    hook = net.head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    try:
        net.eval()(x)
    finally:
        hook.remove()
    return seen[0][0, 0].numpy()


@dataclasses.dataclass(frozen=True)
class Floor:
    """Seconds of each part of the I/O floor and the polygons GDAL found."""

    read_s: float
    cogs_s: float
    polygonize_s: float
    polygons: int

    @property
    def seconds(self) -> float:
        return self.read_s + self.cogs_s + self.polygonize_s


def _read_all(src: Path) -> None:
    import rasterio

    with rasterio.open(src) as ds:
        for _, win in ds.block_windows(1):
            ds.read(window=win)


def _write_cog(
    array: np.ndarray, profile: dict[str, Any], out: Path, *, resampling: str, nodata: int
) -> None:
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    meta = {
        "driver": "MEM",
        "width": array.shape[1],
        "height": array.shape[0],
        "count": 1,
        "dtype": array.dtype.name,
        "crs": profile["crs"],
        "transform": profile["transform"],
        "nodata": nodata,
    }
    with MemoryFile() as mf, mf.open(**meta) as mem:
        mem.write(array, 1)
        rasterio.shutil.copy(mem, out, driver="COG", OVERVIEW_RESAMPLING=resampling, **COG_OPTIONS)


def io_floor(src: Path, geounet_out: Path, scratch: Path) -> Floor:
    """GDAL alone: read the input, write both COGs with overviews, polygonize (timed apart)."""
    import rasterio
    import rasterio.features

    with rasterio.open(geounet_out / "classes.tif") as ds:
        classes, profile = ds.read(1), ds.profile
    with rasterio.open(geounet_out / "confidence.tif") as ds:
        confidence = ds.read(1)
    t0 = time.perf_counter()
    _read_all(src)
    t1 = time.perf_counter()
    _write_cog(classes, profile, scratch / "classes.tif", resampling="MODE", nodata=255)
    _write_cog(confidence, profile, scratch / "confidence.tif", resampling="AVERAGE", nodata=255)
    t2 = time.perf_counter()
    mask = classes != 255
    polygons = sum(
        1
        for _ in rasterio.features.shapes(classes, mask=mask, connectivity=4, transform=profile["transform"])
    )
    t3 = time.perf_counter()
    return Floor(t1 - t0, t2 - t1, t3 - t2, polygons)


def count_features(out: Path) -> int:
    """Features in geounet's polygon layer (``polygons.*`` in ``out``), read by pyogrio."""
    import pyogrio

    path = next(p for p in sorted(out.glob("polygons.*")) if p.suffix in (".gpkg", ".parquet", ".fgb"))
    layers = [str(name) for name, _ in pyogrio.list_layers(path) if name != "layer_styles"]  # QGIS styles
    return int(pyogrio.read_info(path, layer=layers[0])["features"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    info, src = common.announce(args.size, workdir=args.workdir)
    mpx = args.size * args.size / 1e6
    env = proctree.child_env(args.threads)
    cli = predict_cli.detect(env)
    print(cli.flags_note)
    extra = ["--executor", args.executor] if args.executor else []
    geo: list[proctree.TreeRun] = []
    floors: list[Floor] = []
    features: list[int] = []
    with tempfile.TemporaryDirectory(prefix="geounet-ceiling-") as tmp_s:
        tmp = Path(tmp_s)
        bundle = band_head_bundle(tmp / "near_free.safetensors", n_classes=args.classes)
        print(
            f"model: U-Net depth 1 width 1 (smallest allowed), mean of the bands -> steep 1x1 head, "
            f"{args.classes} quantile classes"
        )
        for i in range(args.repeats):
            out = tmp / f"geounet{i}"
            geo.append(proctree.run_tree(cli.command(src, bundle, out, extra=extra), env=env))
            features.append(count_features(out))
            scratch = tmp / f"floor{i}"
            scratch.mkdir()
            floors.append(io_floor(src, out, scratch))
            shutil.rmtree(out)
            shutil.rmtree(scratch)
            print(
                f"  repeat {i}: geounet {geo[-1].seconds:.1f} s ({features[-1]} polygons, peak "
                f"{geo[-1].peak_rss_mb:.0f} MiB); floor {floors[-1].seconds:.1f} s "
                f"(read {floors[-1].read_s:.1f}, COGs {floors[-1].cogs_s:.1f}, "
                f"polygonize {floors[-1].polygonize_s:.1f}; {floors[-1].polygons} polygons)",
                flush=True,
            )
    return report(args, info, mpx, geo, floors, features)


def report(
    args: argparse.Namespace,
    info: dict[str, Any],
    mpx: float,
    geo: Sequence[proctree.TreeRun],
    floors: Sequence[Floor],
    features: Sequence[int],
) -> dict[str, Any]:
    """Print the table and the verdict; append the row."""
    ratio = common.Stat(tuple(f.seconds / g.seconds for f, g in zip(floors, geo, strict=True)))
    per_mpx = features[-1] / mpx
    stat = {
        "geounet Mpx/s": common.Stat(tuple(mpx / g.seconds for g in geo)).fmt(3),
        "floor Mpx/s": common.Stat(tuple(mpx / f.seconds for f in floors)).fmt(3),
        "geounet/floor": ratio.fmt(2),
        "floor read s": common.Stat(tuple(f.read_s for f in floors)).fmt(2),
        "floor COGs s": common.Stat(tuple(f.cogs_s for f in floors)).fmt(2),
        "floor polygonize s": common.Stat(tuple(f.polygonize_s for f in floors)).fmt(2),
        "geounet polygons": features[-1],
        "GDAL polygons": floors[-1].polygons,
        "polygons/Mpx": round(per_mpx),
        "geounet peak GB (tree)": common.Stat(tuple(g.peak_rss_mb / 1024 for g in geo)).fmt(2),
    }
    common.print_table([{"figure": k, "value": v} for k, v in stat.items()], title=f"ceiling {args.size}²")
    verdict = [
        f"polygons per Mpx {per_mpx:.0f} (>= 20000: {'yes' if per_mpx >= 20000 else 'NO: model too smooth'})",
        f"geounet / floor {ratio.median:.2f} (>= 0.5: {'met' if ratio.median >= 0.5 else 'NOT met'})",
    ]
    print("acceptance 4 (issue 13):\n  " + "\n  ".join(verdict))
    settings = {
        "input": f"{args.size}^2 mirror-tiled S2",
        "model": "U-Net d1 w1, band mean -> steep head",
        "classes": args.classes,
        "repeats": args.repeats,
        "threads": args.threads or "default",
        "executor": args.executor or "default",
    }
    if not args.no_record:
        print(
            f"row appended to {common.append_result('ceiling', settings=settings, results=stat, info=info)}"
        )
    return {"ratio": ratio, "polygons_per_mpx": per_mpx, "figures": stat, "floors": floors}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=6000, help="input side, px (mirror-tiled real scene)")
    ap.add_argument("--classes", type=int, default=5, help="quantile classes of the near-free model [5]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of geounet [torch default]")
    ap.add_argument("--executor", choices=("ray", "local"), default=None, help="force geounet's executor")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
