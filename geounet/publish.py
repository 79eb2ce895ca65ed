"""GIS-ready products of a run: vector files, area table, STAC Item, QGIS project, quicklook.

:func:`products` turns a finished class COG (and its confidence COG) into everything a
user opens: ``polygons.gpkg`` (or ``.parquet``/``.fgb``) with a default QGIS style,
``areas.csv``, ``item.json`` (a STAC Item describing every output), ``project.qgs`` (QGIS
opens the rasters and polygons together, styled), ``quicklook.png`` and ``run.json``.
Every file is written under a temporary name and renamed when complete.

The vector formats:

- ``gpkg`` (default): GeoPackage with an R-tree spatial index and, in the ``layer_styles``
  table (QGIS's own schema), a categorized style on ``class_id`` that QGIS applies when
  the layer is loaded. QGIS ignores a style row unless ``f_table_catalog`` and
  ``f_table_schema`` are '' (not NULL) and ``f_geometry_column`` is the real column.
- ``parquet``: GeoParquet through geopandas/pyarrow (GDAL builds without Arrow, such as
  Debian's, have no Parquet driver).
- ``fgb``: FlatGeobuf with its packed Hilbert R-tree index.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio.errors
import pystac
import rasterio
import rasterio.warp
import shapely.geometry
import shapely.geometry.polygon
from affine import Affine
from PIL import Image
from pyproj import CRS, Geod
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.vrt import WarpedVRT

from geounet import vectorize
from geounet.atomic import temp_path
from geounet.atomic import write_text as replace_text
from geounet.errors import ConfigError, GeounetError, InputError, WriteError
from geounet.geo import Grid
from geounet.model import NODATA_CLASS, ClassInfo

#: Vector format → (GDAL driver or None for GeoParquet, file extension, media type).
VECTOR_FORMATS: dict[str, tuple[str | None, str, str]] = {
    "gpkg": ("GPKG", ".gpkg", "application/geopackage+sqlite3"),
    "parquet": (None, ".parquet", "application/vnd.apache.parquet"),
    "fgb": ("FlatGeobuf", ".fgb", "application/vnd.flatgeobuf"),
}

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
QUICKLOOK_SIZE = 1024

_NAME_OK = re.compile(r"[^0-9A-Za-z_-]+")


# -- vectors -------------------------------------------------------------------------------


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
    driver, _, _ = _vector_format(fmt)
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
    """Write the non-empty chunks into one GeoPackage layer (an empty layer when all are empty)."""
    written = False
    last = None
    for gdf in chunks:
        last = gdf
        if len(gdf):
            _to_file(gdf, path, driver="GPKG", layer=layer, append=written)
            written = True
    if last is None:
        raise InputError(f"no polygon chunks to write to {path}; pass at least one (possibly empty) frame")
    if not written:
        _to_file(last, path, driver="GPKG", layer=layer, append=False)


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


def categorized_qml(classes: Sequence[ClassInfo], *, field: str = "class_id") -> str:
    """QGIS vector style: categorized renderer on ``field``, one filled symbol per class.

    Example:
        >>> 'attr="class_id"' in categorized_qml([ClassInfo(1, "water", "#1f78b4")])
        True
    """
    root = ET.Element("qgis", version="3.22.0", styleCategories="AllStyleCategories")
    root.append(_categorized_renderer(classes, field))
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "2"
    ET.indent(root)
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, "unicode") + "\n"
    )


def categorized_sld(classes: Sequence[ClassInfo], layer: str, *, field: str = "class_id") -> str:
    """The same style as OGC SLD 1.1 (for tools other than QGIS that read ``styleSLD``)."""
    ns = "http://www.opengis.net/sld"
    se, ogc = "http://www.opengis.net/se", "http://www.opengis.net/ogc"
    ET.register_namespace("", ns)
    ET.register_namespace("se", se)
    ET.register_namespace("ogc", ogc)
    root = ET.Element(f"{{{ns}}}StyledLayerDescriptor", version="1.1.0")
    style = ET.SubElement(
        ET.SubElement(ET.SubElement(root, f"{{{ns}}}NamedLayer"), f"{{{ns}}}UserStyle"),
        f"{{{se}}}FeatureTypeStyle",
    )
    root[0].insert(0, _text(f"{{{se}}}Name", layer))
    for c in classes:
        rule = ET.SubElement(style, f"{{{se}}}Rule")
        rule.append(_text(f"{{{se}}}Name", c.name))
        filt = ET.SubElement(ET.SubElement(rule, f"{{{ogc}}}Filter"), f"{{{ogc}}}PropertyIsEqualTo")
        filt.append(_text(f"{{{ogc}}}PropertyName", field))
        filt.append(_text(f"{{{ogc}}}Literal", str(c.id)))
        sym = ET.SubElement(rule, f"{{{se}}}PolygonSymbolizer")
        fill = ET.SubElement(sym, f"{{{se}}}Fill")
        fill.append(_text(f"{{{se}}}SvgParameter", c.color, name="fill"))
        stroke = ET.SubElement(sym, f"{{{se}}}Stroke")
        stroke.append(_text(f"{{{se}}}SvgParameter", "#232323", name="stroke"))
        stroke.append(_text(f"{{{se}}}SvgParameter", "0.26", name="stroke-width"))
    return ET.tostring(root, "unicode")


def _categorized_renderer(classes: Sequence[ClassInfo], field: str) -> ET.Element:
    renderer = ET.Element(
        "renderer-v2",
        type="categorizedSymbol",
        attr=field,
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
        referencescale="-1",
    )
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, c in enumerate(classes):
        ET.SubElement(cats, "category", value=str(c.id), symbol=str(i), label=c.name, render="true")
        symbols.append(_fill_symbol(str(i), c.rgb))
    return renderer


def _fill_symbol(name: str, rgb: tuple[int, int, int]) -> ET.Element:
    symbol = ET.Element("symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(
        symbol, "layer", {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"}
    )
    props = {
        "color": "{},{},{},255".format(*rgb),
        "style": "solid",
        "outline_color": "35,35,35,255",
        "outline_style": "solid",
        "outline_width": "0.1",
        "outline_width_unit": "MM",
        "joinstyle": "bevel",
    }
    options = ET.SubElement(layer, "Option", type="Map")
    for k, v in props.items():
        ET.SubElement(options, "Option", name=k, value=v, type="QString")
    for k, v in props.items():  # the pre-3.26 form, for older QGIS
        ET.SubElement(layer, "prop", k=k, v=v)
    return symbol


def _text(tag: str, text: str, **attrib: str) -> ET.Element:
    el = ET.Element(tag, attrib)
    el.text = text
    return el


def _vector_format(fmt: str) -> tuple[str | None, str, str]:
    if fmt not in VECTOR_FORMATS:
        raise ConfigError(f"vector format {fmt!r} is unknown; use one of {', '.join(VECTOR_FORMATS)}")
    return VECTOR_FORMATS[fmt]


# -- the products of a run -------------------------------------------------------------------


def products(
    out_dir: Path,
    *,
    classes_path: Path,
    confidence_path: Path | None,
    classes: Sequence[ClassInfo],
    vector_format: str = "gpkg",
    simplify: float | None = None,
    min_area: float = 0.0,
    preview_path: Path | None = None,
    manifest: dict[str, Any] | None = None,
    block: int = 1024,
    attributes: Mapping[str, str | int | float] | None = None,
) -> dict[str, Path]:
    """Write every GIS product of a run into ``out_dir``; returns name → path.

    Names: ``polygons`` (``polygons.<ext>``), ``areas`` (``areas.csv``), ``quicklook``
    (``quicklook.png``), ``project`` (``project.qgs``), ``manifest`` (``run.json``, only when
    ``manifest`` is given) and ``item`` (``item.json``, written last, describing the others).
    ``manifest`` may carry ``id`` and ``datetime`` (ISO 8601) for the STAC Item.
    ``attributes`` are constant columns added to every polygon, for provenance, e.g.
    ``{"scene_id": "S2A_...", "date": "2017-02-16"}``.
    """
    _, ext, _ = _vector_format(vector_format)
    out_dir = Path(out_dir)
    chunks = vectorize.iter_polygons(
        classes_path,
        classes=classes,
        confidence_path=confidence_path,
        block=block,
        simplify=simplify,
        min_area=min_area,
    )
    polygons = (with_attributes(gdf, attributes or {}) for gdf in chunks)
    paths: dict[str, Path] = {
        "polygons": write_vector_chunks(
            polygons, out_dir / f"polygons{ext}", classes=classes, fmt=vector_format
        )
    }
    table = area_table(classes_path, classes=classes)
    paths["areas"] = write_area_csv(table, out_dir / "areas.csv")
    paths["quicklook"] = quicklook(
        classes_path, out_dir / "quicklook.png", classes=classes, preview_path=preview_path
    )
    rasters = {"classes": Path(classes_path)}
    if confidence_path is not None:
        rasters["confidence"] = Path(confidence_path)
    paths["project"] = qgis_project(
        out_dir / "project.qgs", rasters=rasters, vectors=paths["polygons"], classes=classes
    )
    if manifest is not None:
        paths["manifest"] = out_dir / "run.json"
        replace_text(paths["manifest"], json.dumps(manifest, indent=2, default=str) + "\n")
    item = stac_item(
        classes_path,
        classes=classes,
        assets={**rasters, **paths},
        areas=table,
        item_id=str((manifest or {}).get("id") or out_dir.name),
        when=(manifest or {}).get("datetime"),
    )
    paths["item"] = out_dir / "item.json"
    replace_text(paths["item"], json.dumps(item.to_dict(include_self_link=False), indent=2) + "\n")
    return paths


def with_attributes(gdf: gpd.GeoDataFrame, attributes: Mapping[str, str | int | float]) -> gpd.GeoDataFrame:
    """``gdf`` with one constant column per attribute, inserted before the geometry column."""
    clash = sorted(set(attributes) & set(gdf.columns))
    if clash:
        raise ConfigError(f"polygon attributes {clash} clash with the standard columns; rename them")
    out = gdf.copy()
    for name, value in attributes.items():
        out.insert(out.columns.get_loc(out.geometry.name), name, value)
    return out


# -- area table ------------------------------------------------------------------------------


def area_table(classes_path: Path, *, classes: Sequence[ClassInfo]) -> list[dict[str, Any]]:
    """Per-class pixel count, area (m², km²) and percent of the valid pixels, from the raster.

    Read block by block. Areas are geodesic per row for geographic CRSs, planar (in
    metres) otherwise, and in pixels for rasters without CRS.
    """
    with _open(classes_path) as src:
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


# -- quicklook -------------------------------------------------------------------------------


def quicklook(
    classes_path: Path,
    path: Path,
    *,
    classes: Sequence[ClassInfo],
    preview_path: Path | None = None,
    size: int = QUICKLOOK_SIZE,
    opacity: float = 0.55,
) -> Path:
    """A small PNG: the classes' colors, blended over an RGB preview of the input when given.

    The longer side is at most ``size`` px; nodata is transparent (or the preview).
    """
    with _open(classes_path) as src:
        scale = max(1.0, max(src.width, src.height) / size)
        out_h, out_w = max(1, round(src.height / scale)), max(1, round(src.width / scale))
        ids = src.read(1, out_shape=(out_h, out_w), resampling=Resampling.mode)
        nodata = NODATA_CLASS if src.nodata is None else int(src.nodata)
        lut = np.zeros((256, 4), dtype=np.float64)
        for c in classes:
            lut[c.id] = (*c.rgb, 255)
        lut[nodata] = 0
        rgba = lut[ids]
        if preview_path is not None:
            base = _preview_rgb(preview_path, src, (out_h, out_w))
            alpha = (rgba[..., 3:] > 0) * opacity
            rgb = rgba[..., :3] * alpha + base * (1 - alpha)
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


def _preview_rgb(preview_path: Path, target: Any, shape: tuple[int, int]) -> np.ndarray:
    """(rows, cols, 3) float RGB of the preview on the target raster's extent, 2–98 % stretched."""
    with _open(preview_path) as src:
        bands = _rgb_bands(src)
        if src.crs is not None and target.crs is not None:
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
        else:
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


