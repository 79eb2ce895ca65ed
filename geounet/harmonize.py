"""Harmonization: scene values on the convention of a bundle's training data (pure, no I/O).

Sentinel-2 products of processing baseline 04.00 and later (from 25 January 2022) store
``DN = 10000 * reflectance + 1000``: a 2023 scene read as raw DN reaches a model trained on
2017 products 1000 DN too bright. STAC says so in two ways: ``raster:bands`` ``offset: -0.1``
(Earth Search, with ``scale: 0.0001``), or only ``s2:processing_baseline`` (Planetary
Computer); Earth Search's ``earthsearch:boa_offset_applied: true`` marks files whose offset
is already removed. :func:`band_offset` turns these into one physical offset per band.

A bundle records what its input values mean in its provenance, key ``input_convention``,
as MLM ``value_scaling`` terms applied to the physical values (``raster:bands`` applied):
``{"value_scaling": [{"type": "scale", "value": 0.0001}]}`` means the model saw
``reflectance / 0.0001``, i.e. the DN of pre-2022 products. A bundle without it saw raw DN
of the scenes it was trained on; those are taken as pre-04.00 DN (:data:`LEGACY_DN`), so a
2022+ scene is shifted back by its offset and a 2017 scene is read exactly as before.

:func:`for_bundle` rewrites each band's ``scale``/``offset`` to the single linear map
``model value = dn * gain + bias`` and marks the scene ``scaled``: the reader applies it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geounet.errors import ConfigError
from geounet.items import Band, Scene

#: The first Sentinel-2 processing baseline whose DN carry the offset.
OFFSET_BASELINE = "04.00"
#: The offset of those products, in DN (ESA: ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET``).
DN_OFFSET = -1000.0
#: Reflectance per DN of Sentinel-2 L1C/L2A products (ESA's ``QUANTIFICATION_VALUE`` 10000).
S2_SCALE = 1e-4
#: The name of the convention of bundles that record none: raw DN of pre-04.00 products.
LEGACY_DN = "dn-pre-04.00"
#: How scenes are brought onto a grid when a bundle records nothing: as training reads bands (bilinear).
DEFAULT_RESAMPLING = "bilinear"
#: MLM value-scaling types that are linear maps (the only ones a per-band gain/bias can hold).
_LINEAR = {"identity", "offset", "scale", "z-score", "min-max"}


@dataclass(frozen=True, slots=True)
class Convention:
    """What a model's input values are: MLM ``value_scaling`` terms applied to physical values.

    As in MLM, one term per band (in the bundle's band order), or one term for every band.

    ``value_scaling`` is ``None`` for :data:`LEGACY_DN` (raw DN, offset removed).
    """

    name: str = LEGACY_DN
    value_scaling: tuple[Mapping[str, Any], ...] | None = None

    @classmethod
    def from_provenance(cls, provenance: Mapping[str, Any]) -> Convention:
        """The convention a bundle's provenance records (``input_convention``), else :data:`LEGACY_DN`.

        Example:
            >>> Convention.from_provenance({"input_convention": {"value_scaling": [{"type": "scale", "value": 1e-4}]}})
            Convention(name='mlm:value_scaling', value_scaling=({'type': 'scale', 'value': 0.0001},))
            >>> Convention.from_provenance({}).name
            'dn-pre-04.00'
        """
        entry = provenance.get("input_convention")
        if not entry:
            return cls()
        if not isinstance(entry, Mapping) or not isinstance(entry.get("value_scaling"), Sequence):
            raise ConfigError(
                f"bundle provenance input_convention={entry!r} must be "
                '{"value_scaling": [MLM value-scaling objects]}; fix it with the bundle\'s training config'
            )
        terms = tuple(dict(t) for t in entry["value_scaling"])
        for term in terms:
            if term.get("type") not in _LINEAR:
                raise ConfigError(
                    f"input_convention value_scaling type {term.get('type')!r} is not linear; "
                    f"use one of {', '.join(sorted(_LINEAR))}"
                )
        return cls(name=str(entry.get("name") or "mlm:value_scaling"), value_scaling=terms)


def offset_applies(scene: Scene) -> bool:
    """True when ``scene`` is a Sentinel-2 product of baseline >= 04.00 whose files still hold the offset.

    Example:
        >>> from shapely.geometry import Point
        >>> s = Scene("x", None, None, Point(0, 0), (), processing_baseline="05.09")
        >>> offset_applies(s), offset_applies(dataclasses.replace(s, offset_applied=True))
        (True, False)
    """
    if scene.processing_baseline is None or scene.offset_applied:
        return False
    try:
        major, minor = (int(p) for p in scene.processing_baseline.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (4, 0)


def band_scale(band: Band, scene: Scene) -> float:
    """The physical scale of ``band``: ``raster:bands`` scale, else 1e-4 for a Sentinel-2 product.

    Planetary Computer's Sentinel-2 items list no scale; their baseline says what they are.
    """
    if band.scale == 1.0 and scene.processing_baseline is not None:
        return S2_SCALE
    return band.scale


def band_offset(band: Band, scene: Scene) -> float:
    """The physical offset of ``band``: ``raster:bands`` offset, else -1000 DN where the baseline says so.

    Example:
        >>> from shapely.geometry import Point
        >>> b = Band("B04", "x.tif", scale=1e-4)
        >>> band_offset(b, Scene("x", None, None, Point(0, 0), (b,), processing_baseline="04.00"))
        -0.1
    """
    if band.offset != 0.0 or not offset_applies(scene):
        return band.offset
    return DN_OFFSET * band_scale(band, scene)


def linear(band: Band, scene: Scene, convention: Convention, index: int) -> tuple[float, float]:
    """``(gain, bias)`` with ``model value = dn * gain + bias`` for ``band`` (``index`` in the bundle).

    Example:
        >>> from shapely.geometry import Point
        >>> b = Band("B04", "x.tif", scale=1e-4, offset=-0.1)
        >>> s = Scene("x", None, None, Point(0, 0), (b,), processing_baseline="04.00")
        >>> linear(b, s, Convention(), 0)
        (1.0, -1000.0)
    """
    scale, offset = band_scale(band, scene), band_offset(band, scene)
    if convention.value_scaling is None:
        return (1.0, offset / scale if scale else offset)
    terms = convention.value_scaling
    if len(terms) > 1 and index >= len(terms):
        raise ConfigError(
            f"input_convention has {len(terms)} value_scaling terms but band {band.name!r} is number "
            f"{index + 1}; give one term for every band, or one for all"
        )
    return _apply(terms[0] if len(terms) == 1 else terms[index], scale, offset)


def _apply(term: Mapping[str, Any], gain: float, bias: float) -> tuple[float, float]:
    kind = term.get("type")
    if kind == "offset":
        return (gain, bias - float(term["value"]))
    if kind == "scale":
        value = float(term["value"])
        return (gain / value, bias / value)
    if kind == "z-score":
        mean, std = float(term["mean"]), float(term["stddev"])
        return (gain / std, (bias - mean) / std)
    if kind == "min-max":
        low, high = float(term["minimum"]), float(term["maximum"])
        return (gain / (high - low), (bias - low) / (high - low))
    return (gain, bias)


def scene(item: Scene, convention: Convention) -> Scene:
    """``item`` with each band's scale/offset replaced by its :func:`linear` map, marked ``scaled``.

    Idempotent: a scene already harmonized is returned as is.
    """
    if item.scaled:
        return item
    bands = []
    for i, band in enumerate(item.bands):
        gain, bias = linear(band, item, convention, i)
        bands.append(dataclasses.replace(band, scale=gain, offset=bias))
    return dataclasses.replace(item, bands=tuple(bands), scaled=True, harmonized=convention.name)


def resampling(provenance: Mapping[str, Any]) -> str:
    """The resampling a bundle's training data was read with (``resampling`` in its provenance).

    One default for every route (``geounet predict --stac``, ``geounet.predict``, ``geounet run``):
    what the model saw in training, else :data:`DEFAULT_RESAMPLING`.

    Example:
        >>> resampling({}), resampling({"resampling": "cubic"})
        ('bilinear', 'cubic')
    """
    return str(provenance.get("resampling") or DEFAULT_RESAMPLING)


def for_bundle(scenes: Sequence[Scene], provenance: Mapping[str, Any]) -> list[Scene]:
    """The scenes on the convention a bundle records (its ``provenance``): what its model saw in training."""
    convention = Convention.from_provenance(provenance)
    return [scene(s, convention) for s in scenes]
