"""``project.qgs``: a QGIS project opening the polygons over the class and confidence rasters, styled."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from geounet.atomic import write_text as replace_text
from geounet.model import ClassInfo
from geounet.publish.rasters import grid_of
from geounet.styles import QGIS_VERSION, categorized_renderer, document, srs_element


def qgis_project(
    path: Path,
    *,
    rasters: Mapping[str, Path],
    vectors: Path | None,
    classes: Sequence[ClassInfo],
    title: str = "geounet run",
) -> Path:
    """A QGIS project (.qgs) opening the vectors (categorized) over the rasters, styled.

    Data sources are stored relative to the project, so the folder can be moved or
    shared as a whole. The class raster uses the paletted style of its ``.qml`` sidecar
    and any other raster (confidence) its gradient sidecar; both are embedded.
    """
    path = Path(path)
    grid = grid_of(next(iter(rasters.values())))
    root = ET.Element("qgis", projectname=title, version=QGIS_VERSION)
    ET.SubElement(root, "title").text = title
    if grid.crs is not None:
        ET.SubElement(root, "projectCrs").append(srs_element(grid.crs))
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    layers = ET.SubElement(root, "projectlayers")
    order = ET.SubElement(root, "layerorder")
    entries = _layers(rasters=rasters, vectors=vectors, classes=classes, crs=grid.crs)
    for i, (layer_id, name, source, provider, layer) in enumerate(entries):
        visible = "Qt::Checked" if i < 2 else "Qt::Unchecked"
        ET.SubElement(
            tree,
            "layer-tree-layer",
            id=layer_id,
            name=name,
            source=source,
            providerKey=provider,
            checked=visible,
            expanded="1",
        )
        layers.append(layer)
        ET.SubElement(order, "layer", id=layer_id)
    props = ET.SubElement(root, "properties")
    paths_el = ET.SubElement(props, "Paths")
    ET.SubElement(paths_el, "Absolute", type="bool").text = "false"
    if grid.crs is not None:  # QGIS reads <projectCrs> only with this flag set
        refsys = ET.SubElement(props, "SpatialRefSys")
        ET.SubElement(refsys, "ProjectionsEnabled", type="int").text = "1"
    replace_text(path, document(root))
    return path


def _layers(
    *, rasters: Mapping[str, Path], vectors: Path | None, classes: Sequence[ClassInfo], crs: str | None
) -> list[tuple[str, str, str, str, ET.Element]]:
    """(layer id, name, source, provider, <maplayer>) of the vectors (first: drawn on top) and the rasters."""
    entries: list[tuple[str, str, str, str, ET.Element]] = []
    if vectors is not None:
        source = f"./{vectors.name}|layername={vectors.stem}"
        layer = _maplayer("vector", f"{vectors.stem}_layer", vectors.stem, source, "ogr", crs)
        layer.set("geometry", "Polygon")
        layer.set("wkbType", "Polygon")
        layer.append(categorized_renderer(classes, "class_id"))
        entries.append((f"{vectors.stem}_layer", vectors.stem, source, "ogr", layer))
    for name, raster in rasters.items():
        source = f"./{raster.name}"
        layer = _maplayer("raster", f"{name}_layer", name, source, "gdal", crs)
        style = raster.with_suffix(".qml")
        if style.exists():
            pipe = ET.parse(style).getroot().find("pipe")
            if pipe is not None:
                layer.append(pipe)
        entries.append((f"{name}_layer", name, source, "gdal", layer))
    return entries


def _maplayer(kind: str, layer_id: str, name: str, source: str, provider: str, crs: str | None) -> ET.Element:
    layer = ET.Element("maplayer", type=kind)
    ET.SubElement(layer, "id").text = layer_id
    ET.SubElement(layer, "datasource").text = source
    ET.SubElement(layer, "layername").text = name
    if crs is not None:
        ET.SubElement(layer, "srs").append(srs_element(crs))
    ET.SubElement(layer, "provider", encoding="UTF-8").text = provider
    return layer
