"""STAC search → pystac Items and :class:`Scene` values (the only ``pystac_client`` import of geounet).

Two kinds of source, one result type:

* a **STAC API** (any server conforming to item search: Earth Search, Planetary Computer,
  stac-fastapi): searched with pystac-client, paging through results, the cloud-cover
  limit and a CQL2 ``filter`` sent as CQL2 JSON (or the ``query`` extension where that
  is all the server has) and checked again here;
* a **static catalog** (a local or HTTP ``catalog.json``, e.g. made by stactools): read
  with pystac and filtered in process by the same rules, ``filter`` by cql2's evaluator.

``datetime`` takes what pystac-client takes, expanded by pystac-client itself: RFC 3339
instants, partial dates (``2017``, ``2017-02``, ``2017-02-16``) and intervals with open
ends (``2017-02/..``, ``../2017-03``). Items become scenes in :mod:`geounet.items`
(re-exported here: :class:`Scene`, :class:`Band`, :func:`from_item`).

HTTP errors (5xx, refused connections) are retried with exponential backoff, then
raised as :class:`~geounet.errors.SearchError`; so is an empty result, whose message
echoes the query.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystac
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.item_search import ItemSearch
from pystac_client.stac_api_io import StacApiIO
from pystac_client.warnings import FallbackToPystac
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry
from urllib3.util.retry import Retry

from geounet import stac_filter, stac_presets
from geounet.aoi import read_aoi, target_grid
from geounet.errors import ConfigError, GeounetError, InputError, InputNotFoundError, SearchError, first_line
from geounet.items import Band, Scene, from_item
from geounet.stac_filter import Query
from geounet.stac_presets import Preset

__all__ = [
    "Band",
    "Query",
    "Retries",
    "Scene",
    "from_item",
    "item",
    "read_aoi",
    "scenes",
    "search_items",
    "target_grid",
]

log = logging.getLogger(__name__)


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
    bands: Sequence[str] | None = None,
    preset: str | Preset | None = None,
    **query: Any,
) -> list[Scene]:
    """Search a STAC API or static catalog and return the matching scenes.

    Args:
        source: as :func:`search_items`.
        bands: model band names in order; every scene must have them all.
        preset: preset (or name) for band aliases/signing; found from ``source`` when omitted.
        **query: the search, as :func:`search_items` (``collections``, ``bbox``, ``aoi``,
            ``datetime``, ``max_cloud``, ``limit``, ``sortby``, ``filter``, ``page_size``, ``retries``).

    Raises:
        SearchError: when the source cannot be reached after the retries, rejects the
            query, or nothing matches (the message echoes the query).
        InputError: when a matching scene lacks one of ``bands``.
        ConfigError: a malformed argument (the message names it and shows the fix).
    """
    found, chosen = _search(source, preset=preset, **query)
    return [from_item(it, bands=bands, preset=chosen) for it in found]


def search_items(source: str, *, preset: str | Preset | None = None, **query: Any) -> list[pystac.Item]:
    """Search a STAC API or static catalog; the matching items as pystac Items.

    Args:
        source: STAC API root URL, a static ``catalog.json`` (path or URL), or a preset
            name (``earth-search``, ``planetary-computer``).
        preset: preset (or name) for signing; found from ``source`` when omitted.
        collections: collection ids (a preset supplies its own when none are given).
        bbox: (west, south, east, north) in lon/lat.
        aoi: a shapely geometry in lon/lat, a GeoJSON/GPKG path or WKT (see :func:`read_aoi`).
        datetime: what pystac-client accepts: an RFC 3339 instant, a partial date (``2017-02``),
            or an interval of those with open ends (``2017-02/..``).
        max_cloud: keep items with cloud cover <= this percentage (0-100).
        limit: at most this many items (all pages otherwise).
        sortby: fields, ``-`` prefix for descending (``-properties.datetime``).
        filter: an extra CQL2-text filter (sent to APIs with the filter extension; evaluated
            here by cql2 for static catalogs).
        page_size: items per page requested from an API.
        retries: HTTP retry policy (default :class:`Retries`).

    Raises:
        SearchError, ConfigError: as :func:`scenes`.
    """
    return _search(source, preset=preset, **query)[0]


def _search(
    source: str,
    *,
    preset: str | Preset | None = None,
    collections: Sequence[str] | str = (),
    bbox: Sequence[float] | None = None,
    aoi: BaseGeometry | str | Path | None = None,
    datetime: str | None = None,
    max_cloud: float | None = None,
    limit: int | None = None,
    sortby: Sequence[str] | str = (),
    filter: str | None = None,
    page_size: int = 100,
    retries: Retries | None = None,
) -> tuple[list[pystac.Item], Preset | None]:
    by_name = None if "/" in source or source.endswith(".json") else stac_presets.find(source)
    url = by_name.url if by_name else source
    chosen = _resolve_preset(url, preset)
    colls = (collections,) if isinstance(collections, str) else tuple(collections)
    if not colls and chosen:
        colls = (chosen.collection,)
    _check_numbers(max_cloud=max_cloud, limit=limit, page_size=page_size)
    geom = read_aoi(aoi) if aoi is not None else None
    query = Query(
        source=url,
        collections=colls,
        bbox=_bbox(bbox),
        intersects=geom,
        datetime=datetime,
        span=expand_datetime(datetime),
        max_cloud=max_cloud,
        limit=limit,
        sortby=(sortby,) if isinstance(sortby, str) else tuple(sortby),
        filter=filter,
    )
    stac_filter.parse_filter(filter)  # fail early, with the value, on malformed CQL2
    retries = retries or Retries()
    if geom is not None and query.bbox and not geom.intersects(box(*query.bbox)):
        found: list[pystac.Item] = []  # the AOI and the bbox do not overlap: nothing can match
    elif _is_static(url):
        found = _static_items(query, retries)
    else:
        found = _api_items(query, page_size=page_size, retries=retries, preset=chosen)
    if not found:
        raise SearchError(
            f"no scenes match {query}; widen the bbox/aoi or datetime, raise max_cloud, "
            "or check the collection"
        )
    return found, chosen


def _check_numbers(*, max_cloud: float | None, limit: int | None, page_size: int) -> None:
    if max_cloud is not None and not 0 <= max_cloud <= 100:
        raise ConfigError(
            f"max_cloud={max_cloud:g} must be a percentage in 0..100 (--max-cloud, stac.max_cloud); "
            "e.g. 20 keeps scenes at most 20 % cloudy"
        )
    if limit is not None and limit < 1:
        raise ConfigError(f"limit={limit} must be >= 1 (--limit, stac.limit); leave it out for all scenes")
    if page_size < 1:
        raise ConfigError(f"page_size={page_size} must be >= 1; e.g. 100")


def expand_datetime(text: str | None) -> str | None:
    """``text`` as pystac-client sends it: partial dates expanded to full RFC 3339 intervals.

    pystac-client's own parsing (its ``ItemSearch``), so a search means the same here, on a
    static catalog and on any API.

    Raises:
        ConfigError: what pystac-client rejects, or an interval that ends before it starts.

    Example:
        >>> expand_datetime("2017-02")
        '2017-02-01T00:00:00Z/2017-02-28T23:59:59Z'
        >>> expand_datetime("2017-02-16/..")
        '2017-02-16T00:00:00Z/..'
    """
    if text is None or not str(text).strip():
        return None
    value = str(text).strip()
    try:
        expanded = ItemSearch(url="", datetime=value).get_parameters().get("datetime")
    except Exception as exc:  # pystac-client raises bare Exception/ValueError on bad components
        raise ConfigError(
            f"datetime {value!r} is not RFC 3339 ({first_line(exc)}); use an instant, a partial date "
            "(2017, 2017-02, 2017-02-16) or an interval START/END with .. for an open end, "
            "e.g. --datetime 2017-02/2017-03"
        ) from exc
    start, end = stac_filter.interval(str(expanded))
    if start is not None and end is not None and start > end:
        raise ConfigError(f"datetime {value!r} ends before it starts; swap the two ends")
    return str(expanded)


def to_json(found: Sequence[pystac.Item]) -> str:
    """The items as a STAC ItemCollection (``geounet search --json``, pipe it to STAC tools)."""
    collection = pystac.ItemCollection(found)
    return json.dumps(collection.to_dict(transform_hrefs=False), indent=2)


def item(href: str, *, bands: Sequence[str] | None = None, preset: str | Preset | None = None) -> Scene:
    """The scene of one STAC item JSON (local path or URL), e.g. ``geounet predict item.json``.

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
            return stac_filter.matching(
                stac_filter.select(client.get_items(recursive=True), query), query.filter
            )
        kwargs = _search_kwargs(query, client)
        found = client.search(max_items=query.limit, limit=page_size, **kwargs)
        return stac_filter.select(found.items(), query)
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
        "datetime": query.span,
        "sortby": list(query.sortby) or None,
    }
    cloud = query.max_cloud
    has_filter = client.conforms_to(ConformanceClasses.FILTER)
    cloud_json = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, cloud]}
    expr = stac_filter.parse_filter(query.filter)
    if expr is not None:
        if not has_filter:
            raise SearchError(
                f"{query.source} has no CQL2 filter extension; drop --filter {query.filter!r} "
                "(or filter a static catalog, where geounet evaluates it)"
            )
        both = expr if cloud is None else {"op": "and", "args": [expr, cloud_json]}
        kwargs.update(filter=both, filter_lang="cql2-json")  # parsed by cql2 here: no silent relabelling
    elif cloud is not None and has_filter:
        kwargs.update(filter=cloud_json, filter_lang="cql2-json")
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
            items = stac_filter.matching(stac_filter.select(_static_candidates(root), query), query.filter)
    except APIError as exc:
        raise SearchError(
            f"static catalog {source} failed after {retries.total} retries ({first_line(exc)}); "
            "check the URL and that the server is up"
        ) from exc
    except (OSError, ValueError, pystac.STACError) as exc:
        raise SearchError(
            f"{source!r} is not a readable STAC catalog ({first_line(exc)}); check the file"
        ) from exc
    items.sort(key=stac_filter.sort_key(query.sortby))
    return items[: query.limit] if query.limit is not None else items


def _static_candidates(root: pystac.STACObject | pystac.ItemCollection) -> Iterable[pystac.Item]:
    if isinstance(root, pystac.Item):
        return [root]
    if isinstance(root, pystac.Catalog):
        return root.get_items(recursive=True)
    return list(root.items) if isinstance(root, pystac.ItemCollection) else []


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
