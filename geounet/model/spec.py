"""What a model is, without the network: classes, architecture, normalization, receptive field.

Pure Python and numpy (no torch), so the stages that only need to know the classes
(merge, write, vectorize, publish) and the bundle file format load without torch.

Seam-free tiling rests on two properties of every network :mod:`geounet.model.networks`
builds: it is strictly local (3x3 zero-padded convolutions, 2x2 max-pooling, 2x2
transposed convolutions or bilinear up-sampling, 1x1 convolutions, BatchNorm in eval
mode) and shift-equivariant by multiples of its stride ``2**depth``. So cropping the
cores of tiles whose halo is at least :func:`receptive_field` reproduces the
whole-image prediction.

Example:
    >>> spec = ModelSpec(in_channels=3, n_classes=2, depth=2, width=4)
    >>> receptive_field(spec), recommended_halo(spec), default_tile(spec, 24), spec.stride
    (23, 24, 304, 4)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from geounet.errors import ConfigError, InputError
from geounet.tiling import tile_halo_problem

Arch = Literal["unet", "resunet", "attention-unet"]
Norm = Literal["batch", "none"]
Upsample = Literal["transpose", "bilinear"]

#: The one "no class" value: written where there is no prediction (input nodata, skipped
#: tiles) and read as "unlabelled, ignore" in training masks and metrics.
NODATA_CLASS = 255

ARCHS: tuple[str, ...] = ("unet", "resunet", "attention-unet")
NORMS: tuple[str, ...] = ("batch", "none")
UPSAMPLES: tuple[str, ...] = ("transpose", "bilinear")
_MAX_DEPTH = 8
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True, slots=True)
class ClassInfo:
    """One output class: id (0..254), name, display color ``#rrggbb``.

    Example:
        >>> ClassInfo(1, "water", "#1f78b4").rgb
        (31, 120, 180)
    """

    id: int
    name: str
    color: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The color as an (r, g, b) tuple of 0..255 ints."""
        h = self.color.lstrip("#")
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Architecture and hyper-parameters of a U-Net; enough to rebuild the network.

    ``depth`` is the number of 2x down-samplings, so inputs must be multiples of
    ``2**depth`` (:attr:`stride`). ``width`` is the channel count of the first level.
    ``indices`` are band-position pairs ``(a, b)`` of normalized differences the network
    computes from its input and adds as channels (:mod:`geounet.model.indices`).
    """

    in_channels: int
    n_classes: int
    arch: Arch = "unet"
    depth: int = 4
    width: int = 32
    norm: Norm = "batch"
    upsample: Upsample = "transpose"
    indices: tuple[tuple[int, int], ...] = ()

    @property
    def stride(self) -> int:
        """Total down-sampling factor; tiles and halos must be multiples of it."""
        return 1 << self.depth


@dataclass(frozen=True, slots=True)
class Normalization:
    """Per-band input normalization: ``(x * scale - mean) / std``, band order of the bundle."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0


def normalize(array: np.ndarray, norm: Normalization) -> np.ndarray:
    """``(x * scale - mean) / std`` per band, as float32; the band axis is axis -3.

    Works on (C, H, W) chips and (B, C, H, W) batches; the input is not modified.

    Raises:
        InputError: when the band axis does not match the normalization.

    Example:
        >>> x = np.full((2, 1, 1), 255, dtype=np.uint8)
        >>> normalize(x, Normalization(mean=(0.5, 0.5), std=(0.25, 0.5), scale=1 / 255))[:, 0, 0]
        array([2., 1.], dtype=float32)
    """
    a = np.asarray(array)
    n = len(norm.mean)
    if a.ndim < 3 or a.shape[-3] != n:
        raise InputError(
            f"array of shape {a.shape} has no band axis of length {n} at axis -3; "
            f"pass (C, H, W) or (B, C, H, W) with the bundle's {n} bands"
        )
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(n, 1, 1)
    std = np.asarray(norm.std, dtype=np.float32).reshape(n, 1, 1)
    out = a.astype(np.float32) * np.float32(norm.scale)
    out -= mean
    out /= std
    return out


# --------------------------------------------------------------------------- receptive field


