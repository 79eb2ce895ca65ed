"""Per-pixel quality masks and composite rules (pure numpy, no I/O).

Which pixels of a scene are a clear view of the ground, from the quality asset the item
carries (:data:`geounet.items.MASK_KINDS`):

* ``scl``: Sentinel-2 L2A Scene Classification; :data:`SCL_NOT_CLEAR` (no data, defective,
  cloud shadow, cloud medium/high probability, thin cirrus) by default;
* ``qa_pixel``: Landsat Collection 2 ``QA_PIXEL`` bit flags; bits :data:`QA_PIXEL_NOT_CLEAR`
  (fill, dilated cloud, cirrus, cloud, cloud shadow) by default;
* ``fmask``: Fmask classes (0 clear land, 1 clear water, 2 cloud shadow, 3 snow, 4 cloud,
  255 no observation); :data:`FMASK_NOT_CLEAR` by default;
* ``cloud_mask``: a binary cloud mask (non-zero = cloud), e.g. eo-learn's / Sentinel Hub's CLM;
* ``cloud_probability``: a cloud probability (``unit`` ``%``: 0-100, else a 0-1 fraction,
  after ``raster:bands`` scale/offset), cloudy above :attr:`MaskRule.max_cloud_probability`.

Composite rules over the scenes of a window (:data:`METHODS`): ``first`` takes each pixel
from the first scene with a clear valid observation in compositing order (least cloudy,
then newest: :func:`geounet.scenes.order`); ``median`` takes the per-band median of all
clear valid observations. :func:`count` is the per-pixel number of clear valid observations.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geounet.errors import ConfigError

#: ESA L2A SCL classes that are not a clear view: 0 no data, 1 saturated/defective, 3 cloud
#: shadow, 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus.
SCL_NOT_CLEAR = (0, 1, 3, 8, 9, 10)
#: Landsat C2 QA_PIXEL bits: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow.
QA_PIXEL_NOT_CLEAR = (0, 1, 2, 3, 4)
#: Fmask classes: 2 cloud shadow, 4 cloud, 255 no observation.
FMASK_NOT_CLEAR = (2, 4, 255)
#: Composite rules by name.
METHODS = ("first", "median")


@dataclass(frozen=True, slots=True)
class MaskRule:
    """Which quality values mark a pixel as not clear; one field per mask kind.

    Example:
        >>> MaskRule(scl=(8, 9)).scl
        (8, 9)
    """

    scl: tuple[int, ...] = SCL_NOT_CLEAR
    qa_pixel_bits: tuple[int, ...] = QA_PIXEL_NOT_CLEAR
    fmask: tuple[int, ...] = FMASK_NOT_CLEAR
    max_cloud_probability: float = 40.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_cloud_probability <= 100:
            raise ConfigError(
                f"max_cloud_probability={self.max_cloud_probability:g} must be a percentage in 0..100; e.g. 40"
            )
        if any(not 0 <= b < 16 for b in self.qa_pixel_bits):
            raise ConfigError(
                f"qa_pixel_bits={self.qa_pixel_bits} must be bit numbers 0..15; e.g. (0, 1, 2, 3, 4)"
            )


def clear(kind: str, values: np.ndarray, rule: MaskRule, *, percent: bool = False) -> np.ndarray:
    """True where ``values`` of a ``kind`` quality band say the ground is clearly seen.

    ``percent``: a cloud probability in 0-100 (else a 0-1 fraction).

    Raises:
        ConfigError: an unknown ``kind``.

    Example:
        >>> clear("scl", np.array([4, 8, 9, 5, 3]), MaskRule()).tolist()
        [True, False, False, True, False]
        >>> clear("qa_pixel", np.array([21824, 22280]), MaskRule()).tolist()  # clear land; cloud
        [True, False]
        >>> clear("cloud_probability", np.array([0.1, 0.7]), MaskRule()).tolist()
        [True, False]
    """
    ints = np.rint(values).astype(np.int64)
    if kind == "scl":
        return ~np.isin(ints, rule.scl)
    if kind == "fmask":
        return ~np.isin(ints, rule.fmask)
    if kind == "qa_pixel":
        bits = sum(1 << b for b in rule.qa_pixel_bits)
        return (ints & bits) == 0
    if kind == "cloud_mask":
        return ints == 0
    if kind == "cloud_probability":
        limit = rule.max_cloud_probability if percent else rule.max_cloud_probability / 100.0
        return np.asarray(values <= limit)
    raise ConfigError(
        f"mask kind {kind!r} is unknown; use one of scl, qa_pixel, fmask, cloud_mask, cloud_probability"
    )


def check_method(name: str) -> str:
    """``name`` if it is a composite rule, else a ConfigError listing them."""
    if name not in METHODS:
        raise ConfigError(f"composite={name!r} is unknown; use one of {', '.join(METHODS)}")
    return name


def composite(
    stack: Sequence[np.ndarray], usable: Sequence[np.ndarray], *, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Composite (bands, rows, cols) arrays in order by ``method``: (data float32, valid mask).

    ``usable[i]`` marks the clear valid pixels of ``stack[i]``; elsewhere ``stack[i]`` never
    contributes. Pixels no scene sees clearly are 0 and invalid.

    Example:
        >>> a, b = np.full((1, 1, 2), 1.0), np.full((1, 1, 2), 3.0)
        >>> data, ok = composite([a, b], [np.array([[False, True]]), np.array([[True, True]])], method="first")
        >>> data.tolist(), ok.tolist()
        ([[[3.0, 1.0]]], [[True, True]])
        >>> composite([a, b], [np.ones((1, 2), bool)] * 2, method="median")[0].tolist()
        [[[2.0, 2.0]]]
    """
    check_method(method)
    if not stack:
        raise ConfigError("no observations to composite; search returned none or all were dropped")
    valid = np.logical_or.reduce([np.asarray(u, dtype=bool) for u in usable])
    if method == "first":
        data = np.zeros(stack[0].shape, dtype=np.float32)
        filled = np.zeros(valid.shape, dtype=bool)
        for values, ok in zip(stack, usable, strict=True):
            take = ok & ~filled
            data[:, take] = values[:, take]
            filled |= take
        return data, valid
    cube = np.stack([np.where(ok[None], values, np.nan) for values, ok in zip(stack, usable, strict=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: pixels no scene sees clearly
        data = np.nanmedian(cube, axis=0)
    return np.where(valid[None], data, 0).astype(np.float32), valid


def count(usable: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel number of clear valid observations (uint16), written beside the mosaic.

    Example:
        >>> count([np.array([[True, False]]), np.array([[True, True]])]).tolist()
        [[2, 1]]
    """
    return np.asarray(np.sum([np.asarray(u, dtype=np.uint16) for u in usable], axis=0, dtype=np.uint16))
