"""Merge tile predictions into the output grid: core crop (exact) or weighted blend.

``crop`` keeps each tile's core: with a halo at least the model's receptive-field
radius the result equals the whole-image prediction. ``blend`` averages the
overlapping read windows with a smooth weight (cosine or Gaussian, as nnU-Net and
MONAI do) — the alternative for halos smaller than the receptive field. Both reduce
class probabilities to a class id and a confidence (the winning probability, 0–100).
Pure numpy; the blender streams in tile-row order and holds two tile rows at most.

Example:
    >>> from geounet.tiling import grid
    >>> plan = grid((5, 5), tile=6, halo=1)
    >>> probs = np.zeros((2, 6, 6), np.float32); probs[1] = 1.0
    >>> cls, conf = decide(crop(probs, plan[0]), valid=np.ones((4, 4), bool))
    >>> int(cls[0, 0]), int(conf[0, 0])
    (1, 100)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from geounet.errors import ConfigError
from geounet.geo import Window
from geounet.model import NODATA_CLASS
from geounet.tiling import Tile, TileGrid

#: Confidence value written where there is no prediction.
NODATA_CONFIDENCE = 255

WeightFn = Callable[[int, int], np.ndarray]


def crop(probs: np.ndarray, tile: Tile) -> np.ndarray:
    """Crop (classes, rows, cols) probabilities over the read window to the tile's core."""
    rows, cols = tile.core_in_read.to_slices()
    return probs[:, rows, cols]