def _rf_interval(spec: ModelSpec) -> tuple[int, int]:
    """Offsets (lo, hi) such that output pixel p depends only on input pixels p+lo..p+hi.

    Tracked layer by layer as an interval relative to ``s * i`` for a feature at coarse
    position ``i`` of scale ``s``; up-sampling takes the union over the fine pixel's
    phase, so the interval holds for every output pixel.
    """
    lo = hi = 0
    skips: list[tuple[int, int]] = []
    for level in range(spec.depth + 1):
        s = 2**level
        if level:
            hi += s // 2  # 2x2 max-pool: coarse i covers fine 2i and 2i+1
        lo, hi = lo - 2 * s, hi + 2 * s  # two 3x3 convolutions at scale s (1x1 shortcuts add nothing)
        skips.append((lo, hi))
    for level in reversed(range(spec.depth)):
        s = 2**level
        if spec.upsample == "transpose":
            lo -= s  # fine 2i and 2i+1 both read coarse i only
        else:
            lo, hi = lo - 2 * s, hi + s  # bilinear: fine 2i reads i-1, i; fine 2i+1 reads i, i+1
        slo, shi = skips[level]  # concatenation (and the pixel-local gate) take the union
        lo, hi = min(lo, slo) - 2 * s, max(hi, shi) + 2 * s
    return lo, hi


def receptive_field(spec: ModelSpec) -> int:
    """Receptive-field radius in input pixels: how far an output pixel can "see".

    Output pixel ``(r, c)`` depends only on input pixels within this distance (per axis).
    A tile halo at least this large makes tiled prediction equal whole-image prediction.

    Example:
        >>> receptive_field(ModelSpec(in_channels=3, n_classes=2))
        107
        >>> receptive_field(ModelSpec(in_channels=3, n_classes=2, depth=3))
        51
    """
    lo, hi = _rf_interval(spec)
    return max(-lo, hi)