# -- QGIS project ----------------------------------------------------------------------------


def qgis_project(
    path: Path,
    *,
    rasters: Mapping[str, Path],
    vectors: Path | None,
    classes: Sequence[ClassInfo],
    title: str = "geounet run",
) -> Path:
    """A QGIS project (.qgs) opening the vectors (categorized) over the rasters, styled.

    Data sources are stored relative to the project, so the folder can be moved or
    shared as a whole. The class raster uses the paletted style of its ``.qml`` sidecar
    and any other raster (confidence) its gradient sidecar; both are embedded.
    """
    path = Path(path)
    grid = _grid_of(next(iter(rasters.values())))
    root = ET.Element("qgis", projectname=title, version="3.22.0")
    ET.SubElement(root, "title").text = title
    if grid.crs is not None:
        ET.SubElement(root, "projectCrs").append(_srs(grid.crs))
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    layers = ET.SubElement(root, "projectlayers")
    order = ET.SubElement(root, "layerorder")
    entries: list[tuple[str, str, str, str, ET.Element]] = []
    if vectors is not None:
        source = f"./{vectors.name}|layername={vectors.stem}"
        layer = _maplayer("vector", f"{vectors.stem}_layer", vectors.stem, source, "ogr", grid.crs)
        layer.set("geometry", "Polygon")
        layer.set("wkbType", "Polygon")
        layer.append(_categorized_renderer(classes, "class_id"))
        entries.append((f"{vectors.stem}_layer", vectors.stem, source, "ogr", layer))
    for name, raster in rasters.items():
        source = f"./{raster.name}"
        layer = _maplayer("raster", f"{name}_layer", name, source, "gdal", grid.crs)
        style = raster.with_suffix(".qml")
        if style.exists():
            pipe = ET.parse(style).getroot().find("pipe")
            if pipe is not None:
                layer.append(pipe)
        entries.append((f"{name}_layer", name, source, "gdal", layer))
    for i, (layer_id, name, source, provider, layer) in enumerate(entries):
        visible = "Qt::Checked" if i < 2 else "Qt::Unchecked"
        ET.SubElement(
            tree,
            "layer-tree-layer",
            id=layer_id,
            name=name,
            source=source,
            providerKey=provider,
            checked=visible,
            expanded="1",
        )
        layers.append(layer)
        ET.SubElement(order, "layer", id=layer_id)
    props = ET.SubElement(root, "properties")
    paths_el = ET.SubElement(props, "Paths")
    ET.SubElement(paths_el, "Absolute", type="bool").text = "false"
    if grid.crs is not None:  # QGIS reads <projectCrs> only with this flag set
        refsys = ET.SubElement(props, "SpatialRefSys")
        ET.SubElement(refsys, "ProjectionsEnabled", type="int").text = "1"
    ET.indent(root)
    text = (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, "unicode") + "\n"
    )
    replace_text(path, text)
    return path


