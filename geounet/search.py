"""STAC search → :class:`Scene` values (the only ``pystac_client`` import of geounet).

Two kinds of source, one result type:

* a **STAC API** (any server conforming to item search: Earth Search, Planetary Computer,
  stac-fastapi): searched with pystac-client, paging through results, the cloud-cover
  limit sent as a CQL2 ``filter`` (or the ``query`` extension where that is all the
  server has) and checked again here;
* a **static catalog** (a local or HTTP ``catalog.json``, e.g. made by stactools): read
  with pystac and filtered in process by the same rules.

A :class:`Scene` holds what the reader needs: id, datetime, cloud cover, footprint
(lon/lat), projection, and one :class:`Band` per model band (asset href, band index in
the asset, scale/offset/nodata from ``raster:bands``), in the model's band order. Bands
are matched by asset key, ``eo:bands`` name or common name, then Sentinel-2 aliases
(``B08`` = ``nir``), with a preset's asset-key map first (see :mod:`geounet.stac_presets`).

HTTP errors (5xx, refused connections) are retried with exponential backoff, then
raised as :class:`~geounet.errors.SearchError`; so is an empty result, whose message
echoes the query.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import pystac
import shapely
import shapely.validation
from affine import Affine
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import FallbackToPystac
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from urllib3.util.retry import Retry

from geounet import geo, stac_presets
from geounet.errors import ConfigError, GeounetError, InputError, InputNotFoundError, SearchError, first_line
from geounet.stac_presets import Preset

log = logging.getLogger(__name__)

#: Asset roles that are not pixel data of the scene.
_NON_DATA_ROLES = frozenset({"thumbnail", "overview", "metadata", "visual"})


@dataclass(frozen=True, slots=True)
class Band:
    """Where one model band lives: asset href, 1-based band index in that file, and its scaling.

    ``physical = dn * scale + offset`` (STAC ``raster:bands``); ``nodata`` marks fill pixels.
    """

    name: str
    href: str
    index: int = 1
    asset: str = ""
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None


@dataclass(frozen=True, slots=True)
class Scene:
    """One STAC item, reduced to what reading it needs. ``footprint`` is in lon/lat (EPSG:4326).

    ``datetime`` is the item's ``datetime``, or its ``start_datetime`` when it has a range.

    ``crs``/``transform``/``shape`` are the item's projection (``proj:*``) where it gives one
    (``None`` otherwise); the reader takes the real grid from each asset file.
    """

    id: str
    datetime: datetime | None
    cloud_cover: float | None
    footprint: BaseGeometry
    bands: tuple[Band, ...]
    crs: str | None = None
    transform: Affine | None = None
    shape: tuple[int, int] | None = None
    collection: str | None = None

    @property
    def hrefs(self) -> dict[str, str]:
        """Band name → asset href, in band order."""
        return {b.name: b.href for b in self.bands}

    @property
    def band_names(self) -> tuple[str, ...]:
        """The bands, in order."""
        return tuple(b.name for b in self.bands)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (for ``geounet search --json`` and run manifests)."""
        return {
            "id": self.id,
            "collection": self.collection,
            "datetime": self.datetime.isoformat() if self.datetime else None,
            "cloud_cover": self.cloud_cover,
            "crs": self.crs,
            "shape": list(self.shape) if self.shape else None,
            "bbox": list(self.footprint.bounds),
            "bands": {
                b.name: {"href": b.href, "index": b.index, "scale": b.scale, "offset": b.offset}
                for b in self.bands
            },
        }


