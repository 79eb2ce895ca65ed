"""``item.json``: a STAC Item describing a run's outputs.

Extensions: projection (the grid), classification (the classes of ``classes.tif``), raster
(data type, nodata, resolution, unit of the rasters) and file (size and multihash sha256 of
every asset). Lineage: ``derived_from`` links to the source STAC Items and to the model
(its MLM Item ``<bundle>.json`` where ``geounet model export-stac`` wrote one, else the
bundle file). The datetime is the scenes' acquisition time, or their range
(``start_datetime``/``end_datetime``) for a composite; only when nothing tells when the
input was acquired is it the processing time, flagged ``geounet:datetime_is_processing``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import rasterio.warp
import shapely.geometry
import shapely.geometry.polygon
from pyproj import CRS
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterBand, RasterExtension

from geounet import stac_validate
from geounet.errors import ConfigError
from geounet.geo import Grid
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.publish.formats import VECTOR_FORMATS
from geounet.publish.rasters import grid_of

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
#: An acquisition time in a file name, e.g. ``T33UUU_20170216T102101_B02.jp2``.
_STAMP = re.compile(r"(?<!\d)(\d{8}T\d{6})(?!\d)")
_NAME_OK = re.compile(r"[^0-9A-Za-z_-]+")

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
    "probabilities": ["data"],
    "observations": ["data", "quality"],
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
    sources: Sequence[Mapping[str, Any]] = (),
    model: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> pystac.Item:
    """A STAC Item for a run's outputs (see the module docstring for extensions and lineage).

    Asset hrefs are relative to the folder of the class raster (where ``item.json``
    goes). The classes asset lists the classes (value, name, title, color) and the nodata
    value; ``geounet:areas`` in the properties holds the per-class area table.

    ``sources`` are the scenes as the run manifest lists them (``id``, ``href``, ``datetime``),
    ``model`` the manifest's model (``path``, ``sha256``), ``source`` the input file of a
    local run (its name may tell the acquisition time).
    """
    grid = grid_of(classes_path)
    geometry, bbox = _footprint(grid)
    start, end, processing = _time_span(sources, when, source)
    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=bbox,
        datetime=start if start == end else None,
        start_datetime=None if start == end else start,
        end_datetime=None if start == end else end,
        properties={"created": datetime.now(UTC).isoformat().replace("+00:00", "Z")},
    )
    if processing:
        item.properties["geounet:datetime_is_processing"] = True
    _lineage(item, sources, model)
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
        _projection(item, grid)
    classification = ClassificationExtension.ext(item.assets["classes"], add_if_missing=True)
    classification.apply(classes=_stac_classes(classes))
    _raster_bands(item, assets, grid)
    _files(item, assets)
    return item


def _projection(item: pystac.Item, grid: Grid) -> None:
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


def _time_span(
    sources: Sequence[Mapping[str, Any]], when: str | datetime | None, source: str | None
) -> tuple[datetime, datetime, bool]:
    """(start, end, is processing time): scenes' range, else ``when``, the file name's stamp, now."""
    stamps = sorted(_datetime(s["datetime"]) for s in sources if s.get("datetime"))
    if stamps:
        return stamps[0], stamps[-1], False
    if when is not None:
        stamp = _datetime(when)
        return stamp, stamp, False
    found = _STAMP.search(Path(source).name) if source else None
    if found:
        stamp = datetime.strptime(found.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        return stamp, stamp, False
    now = datetime.now(UTC)
    return now, now, True


def _lineage(
    item: pystac.Item, sources: Sequence[Mapping[str, Any]], model: Mapping[str, Any] | None
) -> None:
    ids = [str(s["id"]) for s in sources if s.get("id")]
    if ids:
        item.properties["geounet:source_items"] = ids
    for s in sources:
        if s.get("href"):
            item.add_link(
                pystac.Link(
                    "derived_from", str(s["href"]), media_type=pystac.MediaType.JSON, title=s.get("id")
                )
            )
    if model and model.get("path"):
        bundle = Path(str(model["path"])).resolve()
        mlm_item = bundle.with_suffix(".json")
        target, media = (mlm_item, pystac.MediaType.JSON) if mlm_item.exists() else (bundle, None)
        link = pystac.Link("derived_from", str(target), media_type=media, title=f"model {bundle.name}")
        if model.get("sha256"):
            link.extra_fields["file:checksum"] = "1220" + str(model["sha256"])
        item.add_link(link)


#: Raster assets described with the raster extension, and the unit of their values.
_RASTER_UNITS = {"classes": None, "confidence": "%", "probabilities": "%", "observations": None}


def _raster_bands(item: pystac.Item, assets: Mapping[str, Path], grid: Grid) -> None:
    """raster:bands of each raster asset: one band per file band (a probability COG: one per class)."""
    resolution = abs(grid.transform.a) if grid.crs is not None else None
    for name, unit in _RASTER_UNITS.items():
        if name not in assets or name not in item.assets:
            continue
        with rasterio.open(assets[name]) as ds:
            described = list(zip(ds.dtypes, ds.nodatavals, ds.descriptions, strict=True))
        bands = []
        for dtype, nodata, description in described:
            band = RasterBand.create(data_type=dtype, nodata=nodata, spatial_resolution=resolution, unit=unit)
            band.properties["sampling"] = "area"
            if len(described) > 1 and description:
                band.properties["name"] = description  # the class of a probability band
            bands.append(band)
        RasterExtension.ext(item.assets[name], add_if_missing=True).bands = bands


def _files(item: pystac.Item, assets: Mapping[str, Path]) -> None:
    for name, path in assets.items():
        if name not in item.assets or not Path(path).is_file():
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        item.assets[name].extra_fields["file:size"] = Path(path).stat().st_size
        item.assets[name].extra_fields["file:checksum"] = "1220" + digest.hexdigest()
    if FILE_SCHEMA not in item.stac_extensions:
        item.stac_extensions.append(FILE_SCHEMA)


def validate_item(
    item: pystac.Item | Path, *, schemas: Mapping[str, Mapping[str, Any]] | None = None, offline: bool = False
) -> list[str]:
    """Validate a STAC Item against the STAC JSON schemas; returns the schema URIs used.

    pystac ships the core schemas; online, the extension schemas are fetched from their
    URI (or taken from ``schemas``, URI → schema). ``offline`` validates against the core
    and ``schemas`` only, never fetching, and every extension the Item declares must be
    in ``schemas`` (:func:`geounet.stac_validate.validate`). Raises
    :class:`pystac.errors.STACValidationError` (online) or
    :class:`~geounet.errors.InputError` (offline) when invalid.
    """
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    if isinstance(item, Path):
        item = pystac.Item.from_dict(json.loads(item.read_text()))
    if offline:
        return stac_validate.validate(item.to_dict(transform_hrefs=False), schemas or {})
    validator = JsonSchemaSTACValidator()
    validator.schema_cache.update({uri: dict(s) for uri, s in (schemas or {}).items()})
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
