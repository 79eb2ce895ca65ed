"""``observations.tif``: the per-pixel count of clear valid observations beside a mosaic.

How many scenes saw each pixel clearly (valid data, not excluded by the quality masks;
:func:`geounet.masks.count`): where it is 0 the mosaic has no data, where it is 1 a
single scene decided the class, so users can tell a well-observed result from a
one-shot one. uint16, no nodata (0 is a count), one band described
``clear valid observations``, written as a COG (nearest overviews: counts are not
averaged into fractions) under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
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

DESCRIPTION = "clear valid observations"


def write_observations(
    path: Path, blocks: Iterable[tuple[Window, np.ndarray]], *, grid: Grid, block: int = 512
) -> Path:
    """Write ``(window, counts)`` blocks (windows of ``grid``, uint16-range counts) as a COG.

    Pixels no block covers are 0. Returns ``path``.

    Raises:
        InputError: a block whose shape does not fit its window, or a negative count.
        WriteError: the file cannot be written (nothing is left at ``path``).
    """
    path = Path(path)
    scratch, tmp = temp_path(path, ".scratch.tif"), temp_path(path, ".tif")
    profile = {
        "driver": "GTiff", "width": grid.cols, "height": grid.rows, "count": 1, "dtype": "uint16",
        "tiled": True, "blockxsize": block, "blockysize": block, "compress": "zstd", "bigtiff": "if_safer",
    }  # fmt: skip
    if grid.crs is not None or grid.transform != Affine.identity():
        profile["transform"] = grid.transform
    if grid.crs is not None:
        profile["crs"] = grid.crs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(scratch, "w", **profile) as ds:
                ds.write(np.zeros((1, grid.rows, grid.cols), np.uint16))
                for window, counts in blocks:
                    ds.write(
                        _checked(window, counts)[None],
                        window=RioWindow(window.col, window.row, window.width, window.height),
                    )
                ds.set_band_description(1, DESCRIPTION)
            rasterio.shutil.copy(scratch, tmp, driver="COG", COMPRESS="DEFLATE", OVERVIEW_RESAMPLING="NEAREST",
                                 BLOCKSIZE=str(block))  # fmt: skip
        os.replace(tmp, path)
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise WriteError(
            f"cannot write observations {path}: {exc}; check disk space and permissions"
        ) from exc
    finally:
        scratch.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


def _checked(window: Window, counts: np.ndarray) -> np.ndarray:
    """``counts`` as uint16 after checking it fits ``window``.

    Example:
        >>> _checked(Window(0, 0, 1, 2), np.array([[0, 3]])).tolist()
        [[0, 3]]
    """
    counts = np.asarray(counts)
    if counts.shape != window.shape:
        raise InputError(
            f"observation counts of shape {counts.shape} do not fit {window}; pass one count per pixel"
        )
    if counts.size and (counts.min() < 0 or counts.max() > np.iinfo(np.uint16).max):
        raise InputError(
            f"observation counts {counts.min()}..{counts.max()} are outside 0..65535 over {window}"
        )
    return counts.astype(np.uint16)
