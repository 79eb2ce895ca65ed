"""In-process STAC query rules over pystac Items: what a static catalog search selects.

The same rules re-check an API's answer: collection, footprint against the bbox/AOI,
datetime overlap (an item's instant, or its ``start_datetime``/``end_datetime`` range), cloud
cover, and sort order. A CQL2 ``filter`` is parsed and evaluated by cql2 (its Rust
evaluator), never by hand, so a static catalog selects what an API with the filter
extension selects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cql2
import pystac
import shapely
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from geounet.errors import ConfigError
from geounet.items import parse_instant


@dataclass(frozen=True, slots=True)
class Query:
    """A search, as given: echoed in errors and logs. ``span`` is ``datetime`` as pystac-client
    expands it (full RFC 3339 ends, ``..`` for open ones), what the rules here compare with."""

    source: str
    collections: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    intersects: BaseGeometry | None = None
    datetime: str | None = None
    max_cloud: float | None = None
    limit: int | None = None
    sortby: tuple[str, ...] = ()
    filter: str | None = None
    span: str | None = None

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


def parse_filter(text: str | None) -> dict[str, Any] | None:
    """CQL2 text as CQL2 JSON (cql2's parser), or None.

    Raises:
        ConfigError: text cql2 cannot parse (names ``--filter`` and shows the value).

    Example:
        >>> parse_filter("eo:cloud_cover < 20")
        {'op': '<', 'args': [{'property': 'eo:cloud_cover'}, 20.0]}
    """
    if text is None:
        return None
    try:
        parsed: dict[str, Any] = cql2.Expr(text).to_json()
    except (Exception, cql2.ParseError) as exc:  # cql2 raises plain Exception on syntax errors
        where = " ".join(str(exc).split())[:160]
        raise ConfigError(
            f'filter {text!r} is not CQL2 text ({where}); write e.g. --filter "eo:cloud_cover < 20"'
        ) from exc
    return parsed


def matching(items: list[pystac.Item], text: str | None) -> list[pystac.Item]:
    """The items that CQL2 ``text`` selects, by cql2's own evaluator (static catalogs)."""
    if text is None:
        return items
    expr = cql2.Expr(text)
    out = []
    for it in items:
        try:
            if expr.matches(it.to_dict(transform_hrefs=False)):
                out.append(it)
        except Exception as exc:  # cql2 raises plain Exception for what it cannot evaluate
            raise ConfigError(
                f"filter {text!r} cannot be evaluated on item {it.id!r} ({_first_line(exc)}); "
                "simplify --filter to comparisons of item properties"
            ) from exc
    return out


def select(items: Iterable[pystac.Item], query: Query) -> list[pystac.Item]:
    """In-process rules (static catalogs) and a re-check of the server's answer (APIs)."""
    start, end = interval(query.span)
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


def sort_key(sortby: Sequence[str]) -> Callable[[pystac.Item], tuple[Any, ...]]:
    """A sort key for STAC ``sortby`` fields (``-`` prefix: descending; missing values last)."""
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


def _footprint(it: pystac.Item) -> BaseGeometry:
    if it.geometry:
        return shape(it.geometry)
    return box(*it.bbox) if it.bbox else shapely.Point()


def interval(text: str | None) -> tuple[datetime | None, datetime | None]:
    """(start, end) of a datetime as :func:`geounet.search.expand_datetime` gives it (``..``: None)."""
    if not text:
        return (None, None)
    parts = text.split("/") if "/" in text else [text, text]
    start, end = (parse_instant(p) for p in parts)
    return (start, end)


def _item_interval(it: pystac.Item) -> tuple[datetime | None, datetime | None]:
    if it.datetime is not None:
        when = it.datetime if it.datetime.tzinfo else it.datetime.replace(tzinfo=UTC)
        return (when, when)
    props = it.properties
    return (parse_instant(props.get("start_datetime")), parse_instant(props.get("end_datetime")))


def _short_wkt(geom: BaseGeometry) -> str:
    text = geom.wkt
    return text if len(text) <= 80 else f"{geom.geom_type}(bounds={tuple(round(v, 5) for v in geom.bounds)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
