"""U-Net models and the model bundle (safetensors weights + JSON metadata, no pickle).

Value types first (frozen, no I/O); then the networks (:func:`build`), their
receptive field (:func:`receptive_field`), bundle construction and the bundle file
(:func:`save` / :func:`load`). The only I/O is in :func:`save`, :func:`load` and
:func:`read_metadata` (the bundle file) and :func:`default_provenance` (asks git
for the commit of the source tree, if there is one).

Seam-free tiling rests on two properties of every network built here: it is
strictly local (3x3 zero-padded convolutions, 2x2 max-pooling, 2x2 transposed
convolutions or bilinear up-sampling, 1x1 convolutions, BatchNorm in eval mode: no
global pooling, no statistics over space, no global attention), and it is
shift-equivariant by multiples of its stride ``2**depth``. So cropping the cores of
tiles whose halo is at least the receptive-field radius reproduces the whole-image
prediction.

The bundle file is one safetensors file: tensors are the network's ``state_dict``
(float32, or float16 with ``half=True``); all metadata is one JSON document under the
``"geounet"`` key of the safetensors ``__metadata__``, using the STAC MLM extension's
vocabulary (``mlm:input``, ``mlm:output`` with ``classification:classes``...) plus
``geounet:*`` fields, among them a sha256 of the tensor bytes.

Example:
    >>> b = init_bundle(bands=["red", "green", "blue"],
    ...                 classes=[ClassInfo(0, "background", "#000000"), ClassInfo(1, "crack", "#ff0000")],
    ...                 spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4))
    >>> b.receptive_field, b.halo, b.tile, b.stride
    (23, 24, 304, 4)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import safetensors.numpy
import torch
from torch import nn

from geounet.errors import BundleError, ConfigError, InputError, InputNotFoundError, WriteError

Arch = Literal["unet", "resunet", "attention-unet"]
Norm = Literal["batch", "none"]
Upsample = Literal["transpose", "bilinear"]

#: Class id written where there is no prediction (input nodata, skipped tiles).
NODATA_CLASS = 255


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
    """

    in_channels: int
    n_classes: int
    arch: Arch = "unet"
    depth: int = 4
    width: int = 32
    norm: Norm = "batch"
    upsample: Upsample = "transpose"

    @property
    def stride(self) -> int:
        """Total down-sampling factor; tiles and halos must be multiples of it."""
        return 2**self.depth


@dataclass(frozen=True, slots=True)
class Normalization:
    """Per-band input normalization: ``(x * scale - mean) / std``, band order of the bundle."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0


@dataclass(frozen=True)
class Bundle:
    """Everything needed to run a trained (or randomly initialised) model on imagery.

    ``weights`` maps parameter/buffer names to numpy arrays (as stored in safetensors).
    """

    spec: ModelSpec
    bands: tuple[str, ...]
    normalization: Normalization
    classes: tuple[ClassInfo, ...]
    receptive_field: int
    tile: int
    halo: int
    weights: dict[str, Any] = field(repr=False, default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    name: str = "geounet-unet"

    @property
    def stride(self) -> int:
        """Total down-sampling factor of the network (``spec.stride``)."""
        return self.spec.stride

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Class id of each output channel: channel ``k`` of the logits is ``class_ids[k]``."""
        return tuple(c.id for c in self.classes)


ARCHS: tuple[str, ...] = ("unet", "resunet", "attention-unet")
NORMS: tuple[str, ...] = ("batch", "none")
UPSAMPLES: tuple[str, ...] = ("transpose", "bilinear")
_MAX_DEPTH = 8
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_META_KEY = "geounet"
_FORMAT = "geounet-bundle"
_FORMAT_VERSION = 1
_FIX_EXPORT = "re-export it with `geounet model init` or `geounet train`"


# --------------------------------------------------------------------------- networks


def _conv3(cin: int, cout: int, norm: str) -> list[nn.Module]:
    # A bias before BatchNorm is redundant (BN re-centres); keep it only without norm.
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none")]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    return layers


def _conv1(cin: int, cout: int, norm: str) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, bias=norm == "none")]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    return layers


