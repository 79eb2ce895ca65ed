"""``geounet model``: create (randomly initialised) and inspect model bundles."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from geounet import model as gmodel
from geounet.errors import ConfigError
from geounet.model import networks

# Colors given to classes listed without one (ColorBrewer Set1/Paired-like, readable on maps).
_PALETTE = (
    "#000000",
    "#e41a1c",
    "#377eb8",
    "#4daf4a",
    "#984ea3",
    "#ff7f00",
    "#ffff33",
    "#a65628",
    "#f781bf",
    "#999999",
)
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_bands(text: str) -> tuple[str, ...]:
    """``"B4,B3,B2"`` → ``("B4", "B3", "B2")``; names must be distinct and non-empty.

    Example:
        >>> parse_bands("red, green,blue")
        ('red', 'green', 'blue')
    """
    bands = tuple(b.strip() for b in text.split(","))
    if not text.strip() or any(not b for b in bands):
        raise ConfigError(
            f"--bands {text!r} has an empty band name; write comma-separated names like red,green,blue"
        )
    dupes = sorted({b for b in bands if bands.count(b) > 1})
    if dupes:
        raise ConfigError(f"--bands {text!r} repeats {', '.join(dupes)}; list every band once")
    return bands


def parse_classes(text: str) -> tuple[gmodel.ClassInfo, ...]:
    """``"background:#000000,crack:#ff0000"`` → classes with ids 0, 1, ... in the given order.

    A class without ``:#rrggbb`` gets a color from a fixed palette.

    Example:
        >>> [(c.id, c.name, c.color) for c in parse_classes("bg:#000000,crack:FF0000,water")]
        [(0, 'bg', '#000000'), (1, 'crack', '#ff0000'), (2, 'water', '#377eb8')]
    """
    fix = "write name:#rrggbb items separated by commas, e.g. background:#000000,crack:#ff0000"
    if not text.strip():
        raise ConfigError(f"--classes {text!r} is empty; {fix}")
    classes = []
    for i, item in enumerate(text.split(",")):
        name, sep, color = item.strip().partition(":")
        name, color = name.strip(), color.strip()
        if not name:
            raise ConfigError(f"--classes item {item!r} has no class name; {fix}")
        if sep:
            m = _HEX.match(color)
            if not m:
                raise ConfigError(f"--classes item {item!r} has color {color!r} that is not #rrggbb; {fix}")
            color = "#" + m.group(1).lower()
        else:
            color = _PALETTE[i % len(_PALETTE)]
        classes.append(gmodel.ClassInfo(i, name, color))
    names = [c.name for c in classes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"--classes {text!r} repeats {', '.join(dupes)}; name every class once")
    if len(classes) > gmodel.NODATA_CLASS:
        raise ConfigError(f"--classes has {len(classes)} classes; at most 255 fit in uint8 (255 is nodata)")
    return tuple(classes)


def parse_floats(text: str, *, option: str, count: int) -> tuple[float, ...]:
    """Comma-separated numbers, one per band (a single number is repeated for every band)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a list of numbers; write e.g. 0.4,0.5,0.6") from None
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise ConfigError(f"{option} {text!r} has {len(values)} values for {count} bands; give one per band")
    return values


def parse_scale(text: str) -> float:
    """A number or a fraction like ``1/255`` (x is multiplied by it before mean/std).

    Example:
        >>> round(parse_scale("1/255"), 6), parse_scale("0.0001")
        (0.003922, 0.0001)
    """
    try:
        num, _, den = text.partition("/")
        value = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--scale {text!r} is not a number; write e.g. 1/255 or 0.0001") from None
    return value


@click.group("model")
def model() -> None:
    """Create and inspect model bundles (one safetensors file: weights + metadata).

    \b
    Example:
      geounet model init --bands red,green,blue --classes background:#000000,crack:#ff0000 --out m.safetensors
      geounet model info m.safetensors
    """