def _maplayer(kind: str, layer_id: str, name: str, source: str, provider: str, crs: str | None) -> ET.Element:
    layer = ET.Element("maplayer", type=kind)
    ET.SubElement(layer, "id").text = layer_id
    ET.SubElement(layer, "datasource").text = source
    ET.SubElement(layer, "layername").text = name
    if crs is not None:
        ET.SubElement(layer, "srs").append(_srs(crs))
    ET.SubElement(layer, "provider", encoding="UTF-8").text = provider
    return layer


def _srs(crs: str) -> ET.Element:
    c = CRS.from_user_input(crs)
    srs = ET.Element("spatialrefsys")
    ET.SubElement(srs, "wkt").text = c.to_wkt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PROJ.4 strings are lossy; QGIS wants one anyway
        ET.SubElement(srs, "proj4").text = c.to_proj4()
    auth = c.to_authority()
    ET.SubElement(srs, "authid").text = f"{auth[0]}:{auth[1]}" if auth else ""
    ET.SubElement(srs, "description").text = c.name
    ET.SubElement(srs, "geographicflag").text = "true" if c.is_geographic else "false"
    return srs


# -- STAC ------------------------------------------------------------------------------------

_MEDIA = {
    ".tif": COG_MEDIA_TYPE,
    ".csv": "text/csv",
    ".png": pystac.MediaType.PNG,
    ".json": pystac.MediaType.JSON,
    ".qgs": "application/x-qgis",
    **{ext: media for _, ext, media in VECTOR_FORMATS.values()},
}
_ROLES = {
    "classes": ["data"],
    "confidence": ["data", "quality"],
    "polygons": ["data"],
    "areas": ["metadata"],
    "quicklook": ["overview", "visual"],
    "project": ["metadata"],
    "manifest": ["metadata"],
}


