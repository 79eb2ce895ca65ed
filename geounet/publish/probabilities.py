"""Per-class probability COG on request: one uint8 band per class, 0-100 %, described by class name.

For downstream thresholds and ensembles. :func:`to_percent` is the pure conversion (rounded,
nodata 255 where the input was invalid); :func:`write_probabilities` streams core windows
of a run into one multi-band COG (average overviews), with the band descriptions and
:func:`geounet.styles.class_tags` inside the file, written under a temporary name and
renamed when complete.

What the pipeline calls (``--outputs ...,probabilities``): a :class:`ProbabilityWriter` beside
its classes/confidence writers (:mod:`geounet.rasters`), fed each core window's probabilities
(``merge.crop(probs, tile)`` as float16, classes first; or a blended block's) with its valid
mask; under Ray, the assembly of :mod:`geounet.parts` feeds it the workers' percent parts.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RioWindow

from geounet.atomic import temp_path
from geounet.errors import InputError, WriteError
from geounet.geo import Grid, Window
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.styles import class_tags
from geounet.write import cog_options


def to_percent(probs: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(classes, rows, cols) probabilities in 0..1 → uint8 percent; 255 where ``valid`` is False.

    Example:
        >>> to_percent(np.array([[[0.104, 0.5]], [[0.896, 0.5]]]), np.array([[True, False]])).tolist()
        [[[10, 255]], [[90, 255]]]
    """
    out = np.rint(np.clip(np.asarray(probs, dtype=np.float32), 0.0, 1.0) * 100).astype(np.uint8)
    if valid is not None:
        out[:, ~np.asarray(valid, dtype=bool)] = NODATA_CLASS
    return out


class ProbabilityWriter:
    """Write core windows of per-class probabilities one by one; finish them as one COG.

    The incremental form of :func:`write_probabilities`, for a loop that writes classes and
    confidence block by block (the pipeline's raster writers)::

        with ProbabilityWriter(out / "probabilities.tif", grid, classes=classes) as w:
            for window, probs, valid in core_blocks:
                w.write(window, probs, valid)

    The file appears only when the ``with`` block ends without an exception.
    """

    def __init__(self, path: Path, grid: Grid, *, classes: Sequence[ClassInfo], block: int = 512) -> None:
        self.path, self.grid, self.classes, self.block = Path(path), grid, tuple(classes), block
        self._scratch = temp_path(self.path, ".scratch.tif")
        self._tmp = temp_path(self.path, ".tif")
        self._ds: Any = None

    def __enter__(self) -> ProbabilityWriter:
        profile = {
            "driver": "GTiff", "width": self.grid.cols, "height": self.grid.rows, "count": len(self.classes),
            "dtype": "uint8", "nodata": NODATA_CLASS, "tiled": True, "blockxsize": self.block,
            "blockysize": self.block, "compress": "zstd", "zstd_level": 1, "sparse_ok": True, "bigtiff": "if_safer", "interleave": "band",
        }  # fmt: skip
        if self.grid.crs is not None or self.grid.transform != Affine.identity():
            profile["transform"] = self.grid.transform
        if self.grid.crs is not None:
            profile["crs"] = self.grid.crs
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self._scratch, "w", **profile)
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise WriteError(
                f"cannot write probabilities {self.path}: {exc}; check disk space and permissions"
            ) from exc
        return self

    def write(self, window: Window, probs: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Write one core window: ``probs`` (classes, rows, cols) in 0..1, ``valid`` its valid mask."""
        _check(window, probs, len(self.classes))
        self.write_percent(window, to_percent(probs, valid))

    def write_percent(self, window: Window, percent: np.ndarray) -> None:
        """Write one core window already converted by :func:`to_percent` (a raster part of a Ray worker)."""
        _check(window, percent, len(self.classes))
        rio_window = RioWindow(window.col, window.row, window.width, window.height)
        self._ds.write(np.asarray(percent, dtype=np.uint8), window=rio_window)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self._finish()
        finally:
            if self._ds is not None and not self._ds.closed:
                self._ds.close()
            self._scratch.unlink(missing_ok=True)
            self._tmp.unlink(missing_ok=True)

    def _finish(self) -> None:
        try:
            for i, c in enumerate(self.classes, start=1):
                self._ds.set_band_description(i, c.name)
            self._ds.update_tags(**class_tags(self.classes))
            self._ds.close()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                options = cog_options(dtype="uint8", resampling="average", block=self.block)
                rasterio.shutil.copy(self._scratch, self._tmp, driver="COG", **options)
            os.replace(self._tmp, self.path)
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise WriteError(
                f"cannot write probabilities {self.path}: {exc}; check disk space and permissions"
            ) from exc


def write_probabilities(
    path: Path,
    blocks: Iterable[tuple[Window, np.ndarray, np.ndarray | None]],
    *,
    grid: Grid,
    classes: Sequence[ClassInfo],
    block: int = 512,
) -> Path:
    """Write ``(window, probabilities, valid)`` blocks (core windows of ``grid``) as a COG; returns ``path``.

    Raises:
        InputError: a block whose class axis or shape does not fit.
        WriteError: the file cannot be written (nothing is left at ``path``).
    """
    with ProbabilityWriter(path, grid, classes=classes, block=block) as writer:
        for window, probs, valid in blocks:
            writer.write(window, probs, valid)
    return Path(path)


def _check(window: Window, probs: np.ndarray, n: int) -> None:
    if probs.shape != (n, *window.shape):
        raise InputError(
            f"probabilities of shape {probs.shape} do not fit {n} classes over {window}; "
            "pass the core probabilities (merge.crop) of each tile"
        )