def recommended_halo(spec: ModelSpec) -> int:
    """The receptive-field radius rounded up to a multiple of the stride (tiles stay aligned).

    Example:
        >>> recommended_halo(ModelSpec(in_channels=3, n_classes=2))
        112
    """
    return round_up(receptive_field(spec), spec.stride)


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``.

    Example:
        >>> round_up(23, 4), round_up(24, 4)
        (24, 24)
    """
    return -(-value // multiple) * multiple


def default_tile(spec: ModelSpec, halo: int) -> int:
    """A 256-pixel core plus the halo on both sides, rounded up to the stride."""
    return round_up(256 + 2 * halo, spec.stride)


# --------------------------------------------------------------------------- tensor layout


def _conv_shapes(prefix: str, cin: int, cout: int, k: int, norm: str) -> dict[str, tuple[int, ...]]:
    """A k x k convolution (bias only without norm), then its BatchNorm at ``prefix+1``."""
    *head, last = prefix.split(".")
    out: dict[str, tuple[int, ...]] = {f"{prefix}.weight": (cout, cin, k, k)}
    if norm == "none":
        out[f"{prefix}.bias"] = (cout,)
        return out
    bn = ".".join([*head, str(int(last) + 1)])
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[f"{bn}.{name}"] = (cout,)
    out[f"{bn}.num_batches_tracked"] = ()
    return out


def _block_shapes(prefix: str, spec: ModelSpec, cin: int, cout: int) -> dict[str, tuple[int, ...]]:
    """A level block: two 3x3 conv(-norm)-ReLU, or the residual block with its 1x1 shortcut."""
    step = 2 if spec.norm == "none" else 3  # conv[, bn], relu
    if spec.arch != "resunet":
        return {
            **_conv_shapes(f"{prefix}.0", cin, cout, 3, spec.norm),
            **_conv_shapes(f"{prefix}.{step}", cout, cout, 3, spec.norm),
        }
    out = {
        **_conv_shapes(f"{prefix}.body.0", cin, cout, 3, spec.norm),
        **_conv_shapes(f"{prefix}.body.{step}", cout, cout, 3, spec.norm),
    }
    if cin != cout:
        out.update(_conv_shapes(f"{prefix}.shortcut.0", cin, cout, 1, spec.norm))
    return out


def state_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor of the network of ``spec`` (its ``state_dict``), without torch.

    The bundle file format checks stored weights against it; the model tests check it
    against :func:`geounet.model.networks.build` for every architecture.

    Example:
        >>> shapes = state_shapes(ModelSpec(in_channels=3, n_classes=2, depth=1, width=4))
        >>> shapes["encoder.0.0.weight"], shapes["head.weight"], len(shapes)
        ((4, 3, 3, 3), (2, 4, 1, 1), 40)
    """
    widths = [spec.width * 2**level for level in range(spec.depth + 1)]
    out: dict[str, tuple[int, ...]] = {}
    first = "encoder.0"
    if spec.indices:  # encoder.0 is (SpectralIndices, block): its band statistics, then the block
        out.update({"encoder.0.0.mean": (spec.in_channels,), "encoder.0.0.std": (spec.in_channels,)})
        first = "encoder.0.1"
    out.update(_block_shapes(first, spec, spec.in_channels + len(spec.indices), widths[0]))
    for level, w in enumerate(widths[1:], start=1):
        out.update(_block_shapes(f"encoder.{level}", spec, widths[level - 1], w))
    for level in range(spec.depth):
        cin, cout = widths[level + 1], widths[level]
        if spec.upsample == "transpose":
            out.update({f"ups.{level}.weight": (cin, cout, 2, 2), f"ups.{level}.bias": (cout,)})
        else:
            out.update({f"ups.{level}.1.weight": (cout, cin, 1, 1), f"ups.{level}.1.bias": (cout,)})
        if spec.arch == "attention-unet":
            c_int = max(cout // 2, 1)
            out.update(_conv_shapes(f"gates.{level}.w_x.0", cout, c_int, 1, spec.norm))
            out.update(_conv_shapes(f"gates.{level}.w_g.0", cout, c_int, 1, spec.norm))
            out.update(_conv_shapes(f"gates.{level}.psi.0", c_int, 1, 1, spec.norm))
        out.update(_block_shapes(f"decoder.{level}", spec, 2 * cout, cout))
    out.update({"head.weight": (spec.n_classes, widths[0], 1, 1), "head.bias": (spec.n_classes,)})
    return out


# --------------------------------------------------------------------------- validation


def spec_problems(spec: ModelSpec) -> list[str]:
    """Every invalid field of ``spec``, each as 'key=value ...; fix' (empty when valid)."""
    problems = []
    if spec.arch not in ARCHS:
        problems.append(f"model.arch={spec.arch!r} is unknown; use one of {', '.join(ARCHS)}")
    if spec.norm not in NORMS:
        problems.append(f"model.norm={spec.norm!r} is unknown; use one of {', '.join(NORMS)}")
    if spec.upsample not in UPSAMPLES:
        problems.append(f"model.upsample={spec.upsample!r} is unknown; use one of {', '.join(UPSAMPLES)}")
    # depth and width are recipe keys (model.depth); the channel counts follow the bands and classes
    for name, value, low, high in (
        ("model.depth", spec.depth, 1, _MAX_DEPTH),
        ("model.width", spec.width, 1, 1024),
        ("in_channels (one per band)", spec.in_channels, 1, 1024),
        ("n_classes (one per class)", spec.n_classes, 1, NODATA_CLASS),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(f"{name}={value!r} must be an integer in {low}..{high}")
    return problems + _indices_problems(spec)


def _indices_problems(spec: ModelSpec) -> list[str]:
    n = spec.in_channels if isinstance(spec.in_channels, int) else 0
    ok = all(
        len(p) == 2 and all(isinstance(i, int) and 0 <= i < n for i in p) and p[0] != p[1]
        for p in spec.indices
    )
    if not ok or len(set(spec.indices)) != len(spec.indices):
        return [
            f"model indices={list(spec.indices)} must be distinct pairs of two different band positions in "
            f"0..{n - 1}; name them in model.indices (e.g. [ndvi, mndwi])"
        ]
    return []


def _class_problems(spec: ModelSpec, classes: Sequence[ClassInfo]) -> list[str]:
    problems = []
    if len(classes) != spec.n_classes:
        problems.append(
            f"classes has {len(classes)} entries but the model has {spec.n_classes} outputs; "
            "give one class per output channel"
        )
    ids = [c.id for c in classes]
    if any(not isinstance(i, int) or not 0 <= i < NODATA_CLASS for i in ids) or len(set(ids)) != len(ids):
        problems.append(
            f"class ids={ids} must be distinct integers in 0..{NODATA_CLASS - 1} ({NODATA_CLASS} is nodata); "
            "renumber them"
        )
    problems += _names_problems("class names", [c.name for c in classes])
    for c in classes:
        if not isinstance(c.color, str) or not _COLOR.match(c.color):
            problems.append(f"class {c.name!r} color={c.color!r} is not #rrggbb; write it like #1f78b4")
    return problems


def _band_problems(spec: ModelSpec, bands: Sequence[str]) -> list[str]:
    problems = []
    if len(bands) != spec.in_channels:
        problems.append(
            f"bands={list(bands)} has {len(bands)} names but the model has {spec.in_channels} input channels; "
            "give one band name per input channel"
        )
    return problems + _names_problems("bands", list(bands))


def _names_problems(what: str, names: list[str]) -> list[str]:
    if any(not isinstance(n, str) or not n.strip() for n in names) or len(set(names)) != len(names):
        return [f"{what}={names} must be distinct, non-empty names; rename the duplicates"]
    return []


def _normalization_problems(n: int, normalization: Normalization) -> list[str]:
    problems = []
    if len(normalization.mean) != n or len(normalization.std) != n:
        problems.append(
            f"normalization has {len(normalization.mean)} means and {len(normalization.std)} stds for {n} "
            "bands; give one mean and one std per band"
        )
    values = [*normalization.mean, *normalization.std, normalization.scale]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        problems.append(f"normalization {normalization} has a non-finite value; use finite numbers")
    elif any(s <= 0 for s in normalization.std) or normalization.scale == 0:
        problems.append(
            f"normalization std={list(normalization.std)} scale={normalization.scale} must be > 0 and != 0; "
            "fix the band statistics"
        )
    return problems


#: The user's names of a bundle's tile and halo: ``geounet model init`` flags, training recipe keys.
BUNDLE_TILE_NAMES = ("--tile / model.tile", "--halo / model.halo")


def _tiling_problems(spec: ModelSpec, tile: Any, halo: Any) -> list[str]:
    """The tile plan check of :func:`geounet.tiling.tile_halo_problem`, plus the spec's recommendation."""
    if (
        isinstance(halo, int)
        and not isinstance(halo, bool)
        and isinstance(tile, int)
        and not isinstance(tile, bool)
    ):
        problem = tile_halo_problem(tile, halo, align=spec.stride, names=BUNDLE_TILE_NAMES)
    else:
        problem = f"tile={tile!r} and halo={halo!r} must be integers"
    if problem is None:
        return []
    rec = recommended_halo(spec)
    return [
        f"{problem} (this model: halo {rec}, the receptive field rounded up; tile {default_tile(spec, rec)})"
    ]


def bundle_problems(
    spec: ModelSpec,
    *,
    bands: Sequence[str],
    normalization: Normalization,
    classes: Sequence[ClassInfo],
    tile: Any,
    halo: Any,
) -> list[str]:
    """Every inconsistency of a would-be bundle, each as 'what, value; fix' (empty when valid)."""
    found = spec_problems(spec)
    if found:
        return found
    return [
        *_band_problems(spec, bands),
        *_class_problems(spec, classes),
        *_normalization_problems(len(bands), normalization),
        *_tiling_problems(spec, tile, halo),
    ]


def raise_problems(
    spec: ModelSpec,
    bands: Sequence[str],
    normalization: Normalization,
    classes: Sequence[ClassInfo],
    tile: Any,
    halo: Any,
) -> None:
    """Raise :class:`ConfigError` with the first of :func:`bundle_problems`, if any."""
    found = bundle_problems(
        spec, bands=bands, normalization=normalization, classes=classes, tile=tile, halo=halo
    )
    if found:
        raise ConfigError(found[0])
