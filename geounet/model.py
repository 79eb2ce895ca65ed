"""U-Net models and the model bundle (safetensors weights + JSON metadata, no pickle).

Value types first (frozen, no I/O); the network builders and bundle I/O follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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
