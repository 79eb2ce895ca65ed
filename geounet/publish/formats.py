"""The vector formats geounet writes: GDAL driver, file extension and media type of each.

Apart from :mod:`geounet.publish.vectors` (geopandas, pyogrio, pyarrow) so that a run
without polygons, the STAC Item and the configuration check know the formats without
loading the vector stack.

Example:
    >>> vector_format("fgb")
    ('FlatGeobuf', '.fgb', 'application/vnd.flatgeobuf')
"""

from __future__ import annotations

from geounet.errors import ConfigError

#: Vector format → (GDAL driver or None for GeoParquet, file extension, media type).
VECTOR_FORMATS: dict[str, tuple[str | None, str, str]] = {
    "gpkg": ("GPKG", ".gpkg", "application/geopackage+sqlite3"),
    "parquet": (None, ".parquet", "application/vnd.apache.parquet"),
    "fgb": ("FlatGeobuf", ".fgb", "application/vnd.flatgeobuf"),
}


def vector_format(fmt: str) -> tuple[str | None, str, str]:
    """(driver, extension, media type) of a vector format name; unknown names list the known ones."""
    if fmt not in VECTOR_FORMATS:
        raise ConfigError(f"vector format {fmt!r} is unknown; use one of {', '.join(VECTOR_FORMATS)}")
    return VECTOR_FORMATS[fmt]
