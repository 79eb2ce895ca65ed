"""The U-Net networks (torch): build them, fold BatchNorm, and convert to and from a bundle.

:mod:`geounet.model.spec` says what a network is (and how far it sees);
:mod:`geounet.model.bundle` holds its weights as numpy arrays in a safetensors file. This
module is the only part of :mod:`geounet.model` that imports torch.

Example:
    >>> b = init_bundle(bands=["red", "green", "blue"],
    ...                 classes=[ClassInfo(0, "background", "#000000"), ClassInfo(1, "crack", "#ff0000")],
    ...                 spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4))
    >>> b.receptive_field, b.halo, b.tile, b.stride
    (23, 24, 304, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from geounet.errors import BundleError, ConfigError, InputError
from geounet.model.bundle import FIX_EXPORT, Bundle, default_provenance, weight_problems
from geounet.model.indices import EPS
from geounet.model.spec import (
    ClassInfo,
    ModelSpec,
    Normalization,
    default_tile,
    raise_problems,
    receptive_field,
    recommended_halo,
    spec_problems,
)


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


class SpectralIndices(nn.Module):
    """Appends normalized differences of reflectance bands to a normalized input (pixel-local).

    The input is ``(x * scale - mean) / std`` per band (the bundle's normalization); the
    buffers ``mean``/``std`` (copied in by :func:`set_band_statistics`) undo it, so the
    indices see reflectance, as :func:`geounet.model.indices.normalized_difference` does.
    Being part of the network, every path that runs the bundle computes them identically.
    """

    def __init__(self, n_bands: int, pairs: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.a = [a for a, _ in pairs]
        self.b = [b for _, b in pairs]
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(n_bands))
        self.register_buffer("std", torch.ones(n_bands))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        refl = x * self.std.view(shape) + self.mean.view(shape)
        a, b = refl[:, self.a], refl[:, self.b]
        total = a + b
        nd = torch.where(total > EPS, (a - b) / total.clamp_min(EPS), torch.zeros_like(total))
        return torch.cat([x, nd.clamp(-1.0, 1.0)], dim=1)


def set_band_statistics(module: nn.Module, normalization: Normalization) -> nn.Module:
    """Copy the bundle's band normalization into the network's :class:`SpectralIndices`, if any.

    Call once after :func:`build` for a network trained from scratch; loaded bundles carry
    the statistics in their weights. Returns ``module``.
    """
    for m in module.modules():
        if isinstance(m, SpectralIndices):
            with torch.no_grad():
                m.mean.copy_(torch.tensor(normalization.mean, dtype=torch.float32))
                m.std.copy_(torch.tensor(normalization.std, dtype=torch.float32))
    return module


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
        first: nn.Module = block(spec.in_channels + len(spec.indices), widths[0], spec.norm)
        if spec.indices:
            first = nn.Sequential(SpectralIndices(spec.in_channels, spec.indices), first)
        self.encoder = nn.ModuleList(
            [first, *(block(widths[lv - 1], widths[lv], spec.norm) for lv in range(1, spec.depth + 1))]
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
    problems = spec_problems(spec)
    if problems:
        raise ConfigError(problems[0])
    return UNet(spec)


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
    problems = spec_problems(spec)
    if problems:
        raise ConfigError(problems[0])
    n = len(bands)
    normalization = normalization or Normalization(mean=(0.0,) * n, std=(1.0,) * n)
    halo = recommended_halo(spec) if halo is None else halo
    tile = default_tile(spec, halo) if tile is None and isinstance(halo, int) else tile
    raise_problems(spec, bands, normalization, classes, tile, halo)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = set_band_statistics(build(spec), normalization)
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
    raise_problems(spec, bands, normalization, classes, tile, halo)
    weights: dict[str, np.ndarray] = {}
    for key, value in module.state_dict().items():
        t = value.detach().to("cpu")
        weights[key] = (t.float() if t.is_floating_point() else t).numpy().copy()
    problems = weight_problems(spec, weights) or _statistics_problems(weights, normalization)
    if problems:
        raise ConfigError(f"{problems[0]}; build the module with geounet.model.networks.build(spec)")
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


def _statistics_problems(weights: dict[str, np.ndarray], normalization: Normalization) -> list[str]:
    """The spectral-index layer must undo exactly the bundle's normalization."""
    if "encoder.0.0.mean" not in weights:
        return []
    same = np.allclose(weights["encoder.0.0.mean"], normalization.mean, rtol=1e-6) and np.allclose(
        weights["encoder.0.0.std"], normalization.std, rtol=1e-6
    )
    if same:
        return []
    return [
        f"the spectral-index layer's band statistics {weights['encoder.0.0.mean'].tolist()} differ from the "
        f"normalization mean {list(normalization.mean)}; call set_band_statistics(module, normalization)"
    ]


def module_from_bundle(bundle: Bundle) -> nn.Module:
    """The bundle's network with its weights loaded, in eval mode, float32, on the CPU.

    Raises:
        BundleError: when the weights do not fit the spec.
    """
    problems = weight_problems(bundle.spec, bundle.weights)
    if problems:
        raise BundleError(f"bundle {bundle.name!r}: {problems[0]}; {FIX_EXPORT}")
    with torch.device("meta"):
        module = UNet(bundle.spec)
    state = {}
    for key, value in bundle.weights.items():
        arr = np.asarray(value)
        dtype = np.float32 if np.issubdtype(arr.dtype, np.floating) else arr.dtype
        state[key] = torch.from_numpy(np.array(arr, dtype=dtype, copy=True))
    module.load_state_dict(state, strict=True, assign=True)
    return module.float().eval()
