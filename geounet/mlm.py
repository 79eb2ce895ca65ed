"""A model bundle as a STAC Item with the Machine Learning Model (MLM) extension.

``geounet model export-stac BUNDLE`` writes it beside the bundle, so a catalog can list the
model and a STAC tool can tell what it expects: input bands and order, the value scaling
(MLM ``z-score`` per band from the bundle's normalization), the harmonization convention of
its training data (``geounet:input_convention``, see :mod:`geounet.harmonize`), the output
classes (classification extension fields), architecture, hyperparameters and the weights
file (file extension: size and multihash sha256 checksum).

The MLM properties are validated by ``stac-model``'s models (the MLM extension's own
package; the ``mlm`` extra), the Item by the core STAC schema pystac ships and, given the
published file extension schema, by that too (:mod:`geounet.stac_validate`). No schema
is copied into geounet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.mlm import MLMExtension

from geounet import harmonize, stac_validate
from geounet.errors import ConfigError, InputError
from geounet.model import Bundle, to_metadata

#: The file extension's schema (size and checksum of the weights asset).
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
#: Media type of a safetensors file (as the MLM best practices name it).
SAFETENSORS = "application/octet-stream; framework=pytorch; profile=safetensors"
_WORLD = {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]}


def item(bundle: Bundle, path: Path, *, bbox: list[float] | None = None) -> pystac.Item:
    """The MLM Item of ``bundle`` (stored at ``path``): properties, weights asset, extensions.

    ``bbox`` (lon/lat) is the area the model was trained for; default the provenance's
    ``bbox``, else the whole world. The datetime is the provenance's ``created`` time.
    """
    meta = to_metadata(bundle)
    area = bbox or bundle.provenance.get("bbox") or [-180.0, -90.0, 180.0, 90.0]
    geometry = _WORLD if area == [-180.0, -90.0, 180.0, 90.0] else _box(area)
    created = _when(bundle.provenance.get("created"))
    props: dict[str, Any] = {k: v for k, v in meta.items() if k.startswith("mlm:")}
    props["mlm:tasks"] = sorted(set(props["mlm:tasks"]))
    props["geounet:input_convention"] = _convention(bundle.provenance)
    props["geounet:tile"], props["geounet:halo"] = bundle.tile, bundle.halo
    props["geounet:receptive_field"] = bundle.receptive_field
    if "resampling" in bundle.provenance:
        props["geounet:resampling"] = bundle.provenance["resampling"]
    out = pystac.Item(
        id=f"{bundle.name}-{meta['geounet:weights_sha256'][:12]}",
        geometry=geometry,
        bbox=[float(v) for v in area],
        datetime=created,
        properties=props,
    )
    data = path.read_bytes()
    asset = pystac.Asset(
        href=f"./{path.name}",
        media_type=SAFETENSORS,
        roles=["mlm:model", "mlm:weights", "data"],
        title=f"{meta['mlm:architecture']} weights and metadata (safetensors, no pickle)",
        extra_fields={
            "mlm:artifact_type": "safetensors",
            "file:size": len(data),
            "file:checksum": "1220" + hashlib.sha256(data).hexdigest(),  # multihash: sha2-256, 32 bytes
        },
    )
    out.add_asset("model", asset)
    out.stac_extensions = sorted({MLMExtension.get_schema_uri(), FILE_SCHEMA})
    return out


def validate(
    obj: pystac.Item | Mapping[str, Any], *, schemas: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """Validate an MLM Item: core schema (pystac's), MLM properties (``stac-model``'s models).

    With ``schemas`` (URI → published extension schema) the file extension is validated
    offline too (:func:`geounet.stac_validate.validate`). The MLM JSON schema itself is
    left to ``stac-model``: MLM v1.4.0's schema ``$ref``s the classification v1.1.0
    schema, which no package ships, so it cannot be resolved offline. Returns what was
    validated against; raises :class:`~geounet.errors.InputError` naming the first problem.
    """
    data = obj.to_dict(transform_hrefs=False) if isinstance(obj, pystac.Item) else dict(obj)
    used = stac_validate.validate(data, schemas or {}, extensions=[FILE_SCHEMA] if schemas else [])
    try:
        from stac_model.schema import MLModelProperties
    except ImportError as exc:
        raise ConfigError("validating MLM Items needs stac-model: pip install 'geounet[mlm]'") from exc
    try:
        MLModelProperties.model_validate(data["properties"])
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise InputError(f"MLM item {data.get('id')!r} breaks the MLM extension: {_first_line(exc)}") from exc
    return [*used, f"stac-model MLModelProperties (MLM {MLMExtension.get_schema_uri()})"]


def write(bundle: Bundle, path: Path, *, out: Path | None = None) -> Path:
    """Write and validate the MLM Item of the bundle at ``path``; default ``<bundle>.json`` beside it."""
    target = out or path.with_suffix(".json")
    obj = item(bundle, path)
    validate(obj)
    if target.parent.resolve() != path.parent.resolve():
        obj.assets["model"].href = str(path.resolve())
    target.write_text(json.dumps(obj.to_dict(include_self_link=False, transform_hrefs=False), indent=2))
    return target


def _convention(provenance: Mapping[str, Any]) -> dict[str, Any]:
    convention = harmonize.Convention.from_provenance(provenance)
    if convention.value_scaling is None:
        return {"name": convention.name, "description": "raw DN of Sentinel-2 products before baseline 04.00"}
    return {"name": convention.name, "value_scaling": [dict(t) for t in convention.value_scaling]}


def _box(area: list[float]) -> dict[str, Any]:
    w, s, e, n = (float(v) for v in area)
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
