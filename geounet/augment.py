"""Batch augmentations for segmentation (torch ops): flips, 90° rotations, photometric, small scale.

Geometric transforms move image and mask together; photometric ones (brightness, contrast,
gamma) touch the image only and act on *scaled* values (``x * scale``, before mean/std
normalization), where gamma is meaningful. Every random choice comes from the given
``torch.Generator``, so a seeded run is reproducible (and ``--resume`` re-creates the same
batches). Scaling pads with the ignore value, so invented pixels never count in the loss.

Example:
    >>> import torch
    >>> x, m = torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.uint8)
    >>> y, n = augment(x, m, Augment(), generator=torch.Generator().manual_seed(0))
    >>> tuple(y.shape), tuple(n.shape)
    ((2, 3, 8, 8), (2, 8, 8))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geounet.model import NODATA_CLASS


@dataclass(frozen=True)
class Augment:
    """Which augmentations to apply and how strongly.

    ``brightness``/``contrast`` are ± ranges (additive in scaled units / multiplicative),
    ``gamma`` the ± range of the exponent around 1, ``scale`` the ± range of the zoom factor,
    ``spectral`` the ± range of an independent gain per band (haze, thin cirrus and sensor
    differences change the bands unequally; a model that must not lean on exact band ratios).
    """

    flip: bool = True
    rot90: bool = True
    brightness: float = 0.05
    contrast: float = 0.1
    gamma: float = 0.1
    scale: float = 0.1
    spectral: float = 0.0


def _uniform(n: int, spread: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=g) * 2 - 1) * spread


def geometric(
    x: torch.Tensor, m: torch.Tensor, cfg: Augment, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random h/v flips and 90° rotations (rotations need square chips)."""
    n = x.shape[0]
    flips = torch.rand(n, 2, generator=g) < 0.5
    rots = torch.randint(0, 4, (n,), generator=g)
    xs, ms = [], []
    for i in range(n):
        xi, mi = x[i], m[i]
        if cfg.flip and flips[i, 0]:
            xi, mi = xi.flip(-1), mi.flip(-1)
        if cfg.flip and flips[i, 1]:
            xi, mi = xi.flip(-2), mi.flip(-2)
        if cfg.rot90 and x.shape[-1] == x.shape[-2] and int(rots[i]):
            xi, mi = torch.rot90(xi, int(rots[i]), (-2, -1)), torch.rot90(mi, int(rots[i]), (-2, -1))
        xs.append(xi)
        ms.append(mi)
    return torch.stack(xs), torch.stack(ms)


def photometric(x: torch.Tensor, cfg: Augment, g: torch.Generator) -> torch.Tensor:
    """Per-sample contrast (around the chip mean), brightness offset, per-band gain and gamma on scaled values."""
    n = x.shape[0]
    shape = (n,) + (1,) * (x.ndim - 1)
    contrast = (1 + _uniform(n, cfg.contrast, g)).view(shape)
    bright = _uniform(n, cfg.brightness, g).view(shape)
    gamma = (1 + _uniform(n, cfg.gamma, g)).view(shape)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    y = (x - mean) * contrast + mean + bright
    if cfg.spectral > 0:
        y = y * (1 + _uniform(n * x.shape[1], cfg.spectral, g)).view(n, x.shape[1], *(1,) * (x.ndim - 2))
    if cfg.gamma > 0:
        # gamma on the non-negative part only; sign kept so negative values survive unchanged in order
        y = torch.sign(y) * y.abs().pow(gamma)
    return y


def rescale(
    x: torch.Tensor, m: torch.Tensor, cfg: Augment, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample zoom by ``1 ± scale`` about the chip centre; pixels from outside become NODATA_CLASS."""
    n = x.shape[0]
    s = 1 + _uniform(n, cfg.scale, g)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1 / s
    theta[:, 1, 1] = 1 / s
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    inside = (grid.abs() <= 1).all(dim=-1)
    mk = F.grid_sample(m[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False)[
        :, 0
    ]
    mk = torch.where(inside, mk, torch.full_like(mk, NODATA_CLASS))
    return y, mk.to(m.dtype)


def augment(
    x: torch.Tensor, m: torch.Tensor, cfg: Augment, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the configured augmentations to a batch ``x`` (N, C, H, W) and masks ``m`` (N, H, W)."""
    x, m = geometric(x, m, cfg, generator)
    if cfg.scale > 0:
        x, m = rescale(x, m, cfg, generator)
    if cfg.brightness > 0 or cfg.contrast > 0 or cfg.gamma > 0 or cfg.spectral > 0:
        x = photometric(x, cfg, generator)
    return x.contiguous(), m.contiguous()