@model.command("init")
@click.option("--bands", required=True, help="Input band names in model order, comma-separated.")
@click.option(
    "--classes",
    required=True,
    help="Output classes as name:#rrggbb, comma-separated; ids are 0, 1, ... in this order.",
)
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Bundle file."
)
@click.option("--arch", type=click.Choice(gmodel.ARCHS), default="unet", show_default=True)
@click.option("--depth", type=int, default=4, show_default=True, help="Number of 2x down-samplings.")
@click.option("--width", type=int, default=32, show_default=True, help="Channels of the first level.")
@click.option("--norm", type=click.Choice(gmodel.NORMS), default="batch", show_default=True)
@click.option("--upsample", type=click.Choice(gmodel.UPSAMPLES), default="transpose", show_default=True)
@click.option("--tile", type=int, help="Recommended tile (read window) size [default: 256-px core + halo].")
@click.option(
    "--halo", type=int, help="Recommended halo [default: receptive field rounded up to the stride]."
)
@click.option("--mean", help="Per-band mean after scaling, comma-separated (or one value for all).")
@click.option("--std", help="Per-band std after scaling, comma-separated (or one value for all).")
@click.option("--scale", default="1", show_default=True, help="Factor applied before mean/std, e.g. 1/255.")
@click.option("--name", default="geounet-unet", show_default=True, help="Model name (mlm:name).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the weights.")
@click.option("--half", is_flag=True, help="Store weights as float16 (half the file size).")
def init(
    bands: str,
    classes: str,
    out: Path,
    arch: str,
    depth: int,
    width: int,
    norm: str,
    upsample: str,
    tile: int | None,
    halo: int | None,
    mean: str | None,
    std: str | None,
    scale: str,
    name: str,
    seed: int,
    half: bool,
) -> None:
    """Write a randomly initialised model bundle (to test pipelines before training).

    \b
    Example:
      geounet model init --bands red,green,blue \\
          --classes background:#000000,crack:#ff0000 --out crack.safetensors
      geounet model init --bands B4,B3,B2,B8 --classes other:#cccccc,water:#1f78b4,forest:#33a02c \\
          --arch attention-unet --depth 3 --width 16 --scale 1/10000 --out s2.safetensors
    """
    band_names = parse_bands(bands)
    class_list = parse_classes(classes)
    n = len(band_names)
    normalization = gmodel.Normalization(
        mean=parse_floats(mean, option="--mean", count=n) if mean else (0.0,) * n,
        std=parse_floats(std, option="--std", count=n) if std else (1.0,) * n,
        scale=parse_scale(scale),
    )
    spec = gmodel.ModelSpec(
        in_channels=n,
        n_classes=len(class_list),
        arch=arch,  # type: ignore[arg-type]
        depth=depth,
        width=width,
        norm=norm,  # type: ignore[arg-type]
        upsample=upsample,  # type: ignore[arg-type]
    )
    bundle = networks.init_bundle(
        bands=band_names,
        classes=class_list,
        spec=spec,
        normalization=normalization,
        tile=tile,
        halo=halo,
        seed=seed,
        name=name,
    )
    path = gmodel.save(bundle, out, half=half)
    click.echo(
        f"wrote {path} ({_size(path.stat().st_size)}): {spec.arch} depth {spec.depth} width {spec.width}, "
        f"{n} bands, {len(class_list)} classes, receptive field {bundle.receptive_field} px, "
        f"tile {bundle.tile} / halo {bundle.halo}"
    )


@model.command("info")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full metadata as JSON.")
def info(file: Path, as_json: bool) -> None:
    """Show a bundle's metadata after verifying it (checksum, tensor shapes).

    \b
    Example:
      geounet model info crack.safetensors
      geounet model info crack.safetensors --json | jq '."metadata"."mlm:input"'
    """
    bundle = gmodel.load(file)  # verifies structure, checksum and shapes first
    meta = gmodel.read_metadata(file)
    size = file.stat().st_size
    if as_json:
        doc = {"file": str(file), "size_bytes": size, "checksum_ok": True, "metadata": meta}
        click.echo(json.dumps(doc, indent=2))
        return
    for key, value in _summary(bundle, meta, file, size):
        click.echo(f"{key:<16}{value}")


@model.command("export-stac")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Item JSON [FILE with .json].")
def export_stac(file: Path, out: Path | None) -> None:
    """Write the bundle as a STAC Item with the MLM extension, validated before it is written.

    \b
    Example:
      geounet model export-stac landcover.safetensors
      geounet model export-stac landcover.safetensors --out catalog/landcover.json
    """
    from geounet import mlm

    click.echo(str(mlm.write(gmodel.load(file), file, out=out)))


def _summary(bundle: gmodel.Bundle, meta: dict[str, Any], file: Path, size: int) -> list[tuple[str, str]]:
    spec, norm = bundle.spec, bundle.normalization
    width = max(len(c.name) for c in bundle.classes)
    classes = [f"{c.id:>3}  {c.name:<{width}}  {c.color}" for c in bundle.classes]
    prov = ", ".join(f"{k}={_short(v)}" for k, v in bundle.provenance.items()) or "(none)"
    rows = [
        ("file", f"{file} ({_size(size)}, {meta['geounet:weights_dtype']} weights)"),
        ("checksum", f"sha256 {meta['geounet:weights_sha256'][:16]}… OK"),
        ("name", bundle.name),
        (
            "architecture",
            f"{meta['mlm:architecture']} ({spec.arch}), depth {spec.depth}, width {spec.width}, "
            f"norm {spec.norm}, upsample {spec.upsample}, {meta['mlm:total_parameters']:,} parameters",
        ),
        ("framework", f"{meta['mlm:framework']} {meta['mlm:framework_version']}"),
        ("input bands", f"{', '.join(bundle.bands)} ({len(bundle.bands)}, float32)"),
        (
            "normalization",
            f"(x * {norm.scale:g} - mean) / std; mean {[round(m, 6) for m in norm.mean]}, "
            f"std {[round(s, 6) for s in norm.std]}",
        ),
        ("classes", classes[0]),
        *(("", line) for line in classes[1:]),
        ("nodata class", str(gmodel.NODATA_CLASS)),
        ("receptive field", f"{bundle.receptive_field} px radius (stride {spec.stride})"),
        ("tiling", f"tile {bundle.tile} px, halo {bundle.halo} px, core {bundle.tile - 2 * bundle.halo} px"),
        ("provenance", prov),
    ]
    return rows


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.1f} MiB"