def stac_item(
    classes_path: Path,
    *,
    classes: Sequence[ClassInfo],
    assets: Mapping[str, Path],
    areas: list[dict[str, Any]] | None = None,
    item_id: str,
    when: str | datetime | None = None,
) -> pystac.Item:
    """A STAC Item for a run's outputs: footprint, projection and classification extensions.

    Asset hrefs are relative to the folder of the class raster (where ``item.json``
    goes). The classes asset lists the classes (value, name, title, color) and the nodata
    value; ``geounet:areas`` in the properties holds the per-class area table.
    """
    grid = _grid_of(classes_path)
    geometry, bbox = _footprint(grid)
    stamp = _datetime(when)
    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=bbox,
        datetime=stamp,
        properties={"created": datetime.now(UTC).isoformat().replace("+00:00", "Z")},
    )
    if areas is not None:
        item.properties["geounet:areas"] = areas
    for name, asset_path in assets.items():
        item.add_asset(
            name,
            pystac.Asset(
                href=f"./{asset_path.name}",
                media_type=_MEDIA.get(asset_path.suffix),
                roles=_ROLES.get(name, ["metadata"]),
                title=name,
            ),
        )
    if grid.crs is not None:
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        crs = CRS.from_user_input(grid.crs)
        auth = crs.to_authority()
        proj.apply(
            code=f"{auth[0]}:{auth[1]}" if auth else None,
            wkt2=None if auth else crs.to_wkt(),
            shape=list(grid.shape),
            transform=list(grid.transform)[:6],
            bbox=list(grid.bounds),
        )
    classification = ClassificationExtension.ext(item.assets["classes"], add_if_missing=True)
    classification.apply(classes=_stac_classes(classes))
    return item


