"""``observations.tif``: the per-pixel count of clear valid observations beside a mosaic.

How many scenes saw each pixel clearly (valid data, not excluded by the quality masks;
:func:`geounet.masks.count`): where it is 0 the mosaic has no data, where it is 1 a
single scene decided the class, so users can tell a well-observed result from a
one-shot one. uint16, no nodata (0 is a count), one band described
``clear valid observations``, written by :class:`geounet.write.CogWriter` (nearest
overviews: counts are not averaged into fractions; a QGIS gradient style beside it),
complete or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from geounet.errors import InputError
from geounet.geo import Grid, Window
from geounet.write import CogWriter

DESCRIPTION = "clear valid observations"


def write_observations(
    path: Path, blocks: Iterable[tuple[Window, np.ndarray]], *, grid: Grid, most: int = 10
) -> Path:
    """Write ``(window, counts)`` blocks (windows of ``grid``) as a COG with geounet's COG writer.

    Pixels no block covers are 0. ``most`` tops the QGIS gradient (0 → ``most`` observations).
    Returns ``path``.

    Raises:
        InputError: a block whose shape does not fit its window, or a count outside 0..65535.
        WriteError: the file cannot be written (nothing is left at ``path``).
    """
    with writer(path, grid, most=most) as w:
        for window, counts in blocks:
            w.write(window, _checked(window, counts))
    return Path(path)


def writer(path: Path, grid: Grid, *, most: int = 10) -> CogWriter:
    """The incremental form: a :class:`~geounet.write.CogWriter` for ``observations.tif`` (the pipeline's
    raster stage writes each tile core's counts into it while it predicts)."""
    return CogWriter(Path(path), grid, dtype="uint16", nodata=None, resampling="nearest",
                     description=DESCRIPTION, value_range=(0, most))  # fmt: skip


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
