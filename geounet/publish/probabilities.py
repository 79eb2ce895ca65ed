"""Per-class probability COG on request: one uint8 band per class, 0-100 %, described by class name.

For downstream thresholds and ensembles. :func:`to_percent` is the pure conversion (rounded,
nodata 255 where the input was invalid); :func:`write_probabilities` streams core windows
of a run into one multi-band COG (average overviews), with the band descriptions and
:func:`geounet.styles.class_tags` inside the file, written under a temporary name and
renamed when complete.

What the pipeline calls (with ``--probabilities``): keep each tile's core probabilities
(``merge.crop(probs, tile)``, float, classes first) with its valid mask, then
``write_probabilities(out_dir / "probabilities.tif", ((tile.core, probs, valid) ...),
grid=job.grid, classes=bundle.classes)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

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
    path = Path(path)
    scratch, tmp = temp_path(path, ".scratch.tif"), temp_path(path, ".tif")
    profile = {
        "driver": "GTiff", "width": grid.cols, "height": grid.rows, "count": len(classes), "dtype": "uint8",
        "nodata": NODATA_CLASS, "tiled": True, "blockxsize": block, "blockysize": block, "compress": "zstd",
        "sparse_ok": True, "bigtiff": "if_safer",
    }  # fmt: skip
    if grid.crs is not None or grid.transform != Affine.identity():
        profile["transform"] = grid.transform
    if grid.crs is not None:
        profile["crs"] = grid.crs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(scratch, "w", **profile) as ds:
                for window, probs, valid in blocks:
                    _write_block(ds, window, probs, valid, len(classes))
                for i, c in enumerate(classes, start=1):
                    ds.set_band_description(i, c.name)
                ds.update_tags(**class_tags(classes))
            rasterio.shutil.copy(scratch, tmp, driver="COG", COMPRESS="DEFLATE", OVERVIEW_RESAMPLING="AVERAGE",
                                 BLOCKSIZE=str(block))  # fmt: skip
        os.replace(tmp, path)
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise WriteError(
            f"cannot write probabilities {path}: {exc}; check disk space and permissions"
        ) from exc
    finally:
        scratch.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


def _write_block(ds: object, window: Window, probs: np.ndarray, valid: np.ndarray | None, n: int) -> None:
    if probs.shape != (n, *window.shape):
        raise InputError(
            f"probabilities of shape {probs.shape} do not fit {n} classes over {window}; "
            "pass the core probabilities (merge.crop) of each tile"
        )
    rio_window = RioWindow(window.col, window.row, window.width, window.height)
    ds.write(to_percent(probs, valid), window=rio_window)  # type: ignore[attr-defined]
