"""Load geounet outputs in real QGIS (python3-qgis), report what QGIS sees, render maps.

Run with Debian's ``/usr/bin/python3`` (not the project's venv) and
``QT_QPA_PLATFORM=offscreen``. Reads a JSON request on stdin::

    {"rasters": ["classes.tif", ...], "vectors": ["polygons.gpkg"], "project": "project.qgs",
     "render": [{"layer": "polygons.gpkg", "extent_of": "classes.tif", "png": "out.png",
                 "width": 1536, "height": 768}]}

and prints one JSON line: per layer its validity, CRS, size/feature count and renderer
(palette entries or categories with colors and labels), per project the layers it
opened. Layers are deleted before ``exitQgis()``, which otherwise crashes at exit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def raster_report(layer: QgsRasterLayer) -> dict[str, Any]:
    renderer = layer.renderer()
    out: dict[str, Any] = {
        "valid": layer.isValid(),
        "crs": layer.crs().authid(),
        "width": layer.width(),
        "height": layer.height(),
        "renderer": renderer.type() if renderer else None,
    }
    if renderer is not None and renderer.type() == "paletted":
        out["palette"] = [
            {"value": int(c.value), "color": c.color.name(), "label": c.label} for c in renderer.classes()
        ]
    return out


def vector_report(layer: QgsVectorLayer) -> dict[str, Any]:
    renderer = layer.renderer()
    out: dict[str, Any] = {
        "valid": layer.isValid(),
        "crs": layer.crs().authid(),
        "features": layer.featureCount(),
        "fields": [f.name() for f in layer.fields()],
        "renderer": renderer.type() if renderer else None,
    }
    if renderer is not None and renderer.type() == "categorizedSymbol":
        out["attribute"] = renderer.classAttribute()
        out["categories"] = [
            {"value": str(c.value()), "label": c.label(), "color": c.symbol().color().name()}
            for c in renderer.categories()
        ]
    return out


def render(layer: Any, png: str, width: int, height: int, extent_of: Any) -> None:
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(extent_of.extent())
    settings.setOutputSize(QSize(width, height))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    if not job.renderedImage().save(png, "PNG"):
        raise RuntimeError(f"cannot save {png}")


def main() -> None:
    request = json.loads(sys.stdin.read())
    app = QgsApplication([], False)
    app.setPrefixPath("/usr", True)
    app.initQgis()
    report: dict[str, Any] = {"qgis": Qgis.QGIS_VERSION}
    layers: dict[str, Any] = {}
    try:
        for path in request.get("rasters", []):
            layers[path] = QgsRasterLayer(path, Path(path).stem, "gdal")
            report[path] = raster_report(layers[path])
        for path in request.get("vectors", []):
            layers[path] = QgsVectorLayer(path, Path(path).stem, "ogr")
            report[path] = vector_report(layers[path])
        for job in request.get("render", []):
            # No layer reference may outlive exitQgis() (a local here would): QGIS crashes.
            render(
                layers[job["layer"]],
                job["png"],
                job["width"],
                job["height"],
                layers[job.get("extent_of", job["layer"])],
            )
        if "project" in request:
            project = QgsProject.instance()
            ok = project.read(request["project"])
            report["project"] = {
                "read": bool(ok),
                "crs": project.crs().authid(),
                "layers": {
                    layer.name(): (
                        raster_report(layer) if isinstance(layer, QgsRasterLayer) else vector_report(layer)
                    )
                    for layer in project.mapLayers().values()
                },
                "tree": [node.name() for node in project.layerTreeRoot().findLayers()],
            }
            project.clear()
    finally:
        for key in list(layers):
            del layers[key]
        layers.clear()
        app.exitQgis()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
