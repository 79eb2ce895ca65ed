"""STAC items → :class:`Scene` values: bands by name, scaling, masks, processing baseline.

A :class:`Scene` holds what the reader needs: id, datetime, cloud cover, footprint
(lon/lat), projection, one :class:`Band` per model band (asset href, band index in the
asset, scale/offset/nodata from ``raster:bands``) in the model's band order, and the
item's per-pixel quality assets (:data:`MASK_KINDS`: Sentinel-2 ``SCL``, Landsat
``QA_PIXEL``, an Fmask or cloud-mask band, a cloud-probability band) for the compositor.
Bands are matched by asset key, ``eo:bands`` name or common name, then Sentinel-2 aliases
(``B08`` = ``nir``), with a preset's asset-key map first (see :mod:`geounet.stac_presets`).

The Sentinel-2 processing baseline (``s2:processing_baseline``, or the baseline in the
product id) and Earth Search's ``earthsearch:boa_offset_applied`` travel with the scene,
so :mod:`geounet.harmonize` can put 2022+ scenes on the convention of a bundle's training data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pystac
from affine import Affine
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from geounet import stac_presets
from geounet.errors import ConfigError, InputError
from geounet.masks import MaskRule
from geounet.stac_presets import Preset

#: Asset roles that are not pixel data of the scene.
_NON_DATA_ROLES = frozenset({"thumbnail", "overview", "metadata", "visual"})

#: Quality-asset kinds the compositor understands, and the asset keys (lower case) that carry them.
MASK_KINDS: dict[str, tuple[str, ...]] = {
    "scl": ("scl", "scl_20m", "scene_classification"),
    "qa_pixel": ("qa_pixel", "qa"),
    "fmask": ("fmask",),
    "cloud_mask": ("clm", "cloud_mask", "cloud-mask"),
    "cloud_probability": ("cloud_probability", "cloud-probability", "clp", "cld", "msk_cldprb", "cld_20m"),
}
_KIND_OF = {key: kind for kind, keys in MASK_KINDS.items() for key in keys}
#: The baseline inside a Sentinel-2 product id, e.g. ``S2B_MSIL2A_20230612T101559_N0509_R065_...``.
_BASELINE_IN_ID = re.compile(r"_N(\d{2})(\d{2})_")


@dataclass(frozen=True, slots=True)
class Band:
    """Where one band lives: asset href, 1-based band index in that file, and its scaling.

    ``physical = dn * scale + offset`` (STAC ``raster:bands``); ``nodata`` marks fill pixels;
    ``unit`` is the ``raster:bands`` unit (``%`` for a cloud probability in percent).
    """

    name: str
    href: str
    index: int = 1
    asset: str = ""
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Scene:
    """One STAC item, reduced to what reading it needs. ``footprint`` is in lon/lat (EPSG:4326).

    ``datetime`` is the item's ``datetime``, or its ``start_datetime`` when it has a range.

    ``crs``/``transform``/``shape`` are the item's projection (``proj:*``) where it gives one
    (``None`` otherwise); the reader takes the real grid from each asset file.

    ``masks`` are the item's quality assets (a :class:`Band` named by its kind, see
    :data:`MASK_KINDS`). ``processing_baseline`` is Sentinel-2's (``"04.00"``), ``offset_applied``
    Earth Search's flag that the 2022 DN offset is already removed from the files. ``scaled``
    says the reader hands ``dn * scale + offset`` to the model (set by :mod:`geounet.harmonize`,
    which records the convention it converted to in ``harmonized``). ``href`` is the item's own
    URL/path where known (``derived_from`` links of the outputs). ``signer`` names the
    :mod:`geounet.signing` signer that re-signs the hrefs when storage refuses them.
    ``mask_rule`` (set from a run config's ``mosaic.masks``) overrides the reader's default
    rule for the quality values of ``masks``.
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
    masks: tuple[Band, ...] = ()
    processing_baseline: str | None = None
    offset_applied: bool | None = None
    scaled: bool = False
    harmonized: str | None = None
    href: str | None = None
    signer: str | None = None
    mask_rule: MaskRule | None = None

    @property
    def hrefs(self) -> dict[str, str]:
        """Band name → asset href, in band order."""
        return {b.name: b.href for b in self.bands}

    @property
    def band_names(self) -> tuple[str, ...]:
        """The bands, in order."""
        return tuple(b.name for b in self.bands)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (run manifests)."""

        def bands(values: Sequence[Band]) -> dict[str, Any]:
            return {
                b.name: {"href": b.href, "index": b.index, "scale": b.scale, "offset": b.offset}
                for b in values
            }

        return {
            "id": self.id,
            "collection": self.collection,
            "datetime": self.datetime.isoformat() if self.datetime else None,
            "cloud_cover": self.cloud_cover,
            "crs": self.crs,
            "shape": list(self.shape) if self.shape else None,
            "bbox": list(self.footprint.bounds),
            "bands": bands(self.bands),
            "masks": bands(self.masks),
            "processing_baseline": self.processing_baseline,
            "harmonized": self.harmonized,
            "href": self.href,
        }


def from_item(
    item: pystac.Item | Mapping[str, Any],
    *,
    bands: Sequence[str] | None = None,
    preset: str | Preset | None = None,
) -> Scene:
    """A :class:`Scene` from a STAC item (a pystac Item or its JSON dict).

    With ``bands`` the scene's bands follow that order; without, every single-band data
    asset (or each band of multi-band ones) in the item's order. Quality assets
    (:data:`MASK_KINDS`) become ``masks``, and bands only when ``bands`` names them.

    Raises:
        InputError: when a band cannot be found; the message lists the item's bands.

    Example:
        >>> scene = from_item({
        ...     "type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [0, 0, 1, 1],
        ...     "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
        ...     "properties": {"datetime": "2020-01-01T00:00:00Z", "eo:cloud_cover": 3.5, "proj:epsg": 32633,
        ...                    "s2:processing_baseline": "04.00"},
        ...     "links": [],
        ...     "assets": {"B04": {"href": "https://h/B04.tif", "roles": ["data"],
        ...                        "eo:bands": [{"name": "B04", "common_name": "red"}],
        ...                        "raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}]},
        ...                "SCL": {"href": "https://h/SCL.tif", "roles": ["data"]}}},
        ...     bands=["red"])
        >>> scene.cloud_cover, scene.crs, scene.bands[0].href, scene.bands[0].offset
        (3.5, 'EPSG:32633', 'https://h/B04.tif', -0.1)
        >>> [m.name for m in scene.masks], scene.processing_baseline
        (['scl'], '04.00')
    """
    data = item.to_dict(transform_hrefs=False) if isinstance(item, pystac.Item) else dict(item)
    chosen = stac_presets.preset(preset) if isinstance(preset, str) else preset
    props = data.get("properties") or {}
    every = {k: _absolute(v, item) for k, v in (data.get("assets") or {}).items()}
    assets = {k: a for k, a in every.items() if k.lower() not in _KIND_OF}
    item_id = str(data.get("id", "?"))
    band_list = _bands(bands, every, assets, chosen, item_id)
    proj = _projection(props, assets, band_list)
    cloud = props.get(chosen.cloud_property if chosen else "eo:cloud_cover")
    applied = props.get("earthsearch:boa_offset_applied")
    return Scene(
        id=str(data["id"]),
        datetime=parse_instant(props.get("datetime") or props.get("start_datetime")),
        cloud_cover=float(cloud) if cloud is not None else None,
        footprint=shape(data["geometry"]) if data.get("geometry") else box(*data["bbox"]),
        bands=band_list,
        crs=proj[0],
        transform=proj[1],
        shape=proj[2],
        collection=data.get("collection"),
        masks=_masks(every, band_list),
        processing_baseline=_baseline(props, item_id),
        offset_applied=bool(applied) if isinstance(applied, bool) else None,
        href=_self_href(item, data),
        signer=chosen.sign if chosen else None,
    )


def _bands(
    names: Sequence[str] | None,
    every: Mapping[str, Mapping[str, Any]],
    data_assets: Mapping[str, Mapping[str, Any]],
    preset: Preset | None,
    item_id: str,
) -> tuple[Band, ...]:
    """The bands ``names`` asks for (from every asset), else every data asset's bands in order.

    A quality asset named as a band (e.g. ``fmask`` for per-parcel screening) is read as one.
    """
    if names:
        return tuple(_find_band(name, every, preset, item_id) for name in names)
    return _all_bands(data_assets)


def _masks(assets: Mapping[str, Mapping[str, Any]], bands: Sequence[Band]) -> tuple[Band, ...]:
    """The quality assets, except those read as bands (their caller screens with them itself)."""
    read_as_bands = {b.asset for b in bands}
    return tuple(
        _band(_KIND_OF[k.lower()], k, 1, a)
        for k, a in assets.items()
        if k.lower() in _KIND_OF and k not in read_as_bands
    )


def parse_instant(value: Any) -> datetime | None:
    """An RFC 3339 instant as an aware datetime (UTC when it has no offset); None for ``..``/empty.

    Example:
        >>> parse_instant("2017-02-16T10:21:01Z").isoformat()
        '2017-02-16T10:21:01+00:00'
    """
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


def _baseline(props: Mapping[str, Any], item_id: str) -> str | None:
    """Sentinel-2 processing baseline ``NN.NN`` from the properties or the product id."""
    for key in ("s2:processing_baseline", "sentinel:processing_baseline"):
        value = props.get(key)
        if value:
            text = str(value).strip()
            return f"{float(text):05.2f}" if re.fullmatch(r"\d+(\.\d+)?", text) else text
    for key in ("s2:product_uri", "s2:granule_id"):
        found = _BASELINE_IN_ID.search(str(props.get(key) or ""))
        if found:
            return f"{found.group(1)}.{found.group(2)}"
    found = _BASELINE_IN_ID.search(item_id)
    return f"{found.group(1)}.{found.group(2)}" if found else None


def _self_href(item: pystac.Item | Mapping[str, Any], data: Mapping[str, Any]) -> str | None:
    if isinstance(item, pystac.Item):
        return item.get_self_href()
    for link in data.get("links") or []:
        if isinstance(link, Mapping) and link.get("rel") == "self" and link.get("href"):
            return str(link["href"])
    return None


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
    unit = info.get("unit", info.get("raster:unit"))
    return Band(
        name=name,
        href=str(asset["href"]),
        index=index,
        asset=key,
        scale=float(info.get("scale", info.get("raster:scale", 1.0))),
        offset=float(info.get("offset", info.get("raster:offset", 0.0))),
        nodata=float(nodata) if isinstance(nodata, (int, float)) and not isinstance(nodata, bool) else None,
        unit=str(unit) if unit else None,
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
