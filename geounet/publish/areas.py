"""The per-class area table of a class raster (``areas.csv``): pixels, m², km², percent."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import CRS, Geod

from geounet.atomic import write_text as replace_text
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.publish.rasters import open_raster


def area_table(classes_path: Path, *, classes: Sequence[ClassInfo]) -> list[dict[str, Any]]:
    """Per-class pixel count, area (m², km²) and percent of the valid pixels, from the raster.

    Read block by block. Areas are geodesic per row for geographic CRSs, planar (in
    metres) otherwise, and in pixels for rasters without CRS.
    """
    with open_raster(classes_path) as src:
        counts = np.zeros(256, dtype=np.int64)
        row_area = _row_areas(src)
        areas = np.zeros(256, dtype=np.float64)
        for _, window in src.block_windows(1):
            block = src.read(1, window=window)
            counts += np.bincount(block.ravel(), minlength=256)[:256]
            rows = row_area[window.row_off : window.row_off + window.height]
            for value in np.unique(block):
                areas[value] += float(((block == value).sum(axis=1) * rows).sum())
        nodata = NODATA_CLASS if src.nodata is None else int(src.nodata)
    valid = counts.sum() - counts[nodata]
    return [
        {
            "class_id": c.id,
            "class_name": c.name,
            "pixels": int(counts[c.id]),
            "area_m2": round(float(areas[c.id]), 3),
            "area_km2": round(float(areas[c.id]) / 1e6, 6),
            "percent": round(100.0 * counts[c.id] / valid, 4) if valid else 0.0,
        }
        for c in classes
    ]


def write_area_csv(table: list[dict[str, Any]], path: Path) -> Path:
    """The area table as CSV (header row; one row per class)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]) if table else ["class_id"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    replace_text(path, buf.getvalue())
    return path


def _row_areas(src: Any) -> np.ndarray:
    """Area of one pixel of each row (m²; pixel units without CRS)."""
    t = src.transform
    if src.crs is None:
        return np.full(src.height, abs(t.determinant))
    crs = CRS.from_user_input(src.crs.to_wkt())
    if not crs.is_geographic:
        unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        return np.full(src.height, abs(t.determinant) * unit**2)
    geod = crs.get_geod() or Geod(ellps="WGS84")
    out = np.empty(src.height)
    for r in range(src.height):
        corners = [t * (0, r), t * (1, r), t * (1, r + 1), t * (0, r + 1)]
        lons, lats = zip(*corners, strict=True)
        out[r] = abs(geod.polygon_area_perimeter(lons, lats)[0])
    return out
