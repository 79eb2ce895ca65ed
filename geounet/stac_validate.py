"""Offline validation of STAC objects against the core schema and given extension schemas.

pystac ships the core STAC JSON schemas, not the extension schemas: its validator fetches
those from their URI. Offline (CI, air-gapped sites) the caller hands them in, keyed by
URI, and this module validates with ``jsonschema`` and a ``referencing`` registry that
holds exactly those schemas: a ``$ref`` to any other URI is an error naming it, never a
network request. Every extension the object declares must have a schema, so "valid"
means valid against all of them (nothing silently skipped).

Where the schemas come from is the caller's business; the tests read the published
schemas that pystac's extension packages ship (``tests/fixtures_stac_schemas.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from geounet.errors import ConfigError, InputError, first_line


def validate(
    data: Mapping[str, Any],
    schemas: Mapping[str, Mapping[str, Any]],
    *,
    extensions: Sequence[str] | None = None,
) -> list[str]:
    """Validate ``data`` (a STAC Item/Collection dict) offline; return the schema URIs used.

    The core schema is pystac's; each URI in ``extensions`` (default: all of
    ``stac_extensions``) is validated against ``schemas[uri]``, whose ``$ref``s resolve
    only within ``schemas`` and pystac's own core/GeoJSON schemas. Raises
    :class:`~geounet.errors.InputError` naming the schema and the first failing field,
    :class:`~geounet.errors.ConfigError` when a declared extension or a referenced schema
    is not among ``schemas`` or ``jsonschema`` is missing.

    Example (an extension declared without its schema):
        >>> validate({"type": "Feature", "stac_extensions": ["https://example.com/x.json"]}, {})
        Traceback (most recent call last):
        ...
        geounet.errors.ConfigError: no offline schema for STAC extension 'https://example.com/x.json' of None: pass it in schemas= (keyed by that URI)
    """
    extensions = list(data.get("stac_extensions") or []) if extensions is None else list(extensions)
    missing = [uri for uri in extensions if uri not in schemas]
    if missing:
        raise ConfigError(
            f"no offline schema for STAC extension {missing[0]!r} of {data.get('id')!r}: pass it in schemas= (keyed by that URI)"
        )
    try:
        import jsonschema
        import referencing.exceptions
    except ImportError as exc:
        raise ConfigError("validating STAC objects needs jsonschema: pip install 'geounet[mlm]'") from exc
    used = _core(data)
    registry = _registry(schemas)
    for uri in extensions:
        validator = jsonschema.Draft7Validator(dict(schemas[uri]), registry=registry)
        try:
            error = jsonschema.exceptions.best_match(validator.iter_errors(dict(data)))
        except referencing.exceptions.Unresolvable as exc:
            ref = getattr(exc, "ref", str(exc))
            raise ConfigError(
                f"validating {data.get('id')!r} against {uri}: its $ref {ref!r} is not among the offline schemas; add that schema to schemas="
            ) from exc
        if error is not None:
            error = _deepest(error)
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            raise InputError(f"{data.get('id')!r} breaks {uri} at {where}: {error.message[:300]}")
        used.append(uri)
    return used


def _core(data: Mapping[str, Any]) -> list[str]:
    """Validate against the core STAC schema pystac ships (never fetched); the URIs used."""
    import pystac.validation

    try:
        return list(pystac.validation.validate_dict(dict(data), extensions=[]))
    except pystac.errors.STACValidationError as exc:
        kind = {"Feature": "Item", "Collection": "Collection", "Catalog": "Catalog"}.get(
            str(data.get("type")), "object"
        )
        raise InputError(f"{data.get('id')!r} is not a valid STAC {kind}: {first_line(exc)}") from exc


def _registry(schemas: Mapping[str, Mapping[str, Any]]) -> Any:
    """A ``referencing`` registry of pystac's core/GeoJSON schemas and ``schemas`` that never fetches."""
    import referencing
    from pystac.validation.local_validator import get_local_schema_cache

    def refuse(uri: str) -> referencing.Resource[Any]:
        raise LookupError(f"offline: {uri} is not fetched")  # referencing reports it as Unresolvable

    known = {**get_local_schema_cache(), **schemas}
    return referencing.Registry(retrieve=refuse).with_resources(  # type: ignore[call-arg]
        (uri, referencing.Resource.from_contents(dict(schema))) for uri, schema in known.items()
    )


def _deepest(error: Any) -> Any:
    """The innermost cause of a ``oneOf``/``anyOf`` failure: the error deepest in the document.

    Extension schemas are a ``oneOf`` over Item/Catalog/Collection, so the top-level error
    only says "not valid under any"; the deepest sub-error names the broken field.
    """
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error
