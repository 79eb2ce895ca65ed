"""``quicklook.png``: the classes' colors, blended over an RGB preview of the input when there is one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geounet.atomic import temp_path
from geounet.errors import WriteError
from geounet.geo import Grid
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.publish.rasters import open_raster

QUICKLOOK_SIZE = 1024


def quicklook(
    classes_path: Path,
    path: Path,
    *,
    classes: Sequence[ClassInfo],
    preview_path: Path | None = None,
    preview: np.ndarray | None = None,
    size: int = QUICKLOOK_SIZE,
    opacity: float = 0.55,
) -> Path:
    """A small PNG: the classes' colors, blended over an RGB preview of the input when given.

    The longer side is at most ``size`` px; nodata is transparent (or the preview).
    ``preview`` is that RGB drawn ahead by :func:`preview_rgb` (it needs only the input, so a
    run draws it while the model works); without it, it is drawn here from ``preview_path``.
    """
    with open_raster(classes_path) as src:
        out_h, out_w = quicklook_shape(src.height, src.width, size)
        ids = src.read(1, out_shape=(out_h, out_w), resampling=Resampling.mode)
        nodata = NODATA_CLASS if src.nodata is None else int(src.nodata)
        lut = np.zeros((256, 4), dtype=np.float64)
        for c in classes:
            lut[c.id] = (*c.rgb, 255)
        lut[nodata] = 0
        rgba = lut[ids]
        if preview is not None and preview.shape != (out_h, out_w, 3):
            preview = None  # made for another grid: draw it again
        if preview is None and preview_path is not None:
            preview = _preview_rgb(preview_path, src, (out_h, out_w))
        if preview is not None:
            alpha = (rgba[..., 3:] > 0) * opacity
            rgb = rgba[..., :3] * alpha + preview * (1 - alpha)
            rgba = np.concatenate([rgb, np.full((out_h, out_w, 1), 255.0)], axis=-1)
    tmp = temp_path(path, ".png")
    try:
        Image.fromarray(np.clip(rgba, 0, 255).astype(np.uint8), mode="RGBA").save(
            tmp,
            format="PNG",
            compress_level=1,  # optimize=True cost 9 s on a 1024² quicklook (bench.efficiency)
        )
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteError(f"cannot write quicklook {path}: {exc}; check the folder and disk space") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def quicklook_shape(height: int, width: int, size: int = QUICKLOOK_SIZE) -> tuple[int, int]:
    """(rows, cols) of the quicklook of a ``height`` x ``width`` raster: the longer side at most ``size``.

    Example:
        >>> quicklook_shape(2048, 1000), quicklook_shape(300, 200)
        ((1024, 500), (300, 200))
    """
    scale = max(1.0, max(width, height) / size)
    return max(1, round(height / scale)), max(1, round(width / scale))


@dataclass(frozen=True)
class _Target:
    """The grid of a class raster not written yet (what :func:`_preview_rgb` reads of it)."""

    crs: CRS | None
    transform: Affine
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def preview_rgb(preview_path: Path, grid: Grid, *, size: int = QUICKLOOK_SIZE) -> np.ndarray:
    """The stretched RGB of the input that :func:`quicklook` draws under the classes of ``grid``.

    Returns (rows, cols, 3) float on the quicklook's grid (:func:`quicklook_shape`).
    """
    target = _Target(
        CRS.from_user_input(grid.crs) if grid.crs else None, grid.transform, grid.rows, grid.cols
    )
    return _preview_rgb(preview_path, target, quicklook_shape(grid.rows, grid.cols, size))


def _preview_rgb(preview_path: Path, target: Any, shape: tuple[int, int]) -> np.ndarray:
    """(rows, cols, 3) float RGB of the preview on the target raster's extent, 2–98 % stretched."""
    with open_raster(preview_path) as src:
        bands = _rgb_bands(src)
        same_grid = (src.crs, src.transform, src.shape) == (target.crs, target.transform, target.shape)
        if src.crs is not None and target.crs is not None and not same_grid:
            # Warp straight onto the small quicklook grid: GDAL reads only what that needs.
            scale = Affine.scale(target.width / shape[1], target.height / shape[0])
            with WarpedVRT(
                src,
                crs=target.crs,
                transform=target.transform * scale,
                width=shape[1],
                height=shape[0],
                resampling=Resampling.average,
            ) as vrt:
                data = vrt.read(bands, masked=True)
        else:  # the input's own grid (the usual case): GDAL's decimating read, ~3x faster than a warp
            data = src.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.average, masked=True)
    data = data.astype(np.float64)
    out = np.zeros((*shape, 3))
    for i in range(3):
        band = data[min(i, len(bands) - 1)]
        valid = band.compressed()
        if valid.size == 0:
            continue
        lo, hi = np.percentile(valid, [2, 98])
        out[..., i] = np.clip((band.filled(lo) - lo) / max(hi - lo, 1e-9) * 255, 0, 255)
    return out


_RGB_NAMES = (("red", "b04", "b4"), ("green", "b03", "b3"), ("blue", "b02", "b2"))


def _rgb_bands(src: Any) -> list[int]:
    """Band indexes of red, green, blue: by color interpretation, else by band description
    (``red``/``B04``...), else the first three bands (or the only one).

    Example:
        >>> class S:
        ...     count, colorinterp = 4, []
        ...     descriptions = ("B02", "B03", "B04", "B08")
        >>> _rgb_bands(S())
        [3, 2, 1]
    """
    interp = [ci.name for ci in src.colorinterp]
    if all(name in interp for name in ("red", "green", "blue")):
        return [interp.index(name) + 1 for name in ("red", "green", "blue")]
    desc = [(d or "").strip().lower() for d in src.descriptions]
    found = [next((i + 1 for i, d in enumerate(desc) if d in names), 0) for names in _RGB_NAMES]
    if all(found):
        return found
    return [1, 2, 3] if src.count >= 3 else [1]
