"""Open a finished raster of a run (class or confidence COG) for the products built from it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from geounet.errors import InputError
from geounet.geo import Grid


def open_raster(path: Path) -> Any:
    """``rasterio.open(path)``; a missing or broken file is an :class:`InputError` with the path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"cannot open raster {path}: {exc}; check the path") from exc


def grid_of(path: Path) -> Grid:
    """The grid (shape, transform, CRS) of a raster file."""
    with open_raster(path) as src:
        return Grid(
            shape=(src.height, src.width),
            transform=src.transform,
            crs=src.crs.to_string() if src.crs else None,
        )