class _DoubleConv(nn.Sequential):
    """Ronneberger's level block: (3x3 conv, norm, ReLU) twice."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            *_conv3(cin, cout, norm), nn.ReLU(inplace=True), *_conv3(cout, cout, norm), nn.ReLU(inplace=True)
        )


class _ResBlock(nn.Module):
    """Residual block (He et al., as in ResUNet): ReLU(conv-norm-ReLU-conv-norm(x) + shortcut(x))."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv3(cin, cout, norm), nn.ReLU(inplace=True), *_conv3(cout, cout, norm))
        self.shortcut: nn.Module = nn.Identity() if cin == cout else nn.Sequential(*_conv1(cin, cout, norm))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class _AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) on a skip connection.

    The skip features ``x`` are weighted per pixel by ``sigmoid(psi(ReLU(W_x x + W_g g)))``
    where the gating signal ``g`` is the decoder's up-sampled feature map at the same
    resolution. All maps are 1x1 convolutions: the gate is pixel-local, so it keeps the
    network local and shift-equivariant (no global attention).
    """

    def __init__(self, c_x: int, c_g: int, c_int: int, norm: str) -> None:
        super().__init__()
        self.w_x = nn.Sequential(*_conv1(c_x, c_int, norm))
        self.w_g = nn.Sequential(*_conv1(c_g, c_int, norm))
        self.psi = nn.Sequential(*_conv1(c_int, 1, norm), nn.Sigmoid())

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * self.psi(torch.relu(self.w_x(x) + self.w_g(g)))


def _up(cin: int, cout: int, mode: str) -> nn.Module:
    if mode == "transpose":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(cin, cout, 1)
    )


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with 'same' padding, and its residual and attention variants.

    Level ``l`` (0..depth) has ``width * 2**l`` channels; the decoder concatenates the
    (optionally attention-gated) skip with the up-sampled features. Input
    ``(B, in_channels, H, W)`` with H, W multiples of ``2**depth``; output logits
    ``(B, n_classes, H, W)``.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        widths = [spec.width * 2**level for level in range(spec.depth + 1)]
        block = _ResBlock if spec.arch == "resunet" else _DoubleConv
        self.encoder = nn.ModuleList(
            block(spec.in_channels if level == 0 else widths[level - 1], widths[level], spec.norm)
            for level in range(spec.depth + 1)
        )
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(_up(widths[lv + 1], widths[lv], spec.upsample) for lv in range(spec.depth))
        self.gates = nn.ModuleList(
            _AttentionGate(widths[lv], widths[lv], max(widths[lv] // 2, 1), spec.norm)
            for lv in range(spec.depth)
            if spec.arch == "attention-unet"
        )
        self.decoder = nn.ModuleList(block(2 * widths[lv], widths[lv], spec.norm) for lv in range(spec.depth))
        self.head = nn.Conv2d(widths[0], spec.n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.spec.stride
        if x.shape[-1] % stride or x.shape[-2] % stride:
            raise InputError(
                f"input of shape {tuple(x.shape)} has height/width not a multiple of the model's stride "
                f"{stride}; pad or crop tiles to a multiple of {stride}"
            )
        skips = []
        for level, enc in enumerate(self.encoder):
            if level:
                skips.append(x)
                x = self.pool(x)
            x = enc(x)
        for level in reversed(range(self.spec.depth)):
            up = self.ups[level](x)
            skip = skips.pop()
            if len(self.gates):
                skip = self.gates[level](skip, up)
            x = torch.cat([skip, up], dim=1)
            # Drop the halves of the concatenation before the block runs: at full resolution
            # they are the largest maps of the pass (lower peak memory in inference).
            del skip, up
            x = self.decoder[level](x)
        out: torch.Tensor = self.head(x)
        return out


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it, in place; returns ``module``.

    For inference only: the result computes the same function (to float rounding) with
    one memory pass less per convolution. Use on a module in eval mode.

    Example:
        >>> net = build(ModelSpec(in_channels=1, n_classes=2, depth=1, width=2)).eval()
        >>> x = torch.randn(1, 1, 8, 8)
        >>> y = net(x)
        >>> torch.allclose(fuse_batchnorm(net)(x), y, atol=1e-5)
        True
        >>> any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        False
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if module.training:
        raise ValueError("fuse_batchnorm needs a module in eval mode; call module.eval() first")
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
    return module


def build(spec: ModelSpec) -> nn.Module:
    """The network of ``spec``, randomly initialised (PyTorch defaults), in train mode.

    Raises:
        ConfigError: on an unknown architecture/norm/up-sampling or a bad size.

    Example:
        >>> net = build(ModelSpec(in_channels=3, n_classes=2, depth=2, width=4)).eval()
        >>> tuple(net(torch.zeros(1, 3, 8, 12)).shape)
        (1, 2, 8, 12)
    """
    problems = _spec_problems(spec)
    if problems:
        raise ConfigError(problems[0])
    return UNet(spec)


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
    return _round_up(receptive_field(spec), spec.stride)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def default_tile(spec: ModelSpec, halo: int) -> int:
    """A 256-pixel core plus the halo on both sides, rounded up to the stride."""
    return _round_up(256 + 2 * halo, spec.stride)


# --------------------------------------------------------------------------- validation


def _spec_problems(spec: ModelSpec) -> list[str]:
    problems = []
    if spec.arch not in ARCHS:
        problems.append(f"model.arch={spec.arch!r} is unknown; use one of {', '.join(ARCHS)}")
    if spec.norm not in NORMS:
        problems.append(f"model.norm={spec.norm!r} is unknown; use one of {', '.join(NORMS)}")
    if spec.upsample not in UPSAMPLES:
        problems.append(f"model.upsample={spec.upsample!r} is unknown; use one of {', '.join(UPSAMPLES)}")
    for name, value, low, high in (
        ("depth", spec.depth, 1, _MAX_DEPTH),
        ("width", spec.width, 1, 1024),
        ("in_channels", spec.in_channels, 1, 1024),
        ("n_classes", spec.n_classes, 1, 255),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            problems.append(f"model.{name}={value!r} must be an integer in {low}..{high}")
    return problems


def _problems(
    spec: ModelSpec,
    *,
    bands: Sequence[str],
    normalization: Normalization,
    classes: Sequence[ClassInfo],
    tile: int,
    halo: int,
) -> list[str]:
    """Every inconsistency of a would-be bundle, each as 'what, value; fix'."""
    problems = _spec_problems(spec)
    if problems:
        return problems
    if len(bands) != spec.in_channels:
        problems.append(
            f"bands={list(bands)} has {len(bands)} names but the model has {spec.in_channels} input channels; "
            "give one band name per input channel"
        )
    if any(not isinstance(b, str) or not b.strip() for b in bands) or len(set(bands)) != len(bands):
        problems.append(f"bands={list(bands)} must be distinct, non-empty names; rename the duplicates")
    if len(classes) != spec.n_classes:
        problems.append(
            f"classes has {len(classes)} entries but the model has {spec.n_classes} outputs; "
            "give one class per output channel"
        )
    ids = [c.id for c in classes]
    if any(not isinstance(i, int) or not 0 <= i < NODATA_CLASS for i in ids) or len(set(ids)) != len(ids):
        problems.append(f"class ids={ids} must be distinct integers in 0..254 (255 is nodata); renumber them")
    names = [c.name for c in classes]
    if any(not isinstance(n, str) or not n.strip() for n in names) or len(set(names)) != len(names):
        problems.append(f"class names={names} must be distinct and non-empty; rename the duplicates")
    for c in classes:
        if not isinstance(c.color, str) or not _COLOR.match(c.color):
            problems.append(f"class {c.name!r} color={c.color!r} is not #rrggbb; write it like #1f78b4")
    n = len(bands)
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
    stride = spec.stride
    if not isinstance(halo, int) or halo < 0 or halo % stride:
        problems.append(
            f"halo={halo} must be a non-negative multiple of the stride {stride}; "
            f"use {recommended_halo(spec)} (the receptive field rounded up)"
        )
    elif not isinstance(tile, int) or tile % stride or tile <= 2 * halo:
        problems.append(
            f"tile={tile} must be a multiple of the stride {stride} larger than 2*halo={2 * halo}; "
            f"use {default_tile(spec, halo)}"
        )
    return problems


def _expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = UNet(spec)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _weight_problems(spec: ModelSpec, weights: Mapping[str, Any]) -> list[str]:
    expected = _expected_shapes(spec)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    problems = []
    if missing or extra:
        problems.append(
            f"tensor names do not match the {spec.arch} spec (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name in sorted(set(expected) & set(weights)):
        shape = tuple(np.shape(weights[name]))
        if shape != expected[name]:
            problems.append(f"tensor {name} has shape {shape}, the spec needs {expected[name]}")
            break
    return problems


# --------------------------------------------------------------------------- bundles


def default_provenance(**extra: Any) -> dict[str, Any]:
    """Provenance every bundle carries: creation time, geounet/torch versions, git commit.

    The git commit is asked of ``git`` in the source tree of this package (None when it
    is not a checkout or git is missing). ``extra`` entries (training data, epochs,
    metrics...) are added on top.
    """
    from geounet import __version__

    prov: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "geounet_version": __version__,
        "torch_version": torch.__version__,
        "git_commit": _git_commit(),
    }
    prov.update(extra)
    return prov


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def init_bundle(
    *,
    bands: Sequence[str],
    classes: Sequence[ClassInfo],
    spec: ModelSpec | None = None,
    normalization: Normalization | None = None,
    tile: int | None = None,
    halo: int | None = None,
    seed: int = 0,
    provenance: dict[str, Any] | None = None,
    name: str = "geounet-unet",
) -> Bundle:
    """A randomly initialised bundle (pipelines and tests run with it before any training).

    ``spec`` defaults to a depth-4, width-32 U-Net for ``len(bands)`` inputs and
    ``len(classes)`` outputs; ``normalization`` to identity (mean 0, std 1, scale 1);
    ``halo`` to :func:`recommended_halo`; ``tile`` to a 256-pixel core plus the halo.
    The same ``seed`` gives the same weights; the global torch RNG is left untouched.

    Raises:
        ConfigError: on inconsistent arguments (message names the value and the fix).
    """
    spec = spec or ModelSpec(in_channels=len(bands), n_classes=len(classes))
    problems = _spec_problems(spec)
    if problems:
        raise ConfigError(problems[0])
    n = len(bands)
    normalization = normalization or Normalization(mean=(0.0,) * n, std=(1.0,) * n)
    halo = recommended_halo(spec) if halo is None else halo
    tile = default_tile(spec, halo) if tile is None and isinstance(halo, int) else tile
    _raise_problems(spec, bands, normalization, classes, tile, halo)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build(spec)
    prov = default_provenance(source="random-init", seed=seed)
    prov.update(provenance or {})
    return bundle_from_module(
        module,
        spec=spec,
        bands=bands,
        normalization=normalization,
        classes=classes,
        tile=tile,
        halo=halo,
        provenance=prov,
        name=name,
    )


def _raise_problems(
    spec: ModelSpec,
    bands: Sequence[str],
    normalization: Normalization,
    classes: Sequence[ClassInfo],
    tile: Any,
    halo: Any,
) -> None:
    problems = _problems(
        spec, bands=bands, normalization=normalization, classes=classes, tile=tile, halo=halo
    )
    if problems:
        raise ConfigError(problems[0])


def bundle_from_module(
    module: nn.Module,
    *,
    spec: ModelSpec,
    bands: Sequence[str],
    normalization: Normalization,
    classes: Sequence[ClassInfo],
    tile: int | None = None,
    halo: int | None = None,
    provenance: dict[str, Any] | None = None,
    name: str = "geounet-unet",
) -> Bundle:
    """Package a (trained) module built from ``spec`` with its metadata.

    Weights are copied out as float32 numpy arrays (integer buffers keep their dtype).

    Raises:
        ConfigError: when the metadata is inconsistent or the module's tensors do not
            match ``spec``.
    """
    halo = recommended_halo(spec) if halo is None else halo
    tile = default_tile(spec, halo) if tile is None else tile
    _raise_problems(spec, bands, normalization, classes, tile, halo)
    weights: dict[str, np.ndarray] = {}
    for key, value in module.state_dict().items():
        t = value.detach().to("cpu")
        weights[key] = (t.float() if t.is_floating_point() else t).numpy().copy()
    problems = _weight_problems(spec, weights)
    if problems:
        raise ConfigError(f"{problems[0]}; build the module with geounet.model.build(spec)")
    return Bundle(
        spec=spec,
        bands=tuple(bands),
        normalization=normalization,
        classes=tuple(classes),
        receptive_field=receptive_field(spec),
        tile=tile,
        halo=halo,
        weights=weights,
        provenance=dict(provenance) if provenance is not None else default_provenance(),
        name=name,
    )


def module_from_bundle(bundle: Bundle) -> nn.Module:
    """The bundle's network with its weights loaded, in eval mode, float32, on the CPU.

    Raises:
        BundleError: when the weights do not fit the spec.
    """
    problems = _weight_problems(bundle.spec, bundle.weights)
    if problems:
        raise BundleError(f"bundle {bundle.name!r}: {problems[0]}; {_FIX_EXPORT}")
    with torch.device("meta"):
        module = UNet(bundle.spec)
    state = {}
    for key, value in bundle.weights.items():
        arr = np.asarray(value)
        dtype = np.float32 if np.issubdtype(arr.dtype, np.floating) else arr.dtype
        state[key] = torch.from_numpy(np.array(arr, dtype=dtype, copy=True))
    module.load_state_dict(state, strict=True, assign=True)
    return module.float().eval()


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


# --------------------------------------------------------------------------- bundle file


def weights_sha256(weights: Mapping[str, Any]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(weights):
        a = np.asarray(weights[name], order="C")
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def to_metadata(bundle: Bundle, *, weights: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's metadata document (STAC MLM vocabulary plus ``geounet:*`` fields).

    ``weights`` are the tensors as stored (default: the bundle's own); their dtype and
    sha256 are recorded. Provenance values that JSON cannot hold (paths, datetimes) are
    written as strings when saved.
    """
    weights = bundle.weights if weights is None else weights
    spec, norm = bundle.spec, bundle.normalization
    dtypes = sorted({np.asarray(w).dtype.name for w in weights.values() if np.asarray(w).dtype.kind == "f"})
    n_params = int(sum(np.asarray(w).size for w in weights.values() if np.asarray(w).dtype.kind == "f"))
    arch_names = {"unet": "U-Net", "resunet": "ResUNet", "attention-unet": "Attention U-Net"}
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "mlm:name": bundle.name,
        "mlm:architecture": arch_names.get(spec.arch, spec.arch),
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "pytorch",
        "mlm:framework_version": torch.__version__.split("+")[0],
        "mlm:memory_size": int(sum(np.asarray(w).nbytes for w in weights.values())),
        "mlm:total_parameters": n_params,
        "mlm:pretrained": bundle.provenance.get("source") != "random-init",
        "mlm:accelerator": "cuda",
        "mlm:accelerator_constrained": False,
        "mlm:batch_size_suggestion": 8,
        "mlm:input": [
            {
                "name": "chip",
                "bands": list(bundle.bands),
                "input": {
                    "shape": [-1, spec.in_channels, bundle.tile, bundle.tile],
                    "dim_order": ["batch", "bands", "height", "width"],
                    "data_type": "float32",
                },
                # (x*scale - mean)/std == (x - mean/scale) / (std/scale): MLM's z-score per band.
                "value_scaling": [
                    {"type": "z-score", "mean": m / norm.scale, "stddev": s / norm.scale}
                    for m, s in zip(norm.mean, norm.std, strict=True)
                ],
                "resize_type": None,
                "pre_processing_function": None,
            }
        ],
        "mlm:output": [
            {
                "name": "classes",
                "tasks": ["semantic-segmentation"],
                "result": {
                    "shape": [-1, spec.n_classes, bundle.tile, bundle.tile],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": "float32",
                },
                "classification:classes": [
                    {"value": c.id, "name": c.name, "color_hint": c.color.lstrip("#").upper()}
                    for c in bundle.classes
                ],
                "post_processing_function": {
                    "format": "python",
                    "expression": "torch.softmax(logits, dim=1)",
                },
            }
        ],
        "mlm:hyperparameters": {
            "arch": spec.arch,
            "in_channels": spec.in_channels,
            "n_classes": spec.n_classes,
            "depth": spec.depth,
            "width": spec.width,
            "norm": spec.norm,
            "upsample": spec.upsample,
        },
        "geounet:normalization": {"mean": list(norm.mean), "std": list(norm.std), "scale": norm.scale},
        "geounet:nodata_class": NODATA_CLASS,
        "geounet:stride": spec.stride,
        "geounet:receptive_field": bundle.receptive_field,
        "geounet:tile": bundle.tile,
        "geounet:halo": bundle.halo,
        "geounet:provenance": bundle.provenance,
        "geounet:weights_dtype": dtypes[0] if len(dtypes) == 1 else ",".join(dtypes),
        "geounet:weights_sha256": weights_sha256(weights),
    }


