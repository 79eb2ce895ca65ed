"""GIS-ready products of a run: vector files, area table, STAC Item, QGIS project, quicklook.

:func:`products` turns a finished class COG (and its confidence COG) into everything a
user opens: ``polygons.gpkg`` (or ``.parquet``/``.fgb``) with a default QGIS style
(:mod:`~geounet.publish.vectors`), ``areas.csv`` (:mod:`~geounet.publish.areas`),
``item.json`` (a STAC Item describing every output: :mod:`~geounet.publish.stac`),
``project.qgs`` (QGIS opens the rasters and polygons together, styled:
:mod:`~geounet.publish.project`), ``quicklook.png`` (:mod:`~geounet.publish.quicklook`)
and ``run.json``. Every file is written under a temporary name and renamed when complete.
The style XML comes from :mod:`geounet.styles`, the one QGIS XML writer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet.atomic import write_text as replace_text
from geounet.model import ClassInfo
from geounet.publish.areas import area_table, write_area_csv
from geounet.publish.formats import VECTOR_FORMATS, vector_format
from geounet.publish.project import qgis_project
from geounet.publish.quicklook import QUICKLOOK_SIZE, preview_rgb, quicklook
from geounet.publish.stac import COG_MEDIA_TYPE, stac_item, validate_item
from geounet.styles import categorized_qml, categorized_sld

if TYPE_CHECKING:
    import numpy as np

    from geounet.publish.vectors import add_gpkg_style, with_attributes, write_vector_chunks, write_vectors

#: The polygon writers of :mod:`~geounet.publish.vectors` (geopandas, pyogrio, pyarrow): loaded
#: on first use, so a run without polygons publishes its rasters without the vector stack.
_VECTORS = ("add_gpkg_style", "with_attributes", "write_vector_chunks", "write_vectors")


def __getattr__(name: str) -> Any:
    if name in _VECTORS:
        from geounet.publish import vectors

        return getattr(vectors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COG_MEDIA_TYPE",
    "QUICKLOOK_SIZE",
    "VECTOR_FORMATS",
    "add_gpkg_style",
    "area_table",
    "categorized_qml",
    "categorized_sld",
    "preview_rgb",
    "products",
    "qgis_project",
    "quicklook",
    "stac_item",
    "validate_item",
    "with_attributes",
    "write_area_csv",
    "write_vector_chunks",
    "write_vectors",
]


def vector_extension(fmt: str) -> str:
    """The file extension of a vector format (``gpkg`` → ``.gpkg``)."""
    return vector_format(fmt)[1]


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
    preview: np.ndarray | None = None,
    manifest: dict[str, Any] | None = None,
    block: int = 1024,
    attributes: Mapping[str, str | int | float] | None = None,
    polygons: bool | Path = True,
    more_rasters: Mapping[str, Path] | None = None,
) -> dict[str, Path]:
    """Write every GIS product of a run into ``out_dir``; returns name → path.

    Names: ``polygons`` (``polygons.<ext>``), ``areas`` (``areas.csv``), ``quicklook``
    (``quicklook.png``), ``project`` (``project.qgs``), ``manifest`` (``run.json``, only when
    ``manifest`` is given) and ``item`` (``item.json``, written last, describing the others).
    ``manifest`` may carry ``id`` and ``datetime`` (ISO 8601) for the STAC Item.
    ``attributes`` are constant columns added to every polygon, for provenance, e.g.
    ``{"scene_id": "S2A_...", "date": "2017-02-16"}``. ``polygons``: True vectorizes the
    class raster here; a path is a polygon layer the raster stage already wrote (kept as it
    is, see :mod:`geounet.blocks`); False writes none (``--outputs`` without polygons).
    ``more_rasters``: the raster stage's other rasters (probabilities, observations), for the Item.
    ``preview``: the quicklook's RGB of ``preview_path``, drawn ahead (:func:`preview_rgb`).
    """
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    if isinstance(polygons, Path):
        paths["polygons"] = polygons
    elif polygons:
        paths["polygons"] = _polygons(
            classes_path, confidence_path, out_dir / f"polygons{vector_extension(vector_format)}",
            classes=classes, fmt=vector_format, block=block, simplify=simplify, min_area=min_area,
            attributes=attributes or {},
        )  # fmt: skip
    table = area_table(classes_path, classes=classes)
    paths["areas"] = write_area_csv(table, out_dir / "areas.csv")
    paths["quicklook"] = quicklook(
        classes_path, out_dir / "quicklook.png", classes=classes, preview_path=preview_path, preview=preview
    )
    rasters = {"classes": Path(classes_path)}
    if confidence_path is not None:
        rasters["confidence"] = Path(confidence_path)
    paths["project"] = qgis_project(
        out_dir / "project.qgs", rasters=rasters, vectors=paths.get("polygons"), classes=classes
    )
    if manifest is not None:
        paths["manifest"] = out_dir / "run.json"
        replace_text(paths["manifest"], json.dumps(manifest, indent=2, default=str) + "\n")
    paths["item"] = _write_item(
        out_dir / "item.json", classes_path, classes=classes, assets={**rasters, **(more_rasters or {}), **paths}, areas=table,
        manifest=manifest or {}, default_id=out_dir.name,
    )  # fmt: skip
    return paths


def _polygons(
    classes_path: Path,
    confidence_path: Path | None,
    path: Path,
    *,
    classes: Sequence[ClassInfo],
    fmt: str,
    block: int,
    simplify: float | None,
    min_area: float,
    attributes: Mapping[str, str | int | float],
) -> Path:
    """The polygon layer vectorized from the class COG (the vector stack loads only here)."""
    from geounet import vectorize
    from geounet.publish.vectors import with_attributes, write_vector_chunks

    frames = vectorize.iter_polygons(classes_path, classes=classes, confidence_path=confidence_path,
                                     block=block, simplify=simplify, min_area=min_area)  # fmt: skip
    return write_vector_chunks(
        (with_attributes(gdf, attributes) for gdf in frames), path, classes=classes, fmt=fmt
    )


def _write_item(
    path: Path,
    classes_path: Path,
    *,
    classes: Sequence[ClassInfo],
    assets: Mapping[str, Path],
    areas: list[dict[str, Any]],
    manifest: Mapping[str, Any],
    default_id: str,
) -> Path:
    """The STAC Item of a run's products (written last: it describes the others), from its manifest."""
    model = manifest.get("model")
    item = stac_item(
        classes_path,
        classes=classes,
        assets=assets,
        areas=areas,
        item_id=str(manifest.get("id") or default_id),
        when=manifest.get("datetime"),
        sources=manifest.get("scenes") or (),
        model=model if isinstance(model, Mapping) else None,
        source=manifest.get("source"),
    )
    replace_text(path, json.dumps(item.to_dict(include_self_link=False), indent=2) + "\n")
    return path
