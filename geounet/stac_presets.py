"""Presets for the big public STAC APIs: endpoint, collection and asset-key → band maps.

A model names its bands the Sentinel-2 way (``B02``) or by common name (``blue``);
each archive keys its assets differently: Earth Search v1 by common-ish names
(``blue``, ``rededge1``, ``nir08``), Planetary Computer by band id (``B02``, ``B8A``).
A preset's ``band_keys`` maps every alias to the archive's asset key, so one model
reads from either archive. Planetary Computer assets need a SAS token: its preset asks
for signing with the ``planetary-computer`` package (when installed).

Example:
    >>> preset("earth-search").band_keys["B8A"], preset("planetary-computer").band_keys["nir08"]
    ('nir08', 'B8A')
    >>> preset("pc").collection
    'sentinel-2-l2a'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from geounet.errors import ConfigError

#: Sentinel-2 MSI bands: (band id, STAC common name, Earth Search v1 asset key).
#: B05-B07 share the common name ``rededge``, so only their ids and ES keys are aliases.
S2_BANDS: tuple[tuple[str, str, str], ...] = (
    ("B01", "coastal", "coastal"),
    ("B02", "blue", "blue"),
    ("B03", "green", "green"),
    ("B04", "red", "red"),
    ("B05", "rededge", "rededge1"),
    ("B06", "rededge", "rededge2"),
    ("B07", "rededge", "rededge3"),
    ("B08", "nir", "nir"),
    ("B8A", "nir08", "nir08"),
    ("B09", "nir09", "nir09"),
    ("B10", "cirrus", "cirrus"),
    ("B11", "swir16", "swir16"),
    ("B12", "swir22", "swir22"),
)


def s2_aliases(name: str) -> tuple[str, ...]:
    """Other names of a Sentinel-2 band (id, unambiguous common name, Earth Search key), or ().

    Example:
        >>> s2_aliases("nir08"), s2_aliases("B05"), s2_aliases("ndvi")
        (('B8A',), ('rededge1',), ())
    """
    low = name.lower()
    for band_id, common, es_key in S2_BANDS:
        names = {band_id, es_key} | ({common} if common != "rededge" else set())
        if low in {n.lower() for n in names}:
            return tuple(sorted(n for n in names if n.lower() != low))
    return ()


def _keys(target: Literal["id", "es"]) -> MappingProxyType[str, str]:
    out: dict[str, str] = {}
    for band_id, common, es_key in S2_BANDS:
        key = band_id if target == "id" else es_key
        for alias in (band_id, es_key, common):
            if alias != "rededge":
                out[alias] = key
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True)
class Preset:
    """A public STAC API: root URL, default collection, alias → asset key, asset signing."""

    name: str
    url: str
    collection: str
    band_keys: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    cloud_property: str = "eo:cloud_cover"
    sign: Literal["planetary-computer"] | None = None


PRESETS: MappingProxyType[str, Preset] = MappingProxyType(
    {
        "earth-search": Preset(
            name="earth-search",
            url="https://earth-search.aws.element84.com/v1",
            collection="sentinel-2-l2a",
            band_keys=_keys("es"),
        ),
        "planetary-computer": Preset(
            name="planetary-computer",
            url="https://planetarycomputer.microsoft.com/api/stac/v1",
            collection="sentinel-2-l2a",
            band_keys=_keys("id"),
            sign="planetary-computer",
        ),
    }
)
_ALIASES = {"es": "earth-search", "element84": "earth-search", "pc": "planetary-computer"}


def preset(name: str) -> Preset:
    """The preset called ``name`` (``earth-search``/``es``, ``planetary-computer``/``pc``).

    Raises:
        ConfigError: on an unknown name; the message lists the valid ones.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in PRESETS:
        raise ConfigError(
            f"STAC preset {name!r} is unknown; use one of {', '.join(sorted(PRESETS))} or a STAC API URL"
        )
    return PRESETS[key]


def find(source: str) -> Preset | None:
    """The preset named ``source`` or whose root URL ``source`` is (trailing slash ignored), else None."""
    key = _ALIASES.get(source.lower(), source.lower())
    if key in PRESETS:
        return PRESETS[key]
    url = source.rstrip("/")
    return next((p for p in PRESETS.values() if p.url == url), None)