def save(bundle: Bundle, path: str | os.PathLike[str], *, half: bool = False) -> Path:
    """Write the bundle as one safetensors file (weights + JSON metadata); returns the path.

    ``half=True`` stores floating-point weights as float16 (half the size; loads back as
    float32). The file is written under a temporary name beside ``path`` and renamed
    when complete, so an interrupted save never leaves a file that looks finished.

    Raises:
        ConfigError: when the bundle is inconsistent or its weights overflow float16.
        WriteError: when the file cannot be written.
    """
    _raise_problems(bundle.spec, bundle.bands, bundle.normalization, bundle.classes, bundle.tile, bundle.halo)
    problems = _weight_problems(bundle.spec, bundle.weights)
    if problems:
        raise ConfigError(
            f"bundle {bundle.name!r}: {problems[0]}; build it with init_bundle/bundle_from_module"
        )
    tensors: dict[str, np.ndarray] = {}
    for key, value in bundle.weights.items():
        arr = np.asarray(value, order="C")
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float16 if half else np.float32)
            if half and not np.isfinite(arr).all():
                raise ConfigError(f"weight {key} overflows float16; save without --half (half=False)")
        tensors[key] = arr
    metadata = {_META_KEY: json.dumps(to_metadata(bundle, weights=tensors), allow_nan=False, default=str)}
    data = safetensors.numpy.save(tensors, metadata=metadata)
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise WriteError(f"cannot write model bundle {out}: {exc.strerror or exc}; check the folder") from exc
    return out


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputNotFoundError(
            f"model bundle {path} does not exist; check the path or create one with `geounet model init`"
        )
    if path.is_dir():
        raise BundleError(f"model bundle {path} is a folder; pass the .safetensors file inside it")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(
            f"cannot read model bundle {path}: {exc.strerror or exc}; check permissions"
        ) from exc