@dataclass(frozen=True, slots=True)
class Query:
    """A search, as given: echoed in errors and logs."""

    source: str
    collections: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    intersects: BaseGeometry | None = None
    datetime: str | None = None
    max_cloud: float | None = None
    limit: int | None = None
    sortby: tuple[str, ...] = ()
    filter: str | None = None

    def __str__(self) -> str:
        parts = [f"source={self.source}"]
        if self.collections:
            parts.append(f"collections={','.join(self.collections)}")
        if self.bbox:
            parts.append("bbox=" + ",".join(f"{v:g}" for v in self.bbox))
        if self.intersects is not None:
            parts.append(f"aoi={_short_wkt(self.intersects)}")
        for name in ("datetime", "max_cloud", "limit", "filter"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        if self.sortby:
            parts.append(f"sortby={','.join(self.sortby)}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Retries:
    """HTTP retry policy for STAC requests: ``total`` retries, exponential ``backoff`` seconds."""

    total: int = 3
    backoff: float = 0.5
    timeout: float = 30.0
    statuses: tuple[int, ...] = field(default=(429, 500, 502, 503, 504))


def scenes(
    source: str,
    *,
    collections: Sequence[str] | str = (),
    bbox: Sequence[float] | None = None,
    aoi: BaseGeometry | str | Path | None = None,
    datetime: str | None = None,
    max_cloud: float | None = None,
    limit: int | None = None,
    sortby: Sequence[str] | str = (),
    filter: str | None = None,
    bands: Sequence[str] | None = None,
    preset: str | Preset | None = None,
    page_size: int = 100,
    retries: Retries | None = None,
) -> list[Scene]:
    """Search a STAC API or static catalog and return the matching scenes.

    Args:
        source: STAC API root URL, a static ``catalog.json`` (path or URL), or a preset
            name (``earth-search``, ``planetary-computer``).
        collections: collection ids (a preset supplies its own when none are given).
        bbox: (west, south, east, north) in lon/lat.
        aoi: a shapely geometry in lon/lat, a GeoJSON/GPKG path or WKT (see :func:`read_aoi`).
        datetime: RFC 3339 instant or interval (``2017-01-01/2017-03-31``, open ends ``..``).
        max_cloud: keep scenes with cloud cover <= this percentage.
        limit: at most this many scenes (all pages otherwise).
        sortby: fields, ``-`` prefix for descending (``-properties.datetime``).
        filter: an extra CQL2-text filter (APIs with the filter extension only).
        bands: model band names in order; every scene must have them all.
        preset: preset (or name) for band aliases/signing; found from ``source`` when omitted.
        page_size: items per page requested from an API.
        retries: HTTP retry policy (default :class:`Retries`).

    Raises:
        SearchError: when the source cannot be reached after the retries, rejects the
            query, or nothing matches (the message echoes the query).
        InputError: when a matching scene lacks one of ``bands``.
    """
    by_name = None if "/" in source or source.endswith(".json") else stac_presets.find(source)
    url = by_name.url if by_name else source
    chosen = _resolve_preset(url, preset)
    retries = retries or Retries()
    colls = (collections,) if isinstance(collections, str) else tuple(collections)
    if not colls and chosen:
        colls = (chosen.collection,)
    geom = read_aoi(aoi) if aoi is not None else None
    _interval(datetime)  # fail early, with the value, on a malformed datetime
    query = Query(
        source=url,
        collections=colls,
        bbox=_bbox(bbox),
        intersects=geom,
        datetime=datetime,
        max_cloud=max_cloud,
        limit=limit,
        sortby=(sortby,) if isinstance(sortby, str) else tuple(sortby),
        filter=filter,
    )
    if geom is not None and query.bbox and not geom.intersects(box(*query.bbox)):
        items: list[pystac.Item] = []  # the AOI and the bbox do not overlap: nothing can match
    elif _is_static(url):
        items = _static_items(query, retries)
    else:
        items = _api_items(query, page_size=page_size, retries=retries, preset=chosen)
    found = [from_item(item, bands=bands, preset=chosen) for item in items]
    if not found:
        raise SearchError(
            f"no scenes match {query}; widen the bbox/aoi or datetime, raise max_cloud, "
            "or check the collection"
        )
    return found


def item(href: str, *, bands: Sequence[str] | None = None, preset: str | Preset | None = None) -> Scene:
    """The scene of one STAC item JSON (local path or URL), e.g. ``geounet predict --stac-item``.

    Raises:
        InputNotFoundError: when the item cannot be fetched.
        InputError: when the JSON is not a STAC item or lacks one of ``bands``.
    """
    chosen = _resolve_preset(href, preset)
    try:
        obj = pystac.Item.from_file(href, stac_io=_io(Retries()))
    except (APIError, OSError) as exc:
        raise InputNotFoundError(
            f"STAC item {href!r} cannot be fetched ({first_line(exc)}); check the URL/path"
        ) from exc
    except (KeyError, ValueError, pystac.STACError) as exc:
        raise InputError(f"{href!r} is not a STAC item ({first_line(exc)}); give an item JSON") from exc
    return from_item(obj, bands=bands, preset=chosen)


def from_item(
    item: pystac.Item | Mapping[str, Any],
    *,
    bands: Sequence[str] | None = None,
    preset: str | Preset | None = None,
) -> Scene:
    """A :class:`Scene` from a STAC item (a pystac Item or its JSON dict).

    With ``bands`` the scene's bands follow that order; without, every single-band data
    asset (or each band of multi-band ones) in the item's order.

    Raises:
        InputError: when a band cannot be found; the message lists the item's bands.

    Example:
        >>> scene = from_item({
        ...     "type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [0, 0, 1, 1],
        ...     "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
        ...     "properties": {"datetime": "2020-01-01T00:00:00Z", "eo:cloud_cover": 3.5, "proj:epsg": 32633},
        ...     "links": [],
        ...     "assets": {"B04": {"href": "https://h/B04.tif", "roles": ["data"],
        ...                        "eo:bands": [{"name": "B04", "common_name": "red"}],
        ...                        "raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}]}}},
        ...     bands=["red"])
        >>> scene.cloud_cover, scene.crs, scene.bands[0].href, scene.bands[0].scale
        (3.5, 'EPSG:32633', 'https://h/B04.tif', 0.0001)
    """
    data = item.to_dict(transform_hrefs=False) if isinstance(item, pystac.Item) else dict(item)
    chosen = _resolve_preset("", preset) if preset is not None else None
    props = data.get("properties") or {}
    assets: dict[str, dict[str, Any]] = {k: _absolute(v, item) for k, v in (data.get("assets") or {}).items()}
    band_list = (
        tuple(_find_band(name, assets, chosen, data.get("id", "?")) for name in bands)
        if bands
        else _all_bands(assets)
    )
    proj = _projection(props, assets, band_list)
    cloud = props.get(chosen.cloud_property if chosen else "eo:cloud_cover")
    geometry = data.get("geometry")
    footprint = shape(geometry) if geometry else box(*data["bbox"])
    return Scene(
        id=str(data["id"]),
        datetime=_parse_instant(props.get("datetime") or props.get("start_datetime")),
        cloud_cover=float(cloud) if cloud is not None else None,
        footprint=footprint,
        bands=band_list,
        crs=proj[0],
        transform=proj[1],
        shape=proj[2],
        collection=data.get("collection"),
    )


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


# --------------------------------------------------------------------------- sources


def _io(retries: Retries) -> StacApiIO:
    policy = Retry(
        total=retries.total,
        connect=retries.total,
        read=retries.total,
        status=retries.total,
        backoff_factor=retries.backoff,
        status_forcelist=retries.statuses,
        allowed_methods=None,  # POST /search is idempotent: retry it too
        raise_on_status=False,
    )
    return StacApiIO(max_retries=policy, timeout=retries.timeout)


def _is_static(source: str) -> bool:
    return source.endswith(".json") or "://" not in source


def _api_items(query: Query, *, page_size: int, retries: Retries, preset: Preset | None) -> list[pystac.Item]:
    modifier = _signer(preset)
    try:
        client = Client.open(query.source, stac_io=_io(retries), modifier=modifier)
        if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
            log.info("%s has no item search; filtering its catalog in process", query.source)
            return _filter(client.get_items(recursive=True), query)
        kwargs = _search_kwargs(query, client)
        found = client.search(max_items=query.limit, limit=page_size, **kwargs)
        return _filter(found.items(), query)
    except (ValueError, pystac.STACError) as exc:  # a 200 whose body is not JSON or not STAC
        if isinstance(exc, GeounetError):
            raise
        raise SearchError(
            f"STAC API {query.source} answered with malformed JSON or non-STAC content ({first_line(exc)}) "
            f"for {query}; check that the URL is a STAC API root and the server is healthy"
        ) from exc
    except APIError as exc:
        status = getattr(exc, "status_code", None)
        if status is not None and 400 <= status < 500 and status != 429:
            raise SearchError(
                f"STAC API {query.source} rejected the query (HTTP {status}: {first_line(exc)}) for {query}; "
                "fix the query (collections, filter, datetime)"
            ) from exc
        raise SearchError(
            f"STAC API {query.source} failed after {retries.total} retries ({first_line(exc)}) "
            f"for {query}; check the URL and that the server is up, then retry"
        ) from exc


def _search_kwargs(query: Query, client: Client) -> dict[str, Any]:
    area = query.intersects
    if area is not None and query.bbox:  # STAC APIs take bbox or intersects, not both
        area = area.intersection(box(*query.bbox))
    kwargs: dict[str, Any] = {
        "collections": list(query.collections) or None,
        "bbox": list(query.bbox) if query.bbox and area is None else None,
        "intersects": mapping(area) if area is not None else None,
        "datetime": query.datetime,
        "sortby": list(query.sortby) or None,
    }
    cloud = query.max_cloud
    has_filter = client.conforms_to(ConformanceClasses.FILTER)
    if query.filter is not None:
        if not has_filter:
            raise SearchError(f"{query.source} has no CQL2 filter extension; drop filter={query.filter!r}")
        text = query.filter if cloud is None else f'({query.filter}) AND "eo:cloud_cover" <= {cloud}'
        kwargs["filter"] = text  # pystac-client turns CQL2 text into JSON (with `cql2`) for POST
    elif cloud is not None and has_filter:
        kwargs.update(
            filter={"op": "<=", "args": [{"property": "eo:cloud_cover"}, cloud]}, filter_lang="cql2-json"
        )
    elif cloud is not None and client.conforms_to(ConformanceClasses.QUERY):
        kwargs["query"] = {"eo:cloud_cover": {"lte": cloud}}
    return {k: v for k, v in kwargs.items() if v is not None}


def _static_items(query: Query, retries: Retries) -> list[pystac.Item]:
    source = query.source
    if "://" not in source and not Path(source).exists():
        raise SearchError(f"static catalog {source!r} does not exist for {query}; check the path")
    try:
        with warnings.catch_warnings():  # pystac-client's "falling back to pystac": that is the point here
            warnings.simplefilter("ignore", FallbackToPystac)
            root = pystac.read_file(source, stac_io=_io(retries))
            items = _filter(_static_candidates(root), query)
    except APIError as exc:
        raise SearchError(
            f"static catalog {source} failed after {retries.total} retries ({first_line(exc)}); "
            "check the URL and that the server is up"
        ) from exc
    except (OSError, ValueError, pystac.STACError) as exc:
        raise SearchError(
            f"{source!r} is not a readable STAC catalog ({first_line(exc)}); check the file"
        ) from exc
    items.sort(key=_sort_key(query.sortby))
    return items[: query.limit] if query.limit is not None else items


def _static_candidates(root: pystac.STACObject | pystac.ItemCollection) -> Iterable[pystac.Item]:
    if isinstance(root, pystac.Item):
        return [root]
    if isinstance(root, pystac.Catalog):
        return root.get_items(recursive=True)
    return list(root.items) if isinstance(root, pystac.ItemCollection) else []


def _filter(items: Iterable[pystac.Item], query: Query) -> list[pystac.Item]:
    """In-process rules (static catalogs) and a re-check of the server's answer (APIs)."""
    start, end = _interval(query.datetime)
    area = query.intersects
    if query.bbox:
        area = box(*query.bbox) if area is None else area.intersection(box(*query.bbox))
    out = []
    for it in items:
        if query.collections and it.collection_id not in query.collections:
            continue
        if area is not None and not _footprint(it).intersects(area):
            continue
        when = _item_interval(it)
        if (start and when[1] and when[1] < start) or (end and when[0] and when[0] > end):
            continue
        cloud = it.properties.get("eo:cloud_cover")
        if query.max_cloud is not None and (cloud is None or float(cloud) > query.max_cloud):
            continue
        out.append(it)
    return out


def _sort_key(sortby: Sequence[str]) -> Callable[[pystac.Item], tuple[Any, ...]]:
    fields = []
    for spec in sortby:
        for part in spec.split(","):
            name = part.strip()
            desc = name.startswith("-")
            fields.append((name.lstrip("+-").removeprefix("properties."), desc))

    def key(it: pystac.Item) -> tuple[Any, ...]:
        out: list[Any] = []
        for name, desc in fields:
            value = it.id if name == "id" else it.properties.get(name)
            if name == "datetime":
                value = _item_interval(it)[0]
            number = value.timestamp() if isinstance(value, datetime) else value
            if isinstance(number, (int, float)):
                out.append((0, -number if desc else number))
            else:
                out.append((1 if number is None else 0, str(number)))
        return tuple(out)

    return key


def _signer(preset: Preset | None) -> Callable[[Any], None] | None:
    if preset is None or preset.sign != "planetary-computer":
        return None
    try:
        import planetary_computer
    except ImportError:
        log.warning(
            "Planetary Computer assets need signing: `pip install planetary-computer`; reading them will fail"
        )
        return None
    sign: Callable[[Any], None] = planetary_computer.sign_inplace
    return sign


def _resolve_preset(source: str, preset: str | Preset | None) -> Preset | None:
    if isinstance(preset, Preset):
        return preset
    if preset is not None:
        return stac_presets.preset(preset)
    return stac_presets.find(source) if source else None


# --------------------------------------------------------------------------- items → scenes


def _find_band(
    name: str, assets: Mapping[str, Mapping[str, Any]], preset: Preset | None, item_id: str
) -> Band:
    for candidate in (name, *stac_presets.s2_aliases(name)):
        found = _match(candidate, assets, preset)
        if found is not None:
            key, index = found
            return _band(name, key, index, assets[key])
    listed = ", ".join(f"{k}[{','.join(_band_names(a)) or '-'}]" for k, a in assets.items() if _is_data(a))
    raise InputError(
        f"STAC item {item_id!r} has no band {name!r} (assets: {listed}); "
        "name the model's bands by asset key, eo:bands name or common name, or pass a preset"
    )


def _match(
    name: str, assets: Mapping[str, Mapping[str, Any]], preset: Preset | None
) -> tuple[str, int] | None:
    low = name.lower()
    if preset is not None:
        key = preset.band_keys.get(name) or preset.band_keys.get(low)
        if key is not None and key in assets:
            return (key, 1)
    data = {k: a for k, a in assets.items() if _is_data(a)}
    for key in data:
        if key.lower() == low and len(_eo_bands(data[key])) <= 1:
            return (key, 1)
    # eo:bands name beats common name; single-band assets beat multi-band ones (e.g. "visual")
    for field_name in ("name", "common_name"):
        hits = [
            (len(_eo_bands(a)) > 1, key, i + 1)
            for key, a in data.items()
            for i, b in enumerate(_eo_bands(a))
            if str(b.get(field_name) or b.get(f"eo:{field_name}") or "").lower() == low
        ]
        if hits:
            _, key, index = min(hits, key=lambda h: h[0])
            return (key, index)
    return None


def _band(name: str, key: str, index: int, asset: Mapping[str, Any]) -> Band:
    raster = asset.get("raster:bands") or asset.get("bands") or []
    info = raster[index - 1] if len(raster) >= index else {}
    nodata = info.get("nodata", info.get("raster:nodata", asset.get("nodata")))
    return Band(
        name=name,
        href=str(asset["href"]),
        index=index,
        asset=key,
        scale=float(info.get("scale", info.get("raster:scale", 1.0))),
        offset=float(info.get("offset", info.get("raster:offset", 0.0))),
        nodata=float(nodata) if isinstance(nodata, (int, float)) and not isinstance(nodata, bool) else None,
    )


def _all_bands(assets: Mapping[str, Mapping[str, Any]]) -> tuple[Band, ...]:
    out: list[Band] = []
    for key, asset in assets.items():
        if not _is_data(asset) or not _is_raster(asset):
            continue
        names = _band_names(asset)
        if len(names) <= 1:
            out.append(_band(names[0] if names else key, key, 1, asset))
        else:
            out.extend(_band(n, key, i + 1, asset) for i, n in enumerate(names))
    return tuple(out)


def _eo_bands(asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    bands = asset.get("eo:bands") or asset.get("bands") or []
    return [b for b in bands if isinstance(b, Mapping)]


def _band_names(asset: Mapping[str, Any]) -> list[str]:
    return [
        str(b.get("name") or b.get("common_name") or b.get("eo:common_name") or "") for b in _eo_bands(asset)
    ]


def _is_data(asset: Mapping[str, Any]) -> bool:
    roles = set(asset.get("roles") or ["data"])
    return "data" in roles or not roles & _NON_DATA_ROLES


def _is_raster(asset: Mapping[str, Any]) -> bool:
    kind = str(asset.get("type") or "image/tiff")
    return kind.startswith(("image/", "application/x-hdf")) and "png" not in kind and "jpeg" not in kind


def _absolute(asset: Mapping[str, Any], item: pystac.Item | Mapping[str, Any]) -> dict[str, Any]:
    out = dict(asset)
    href = str(out.get("href", ""))
    if isinstance(item, pystac.Item) and href and "://" not in href and not href.startswith("/"):
        base = item.get_self_href()
        if base:
            out["href"] = pystac.utils.make_absolute_href(href, base)
    return out


def _projection(
    props: Mapping[str, Any], assets: Mapping[str, Mapping[str, Any]], bands: Sequence[Band]
) -> tuple[str | None, Affine | None, tuple[int, int] | None]:
    sources = [props, *(assets[b.asset] for b in bands if b.asset in assets)]
    crs = next((c for c in (_crs(s) for s in sources) if c), None)
    transform = next((Affine(*s["proj:transform"][:6]) for s in sources if s.get("proj:transform")), None)
    rows_cols = next((s["proj:shape"] for s in sources if s.get("proj:shape")), None)
    return crs, transform, (int(rows_cols[0]), int(rows_cols[1])) if rows_cols else None


def _crs(obj: Mapping[str, Any]) -> str | None:
    if obj.get("proj:code"):
        return str(obj["proj:code"])
    if obj.get("proj:epsg"):
        return f"EPSG:{int(obj['proj:epsg'])}"
    wkt = obj.get("proj:wkt2")
    return str(wkt) if wkt else None


def _footprint(it: pystac.Item) -> BaseGeometry:
    if it.geometry:
        return shape(it.geometry)
    return box(*it.bbox) if it.bbox else shapely.Point()


# --------------------------------------------------------------------------- datetimes


def _parse_instant(value: Any) -> datetime | None:
    if value is None or value in ("", ".."):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise ConfigError(
            f"datetime {text!r} is not RFC 3339; use e.g. 2017-02-16 or 2017-02-16T10:21:01Z"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _interval(text: str | None) -> tuple[datetime | None, datetime | None]:
    """(start, end) of an RFC 3339 instant or interval; a bare date covers its whole day."""
    if not text:
        return (None, None)
    parts = text.split("/") if "/" in text else [text, text]
    if len(parts) != 2:
        raise ConfigError(f"datetime {text!r} must be an instant or START/END; e.g. 2017-01-01/2017-03-31")
    start, end = (_parse_instant(p) for p in parts)
    if end is not None and len(parts[1].strip()) == 10:  # date only: through the end of that day
        end = datetime.combine(end.date(), time.max, tzinfo=UTC)
    if start is not None and end is not None and start > end:
        raise ConfigError(f"datetime {text!r} ends before it starts; swap the two ends")
    return (start, end)


def _item_interval(it: pystac.Item) -> tuple[datetime | None, datetime | None]:
    if it.datetime is not None:
        when = it.datetime if it.datetime.tzinfo else it.datetime.replace(tzinfo=UTC)
        return (when, when)
    props = it.properties
    return (_parse_instant(props.get("start_datetime")), _parse_instant(props.get("end_datetime")))


# --------------------------------------------------------------------------- helpers


def _bbox(values: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    if values is None:
        return None
    bbox = tuple(float(v) for v in values)
    if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]) or not all(map(math.isfinite, bbox)):
        raise ConfigError(f"bbox={list(values)} must be west,south,east,north with west<east and south<north")
    return bbox[0], bbox[1], bbox[2], bbox[3]


def _short_wkt(geom: BaseGeometry) -> str:
    text = geom.wkt
    return text if len(text) <= 80 else f"{geom.geom_type}(bounds={tuple(round(v, 5) for v in geom.bounds)})"


def to_json(found: Sequence[Scene]) -> str:
    """The scenes as a JSON array (``geounet search --json``)."""
    return json.dumps([s.to_dict() for s in found], indent=2)