def decide(
    probs: np.ndarray, *, valid: np.ndarray, class_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class ids (uint8, argmax) and confidence (uint8, 0–100 % of the winning probability).

    ``class_ids`` maps the probability axis to class ids (default 0..K-1). Pixels where
    ``valid`` is False get :data:`~geounet.model.NODATA_CLASS` and :data:`NODATA_CONFIDENCE`.
    """
    best = np.argmax(probs, axis=0)
    classes = (best if class_ids is None else np.asarray(class_ids)[best]).astype(np.uint8)
    confidence = np.rint(np.max(probs, axis=0) * 100.0).clip(0, 100).astype(np.uint8)
    classes[~valid] = NODATA_CLASS
    confidence[~valid] = NODATA_CONFIDENCE
    return classes, confidence


def cosine_weight(size: int, halo: int) -> np.ndarray:
    """Separable raised-cosine (Hann) weight over a square read window, never exactly zero.

    Example:
        >>> w = cosine_weight(12, 2)
        >>> w.shape, bool(w.min() > 0), float(w.max()) == 1.0
        ((12, 12), True, True)
    """
    ramp = np.ones(size, np.float64)
    if halo:
        # rises over the 2*halo pixels that overlap the neighbour; the two ramps sum to 1 there
        n = 2 * halo
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        ramp[:n] = np.minimum(ramp[:n], edge)
        ramp[-n:] = np.minimum(ramp[-n:], edge[::-1])
    w = np.outer(ramp, ramp)
    return np.maximum(w, 1e-3).astype(np.float32)


def gaussian_weight(size: int, halo: int) -> np.ndarray:
    """Gaussian weight centred on the read window (sigma = size/8, as nnU-Net), floored at 1e-3.

    Example:
        >>> float(gaussian_weight(9, 2)[4, 4])
        1.0
    """
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * (size / 8) ** 2))
    w = np.outer(g, g)
    out: np.ndarray = np.maximum(w / w.max(), 1e-3).astype(np.float32)
    return out


BLEND_WEIGHTS: dict[str, WeightFn] = {"cosine": cosine_weight, "gaussian": gaussian_weight}


def weight_fn(name_or_fn: str | WeightFn) -> WeightFn:
    """Resolve a blend weight by name (``cosine``, ``gaussian``) or pass a callable through."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return BLEND_WEIGHTS[name_or_fn]
    except KeyError:
        raise ConfigError(
            f"blend window {name_or_fn!r} is unknown; use one of {', '.join(sorted(BLEND_WEIGHTS))}"
        ) from None


@dataclass(frozen=True)
class Block:
    """A finished piece of the output: window in the grid, probabilities and valid mask."""

    window: Window
    probs: np.ndarray
    valid: np.ndarray


class Blender:
    """Streaming weighted blend of overlapping tile predictions.

    Feed every tile of the plan once (:meth:`add` with probabilities over its read
    window and its chip's valid mask, or :meth:`skip` for tiles that were not
    predicted), in any order (the result does not depend on it); :meth:`ready` yields the
    finished row bands as soon as every tile that can touch them has arrived. Memory: two tile
    rows of probabilities (float64 sums).
    """

    def __init__(self, plan: TileGrid, *, n_classes: int, window: str | WeightFn = "cosine") -> None:
        self.plan = plan
        self.n_classes = n_classes
        self._weight = weight_fn(window)(plan.read_size, plan.halo)
        self._done_per_row = [0] * plan.n_rows
        self._next_row = 0  # first tile row whose core rows are not yet emitted
        self._strips: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _strip(self, tile_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Accumulators (sum w*p, sum w, valid) for the core rows of one tile row."""
        if tile_row not in self._strips:
            h = min(self.plan.size, self.plan.shape[0] - tile_row * self.plan.size)
            cols = self.plan.shape[1]
            # float64 sums of the float32 terms: exact for the few (<= 9) terms a pixel gets, so the
            # blend does not depend on the order tiles arrive in (Ray returns them in any order).
            self._strips[tile_row] = (
                np.zeros((self.n_classes, h, cols), np.float64),
                np.zeros((h, cols), np.float64),
                np.zeros((h, cols), bool),
            )
        return self._strips[tile_row]

    def add(self, tile: Tile, probs: np.ndarray, valid: np.ndarray) -> None:
        """Accumulate one tile's (classes, read rows, read cols) probabilities."""
        weighted = probs * self._weight
        size = self.plan.size
        first = max(tile.read.row, 0) // size
        last = min((tile.read.row_stop - 1) // size, self.plan.n_rows - 1)
        for tr in range(first, last + 1):
            acc, wsum, _ = self._strip(tr)
            strip = Window(tr * size, 0, acc.shape[1], acc.shape[2])
            inter = _intersection(tile.read, strip)
            if inter.size == 0:
                continue
            dst = inter.relative_to(strip).to_slices()
            src = inter.relative_to(tile.read).to_slices()
            acc[(slice(None), *dst)] += weighted[(slice(None), *src)]
            wsum[dst] += self._weight[src]
        _, _, vstrip = self._strip(tile.row)
        core = tile.core.relative_to(Window(tile.row * size, 0, 0, 0)).to_slices()
        vstrip[core] = valid[tile.core_in_read.to_slices()]
        self._done_per_row[tile.row] += 1

    def skip(self, tile: Tile) -> None:
        """Mark a tile that was not predicted (no valid input): its core stays nodata."""
        self._strip(tile.row)
        self._done_per_row[tile.row] += 1

    def ready(self) -> Iterator[Block]:
        """Yield the tile rows whose every contributing tile has been added."""
        reach = -(-self.plan.halo // self.plan.size)  # tile rows a halo can reach into
        while self._next_row < self.plan.n_rows:
            tr = self._next_row
            neighbours = range(max(tr - reach, 0), min(tr + reach, self.plan.n_rows - 1) + 1)
            if any(self._done_per_row[r] < self.plan.n_cols for r in neighbours):
                return
            acc, wsum, valid = self._strips.pop(tr)
            probs = (acc / np.maximum(wsum, 1e-12)).astype(np.float32)
            yield Block(Window(tr * self.plan.size, 0, acc.shape[1], acc.shape[2]), probs, valid)
            self._next_row += 1


def _intersection(a: Window, b: Window) -> Window:
    r0, c0 = max(a.row, b.row), max(a.col, b.col)
    r1, c1 = min(a.row_stop, b.row_stop), min(a.col_stop, b.col_stop)
    return Window(r0, c0, max(r1 - r0, 0), max(c1 - c0, 0))


MERGES = ("crop", "blend")


def check_merge(name: str) -> str:
    """Validate a merge strategy name (``crop`` or ``blend``)."""
    if name not in MERGES:
        raise ConfigError(f"merge={name!r} is unknown; use one of {', '.join(MERGES)}")
    return name