def _header(path: Path, data: bytes) -> dict[str, Any]:
    """The safetensors JSON header, after checking the file is one and is complete."""
    not_bundle = f"{path} is not a geounet bundle (safetensors); {_FIX_EXPORT}"
    if len(data) < 9:
        raise BundleError(f"{path} is truncated or empty ({len(data)} bytes); {_FIX_EXPORT}")
    (n,) = struct.unpack("<Q", data[:8])
    if data[8:9] != b"{":
        raise BundleError(not_bundle)
    if n > len(data) - 8:
        raise BundleError(
            f"{path} is truncated (header needs {n} bytes, file has {len(data) - 8}); {_FIX_EXPORT}"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, ValueError):
        raise BundleError(not_bundle) from None
    if not isinstance(header, dict):
        raise BundleError(not_bundle)
    try:
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (KeyError, IndexError, TypeError, ValueError):
        raise BundleError(
            f"{path} has a corrupt safetensors header (bad data_offsets); {_FIX_EXPORT}"
        ) from None
    need = 8 + n + max(ends, default=0)
    if need > len(data):
        raise BundleError(f"{path} is truncated ({len(data)} of {need} bytes); {_FIX_EXPORT}")
    return header


def _metadata_of(path: Path, header: Mapping[str, Any]) -> dict[str, Any]:
    extra = header.get("__metadata__")
    raw = extra.get(_META_KEY) if isinstance(extra, dict) else None
    if raw is None:
        raise BundleError(f"{path} is a safetensors file without geounet metadata; {_FIX_EXPORT}")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise BundleError(f"{path} has invalid geounet metadata (not JSON); {_FIX_EXPORT}") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise BundleError(f"{path} has metadata that is not a {_FORMAT} document; {_FIX_EXPORT}")
    if meta.get("format_version") != _FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format_version={meta.get('format_version')!r}, this geounet reads "
            f"{_FORMAT_VERSION}; upgrade geounet or {_FIX_EXPORT}"
        )
    return meta


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata document of a bundle file (no weights checked: use :func:`load` for that).

    Raises:
        InputNotFoundError: when the file does not exist.
        BundleError: when it is not a complete geounet bundle.
    """
    p = Path(path)
    data = _read_bytes(p)
    return _metadata_of(p, _header(p, data))


def _from_metadata(meta: Mapping[str, Any], weights: dict[str, np.ndarray]) -> Bundle:
    hp = meta["mlm:hyperparameters"]
    spec = ModelSpec(
        in_channels=hp["in_channels"],
        n_classes=hp["n_classes"],
        arch=hp["arch"],
        depth=hp["depth"],
        width=hp["width"],
        norm=hp["norm"],
        upsample=hp["upsample"],
    )
    norm = meta["geounet:normalization"]
    out = meta["mlm:output"][0]
    return Bundle(
        spec=spec,
        bands=tuple(meta["mlm:input"][0]["bands"]),
        normalization=Normalization(
            mean=tuple(float(v) for v in norm["mean"]),
            std=tuple(float(v) for v in norm["std"]),
            scale=float(norm["scale"]),
        ),
        classes=tuple(
            ClassInfo(int(c["value"]), str(c["name"]), "#" + str(c["color_hint"]).lower())
            for c in out["classification:classes"]
        ),
        receptive_field=int(meta["geounet:receptive_field"]),
        tile=int(meta["geounet:tile"]),
        halo=int(meta["geounet:halo"]),
        weights=weights,
        provenance=dict(meta.get("geounet:provenance") or {}),
        name=str(meta.get("mlm:name", "geounet-unet")),
    )


def load(path: str | os.PathLike[str]) -> Bundle:
    """Read and verify a bundle file; never unpickles anything (safetensors + JSON only).

    Weights come back as stored (float32, or float16 for a ``half`` bundle);
    :func:`module_from_bundle` turns them into a float32 network.

    Raises:
        InputNotFoundError: when the file does not exist.
        BundleError: when the file is not a safetensors bundle (e.g. a pickled ``.pt``),
            is truncated, has missing or invalid metadata, fails its weights checksum, or
            has tensors that do not match its spec.
    """
    p = Path(path)
    data = _read_bytes(p)
    meta = _metadata_of(p, _header(p, data))
    try:
        weights = safetensors.numpy.load(data)
    except Exception as exc:  # the Rust SafetensorError and friends: any failure means a corrupt file
        raise BundleError(f"{p} is corrupt ({str(exc).splitlines()[0]}); {_FIX_EXPORT}") from None
    if weights_sha256(weights) != meta.get("geounet:weights_sha256"):
        raise BundleError(
            f"{p} fails its weights checksum (sha256 differs from the metadata): the file was modified or "
            f"damaged; restore the original or {_FIX_EXPORT}"
        )
    try:
        bundle = _from_metadata(meta, weights)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(
            f"{p} has invalid geounet metadata ({type(exc).__name__}: {exc}); {_FIX_EXPORT}"
        ) from None
    problems = _problems(
        bundle.spec,
        bands=bundle.bands,
        normalization=bundle.normalization,
        classes=bundle.classes,
        tile=bundle.tile,
        halo=bundle.halo,
    )
    problems += _weight_problems(bundle.spec, weights) if not problems else []
    if not problems and bundle.receptive_field != receptive_field(bundle.spec):
        problems.append(
            f"receptive_field={bundle.receptive_field} disagrees with the spec's {receptive_field(bundle.spec)}"
        )
    if problems:
        raise BundleError(f"{p} is inconsistent: {problems[0]}; {_FIX_EXPORT}")
    return bundle