def validate_item(
    item: pystac.Item | Path, *, schemas: Mapping[str, dict[str, Any]] | None = None
) -> list[str]:
    """Validate a STAC Item against the STAC JSON schemas; returns the schema URIs used.

    pystac ships the core schemas; extension schemas are fetched from their URI unless
    given in ``schemas`` (URI → schema), which is how tests validate without network.
    Raises :class:`pystac.errors.STACValidationError` when invalid.
    """
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    if isinstance(item, Path):
        item = pystac.Item.from_dict(json.loads(item.read_text()))
    validator = JsonSchemaSTACValidator()
    validator.schema_cache.update(schemas or {})
    return list(item.validate(validator=validator))


def _stac_classes(classes: Sequence[ClassInfo]) -> list[Classification]:
    out = [
        Classification.create(
            value=c.id,
            name=_NAME_OK.sub("-", c.name).strip("-") or f"class-{c.id}",
            title=c.name,
            color_hint=c.color.lstrip("#").upper(),
        )
        for c in classes
    ]
    nodata = Classification.create(value=NODATA_CLASS, name="nodata", title="no data")
    nodata.properties["nodata"] = True
    return [*out, nodata]


def _footprint(grid: Grid) -> tuple[dict[str, Any] | None, list[float] | None]:
    if grid.crs is None:
        return None, None
    rows, cols = grid.shape
    ring = [grid.xy(r, c) for r, c in ((0, 0), (0, cols), (rows, cols), (rows, 0), (0, 0))]
    geom = rasterio.warp.transform_geom(
        grid.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}, antimeridian_cutting=True
    )
    # RFC 7946: exterior rings counter-clockwise (antimeridian cutting may give a MultiPolygon).
    footprint = shapely.geometry.shape(geom)
    if isinstance(footprint, shapely.geometry.Polygon):
        footprint = shapely.geometry.polygon.orient(footprint)
    return dict(shapely.geometry.mapping(footprint)), [float(v) for v in footprint.bounds]


def _datetime(when: str | datetime | None) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"datetime={when!r} is not ISO 8601; use e.g. 2017-02-16T10:21:01Z") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------------


def _open(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"cannot open raster {path}: {exc}; check the path") from exc


def _grid_of(path: Path) -> Grid:
    with _open(path) as src:
        return Grid(
            shape=(src.height, src.width),
            transform=src.transform,
            crs=src.crs.to_string() if src.crs else None,
        )
