"""Polygon layers: GeoPackage (streamed, with its default QGIS style), GeoParquet, FlatGeobuf.

- ``gpkg`` (default): GeoPackage with an R-tree spatial index and, in the ``layer_styles``
  table (QGIS's own schema), a categorized style on ``class_id`` that QGIS applies when
  the layer is loaded. QGIS ignores a style row unless ``f_table_catalog`` and
  ``f_table_schema`` are '' (not NULL) and ``f_geometry_column`` is the real column.
- ``parquet``: GeoParquet through geopandas/pyarrow (GDAL builds without Arrow, such as
  Debian's, have no Parquet driver).
- ``fgb``: FlatGeobuf with its packed Hilbert R-tree index.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyogrio
import pyogrio.errors

from geounet.atomic import temp_path
from geounet.errors import ConfigError, GeounetError, InputError, WriteError
from geounet.model import ClassInfo
from geounet.publish.formats import vector_format
from geounet.styles import categorized_qml, categorized_sld


def write_vectors(
    gdf: gpd.GeoDataFrame, path: Path, *, classes: Sequence[ClassInfo], fmt: str = "gpkg"
) -> Path:
    """Write polygons as ``fmt`` (gpkg | parquet | fgb) to ``path``, atomically; returns ``path``.

    The layer is named after the file stem. A GeoPackage gets a spatial index and a
    default QGIS style (categorized on ``class_id`` with the classes' colors and names).
    """
    return write_vector_chunks([gdf], path, classes=classes, fmt=fmt)


def write_vector_chunks(
    chunks: Iterable[gpd.GeoDataFrame], path: Path, *, classes: Sequence[ClassInfo], fmt: str = "gpkg"
) -> Path:
    """Write polygons that come in chunks (same columns) like :func:`write_vectors`.

    A GeoPackage is streamed: the first non-empty chunk creates the layer, the next ones
    are appended, so only one chunk is in memory. GeoParquet and FlatGeobuf are written
    from the whole table (the chunks concatenated and sorted by class and area), since
    geopandas writes GeoParquet from one frame and GDAL's FlatGeobuf driver cannot append.
    """
    driver, _, _ = vector_format(fmt)
    path = Path(path)
    if not path.parent.is_dir():
        raise WriteError(
            f"cannot write {fmt} vectors to {path}: folder {path.parent} does not exist; create it"
        )
    tmp = temp_path(path, path.suffix)
    try:
        if driver == "GPKG":
            _append_gpkg(chunks, tmp, layer=path.stem)
            add_gpkg_style(tmp, layer=path.stem, classes=classes)
        elif driver is None:
            _whole(chunks).to_parquet(tmp, index=False)
        else:
            _to_file(_whole(chunks), tmp, driver=driver, layer=path.stem, append=False)
        os.replace(tmp, path)
    except GeounetError:
        raise
    except (
        OSError,
        sqlite3.Error,
        ValueError,
        pyogrio.errors.DataSourceError,
        pyogrio.errors.DataLayerError,
    ) as exc:
        raise WriteError(
            f"cannot write {fmt} vectors to {path}: {exc}; check the folder and disk space"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _append_gpkg(chunks: Iterable[gpd.GeoDataFrame], path: Path, *, layer: str) -> None:
    """Write the non-empty chunks into one GeoPackage layer (an empty layer when all are empty).

    One ``pyogrio.write_arrow`` call over a stream of Arrow record batches: the layer is
    created once and its R-tree built once at the end. Appending chunk by chunk (a new write
    per chunk) fed the R-tree row by row through its triggers: 23 vs 7.8 s for 800k
    polygons in 20 chunks on this project's 2-core CPU, the same file otherwise.
    """
    it = iter(chunks)
    last = None
    for gdf in it:
        last = gdf
        if len(gdf):
            break
    if last is None:
        raise InputError(f"no polygon chunks to write to {path}; pass at least one (possibly empty) frame")
    if not len(last):
        _to_file(last, path, driver="GPKG", layer=layer, append=False)
        return
    first = pa.table(last.to_arrow(geometry_encoding="WKB"))
    failures: list[BaseException] = []

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from first.to_batches()
            for gdf in it:
                if len(gdf):
                    yield from pa.table(gdf.to_arrow(geometry_encoding="WKB")).cast(first.schema).to_batches()
        except BaseException as exc:  # pyarrow re-raises it wrapped: keep the original for the caller
            failures.append(exc)
            raise

    reader = pa.RecordBatchReader.from_batches(first.schema, batches())
    try:
        pyogrio.write_arrow(
            reader,
            path,
            layer=layer,
            driver="GPKG",
            geometry_name=last.geometry.name,
            geometry_type="Polygon",
            crs=None if last.crs is None else last.crs.to_wkt(),
            layer_options={"SPATIAL_INDEX": "YES"},
            dataset_options={"VERSION": "1.2"},  # GPKG 1.4 warns in GDAL < 3.7
        )
    except Exception:
        if failures:
            raise failures[0] from None
        raise


def _whole(chunks: Iterable[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """The chunks as one frame, sorted by class and decreasing area like :func:`vectorize.to_frame`."""
    items = list(chunks)
    if not items:
        raise InputError("no polygon chunks to write; pass at least one (possibly empty) frame")
    items = [gdf for gdf in items if len(gdf)] or items[:1]  # empty chunks may carry other dtypes
    if len(items) == 1:
        return items[0]
    whole = gpd.GeoDataFrame(pd.concat(items, ignore_index=True), crs=items[0].crs)
    whole = whole.sort_values(["class_id", "area_m2"], ascending=[True, False], kind="stable")
    return whole.reset_index(drop=True)


def _to_file(gdf: gpd.GeoDataFrame, path: Path, *, driver: str, layer: str, append: bool) -> None:
    """One pyogrio write: creates the file/layer (with spatial index), or appends to it."""
    options: dict[str, str] = {}
    if not append:
        options["SPATIAL_INDEX"] = "YES"
        if driver == "GPKG":
            options["VERSION"] = "1.2"  # GPKG 1.4 warns in GDAL < 3.7
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided")  # photos: no CRS on purpose
        gdf.to_file(
            path,
            driver=driver,
            layer=layer,
            engine="pyogrio",
            geometry_type="Polygon",
            mode="a" if append else "w",
            use_arrow=True,  # pyogrio's Arrow write path: 1.5 vs 2.3 s for 202k polygons (GPKG)
            **options,
        )


def add_gpkg_style(
    gpkg: Path, *, layer: str, classes: Sequence[ClassInfo], name: str = "geounet classes"
) -> None:
    """Store a categorized style for ``layer`` as its QGIS default in the ``layer_styles`` table.

    Creates the table with QGIS's schema (and registers it in ``gpkg_contents`` as GDAL
    and QGIS do) when missing; an existing default style of the layer is replaced.
    """
    with sqlite3.connect(gpkg) as db:
        row = db.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
        ).fetchone()
        if row is None:
            raise InputError(f"layer {layer!r} has no geometry column in {gpkg}; write the polygons first")
        db.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles ("
            "id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256), "
            "f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, "
            "styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), "
            "update_time DATETIME DEFAULT CURRENT_TIMESTAMP)"
        )
        db.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', '', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
        )
        db.execute("DELETE FROM layer_styles WHERE f_table_name = ? AND useAsDefault = 1", (layer,))
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
            "VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', '', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (
                layer,
                row[0],
                name,
                categorized_qml(classes),
                categorized_sld(classes, layer),
                "class colors and names",
            ),
        )


def with_attributes(gdf: gpd.GeoDataFrame, attributes: Mapping[str, str | int | float]) -> gpd.GeoDataFrame:
    """``gdf`` with one constant column per attribute, inserted before the geometry column."""
    clash = sorted(set(attributes) & set(gdf.columns))
    if clash:
        raise ConfigError(f"polygon attributes {clash} clash with the standard columns; rename them")
    out = gdf.copy()
    for name, value in attributes.items():
        out.insert(out.columns.get_loc(out.geometry.name), name, value)
    return out
