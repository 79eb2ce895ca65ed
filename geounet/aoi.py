"""Areas of interest and their target grids: WKT, vector files or shapely geometries, in lon/lat.

An AOI is validated (a self-intersecting polygon breaks coverage and AOI masks) and, for a
file, reprojected to EPSG:4326 and unioned. :func:`target_grid` puts it on the UTM grid of
its centroid (or a given CRS) at a resolution: the grid of a mosaic job.
"""

from __future__ import annotations

from pathlib import Path

import shapely
import shapely.validation
from shapely.geometry.base import BaseGeometry

from geounet import geo
from geounet.errors import InputError, InputNotFoundError


def read_aoi(value: BaseGeometry | str | Path) -> BaseGeometry:
    """An AOI geometry in lon/lat from a shapely geometry, a vector file (GeoJSON, GPKG...) or WKT.

    A file's features are reprojected to EPSG:4326 and unioned.

    Raises:
        InputNotFoundError: for a path that does not exist.
        InputError: for unparsable WKT or an empty file.

    Example:
        >>> read_aoi("POLYGON ((12 52, 13 52, 13 53, 12 52))").bounds
        (12.0, 52.0, 13.0, 53.0)
    """
    if isinstance(value, BaseGeometry):
        return _valid_aoi(value, "AOI")
    text = str(value).strip()
    if text.upper().startswith(("POLYGON", "MULTIPOLYGON", "POINT", "LINESTRING", "GEOMETRYCOLLECTION")):
        try:
            return _valid_aoi(shapely.from_wkt(text), f"AOI WKT {text[:60]!r}")
        except shapely.errors.GEOSException as exc:
            raise InputError(f"AOI WKT {text[:60]!r} does not parse ({exc}); fix the WKT") from exc
    path = Path(text)
    if not path.exists():
        raise InputNotFoundError(f"AOI file {text!r} does not exist; give a GeoJSON/GPKG path or WKT")
    import geopandas  # lazy: heavy, only for file AOIs

    frame = geopandas.read_file(path)
    if frame.empty:
        raise InputError(f"AOI file {text!r} has no features; give a file with at least one polygon")
    if frame.crs is not None:
        frame = frame.to_crs("EPSG:4326")
    return shapely.union_all([_valid_aoi(g, f"AOI file {text!r}") for g in frame.geometry.values])


def _valid_aoi(geom: BaseGeometry, label: str) -> BaseGeometry:
    """``geom`` if it is a valid geometry; self-intersections etc. break the coverage and AOI masks."""
    if geom is not None and not geom.is_valid:
        raise InputError(
            f"{label} is not a valid geometry ({shapely.validation.explain_validity(geom)}); fix it, "
            "e.g. with shapely.make_valid() or QGIS's Fix Geometries"
        )
    return geom


def target_grid(aoi: BaseGeometry, *, resolution: float, crs: str | None = None) -> geo.Grid:
    """The target grid of a job: the AOI (lon/lat) in ``crs`` (default: UTM zone of its centroid).

    Example:
        >>> from shapely.geometry import box
        >>> g = target_grid(box(12.5, 52.45, 12.6, 52.5), resolution=10)
        >>> g.crs, g.resolution
        ('EPSG:32633', (10.0, 10.0))
    """
    from pyproj import Transformer  # lazy: pyproj is slow to import

    centroid = aoi.centroid
    target = crs or geo.utm_crs(centroid.x, centroid.y)
    transformer = Transformer.from_crs("EPSG:4326", target, always_xy=True)
    west, south, east, north = aoi.bounds
    left, bottom, right, top = transformer.transform_bounds(west, south, east, north, densify_pts=21)
    return geo.from_bounds((left, bottom, right, top), crs=target, resolution=resolution)
