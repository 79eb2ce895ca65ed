"""The outputs of a run, opened in real QGIS (Debian's python3-qgis, offscreen, in a subprocess).

The run is the land-use stand-in of ``tests/fixtures_qgis.py``: the COGs written tile by
tile, then :func:`geounet.publish.products`. ``tests/qgis_probe.py`` loads every output
the way a user's QGIS does (default styles included), renders maps to PNG and reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from PIL import Image
from scipy import ndimage

from geounet.model import ClassInfo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seen(run_outputs: dict[str, Path], qgis, tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("qgis-render")
    classes, gpkg = str(run_outputs["classes"]), str(run_outputs["polygons"])
    with rasterio.open(classes) as src:
        width, height = src.width, src.height
    report = qgis(
        {
            "rasters": [classes, str(run_outputs["confidence"])],
            "vectors": [gpkg],
            "project": str(run_outputs["project"]),
            "render": [
                {"layer": classes, "png": str(out / "raster.png"), "width": width, "height": height},
                {
                    "layer": gpkg,
                    "extent_of": classes,
                    "png": str(out / "vector.png"),
                    "width": width,
                    "height": height,
                },
            ],
        }
    )
    report["png"] = {"raster": out / "raster.png", "vector": out / "vector.png"}
    return report


def palette_of(classes: tuple[ClassInfo, ...]) -> list[dict[str, Any]]:
    return [{"value": c.id, "color": c.color, "label": c.name} for c in classes]


def test_rasters_load_valid_with_crs_and_class_palette(seen, run_outputs, landuse) -> None:
    for name in ("classes", "confidence"):
        layer = seen[str(run_outputs[name])]
        assert layer["valid"] and layer["crs"] == landuse.grid.crs
        assert (layer["height"], layer["width"]) == landuse.grid.shape
    classes = seen[str(run_outputs["classes"])]
    assert classes["renderer"] == "paletted"
    assert classes["palette"] == palette_of(landuse.classes)  # only the model's classes, named
    assert seen[str(run_outputs["confidence"])]["renderer"] == "singlebandpseudocolor"


def test_geopackage_loads_with_default_categorized_style(seen, run_outputs, landuse) -> None:
    import geopandas as gpd

    layer = seen[str(run_outputs["polygons"])]
    assert layer["valid"] and layer["crs"] == landuse.grid.crs
    assert layer["features"] == len(gpd.read_file(run_outputs["polygons"], layer="polygons")) > 100
    assert layer["renderer"] == "categorizedSymbol" and layer["attribute"] == "class_id"
    assert layer["categories"] == [
        {"value": str(c.id), "label": c.name, "color": c.color} for c in landuse.classes
    ]


def test_rendered_maps_show_class_colors_where_the_classes_are(seen, landuse) -> None:
    for kind in ("raster", "vector"):
        image = np.asarray(Image.open(seen["png"][kind]).convert("RGB"))
        assert image.shape[:2] == landuse.array.shape
        for c in landuse.classes:
            # One pixel in from the class edges (the vector outlines are drawn there).
            inside = ndimage.binary_erosion(landuse.array == c.id, iterations=1)
            match = (image[inside] == np.array(c.rgb)).all(axis=1).mean()
            assert match > 0.99, (kind, c.name, match)
        nodata = ndimage.binary_erosion(landuse.array == 255, iterations=2)
        assert (image[nodata] == 255).all(axis=1).mean() > 0.99  # white background shows through


def test_project_opens_every_layer_styled(seen, landuse) -> None:
    project = seen["project"]
    assert project["read"] and project["crs"] == landuse.grid.crs
    assert project["tree"] == ["polygons", "classes", "confidence"]
    layers = project["layers"]
    assert all(layer["valid"] for layer in layers.values())
    assert layers["polygons"]["renderer"] == "categorizedSymbol"
    assert layers["classes"]["palette"] == palette_of(landuse.classes)
    assert layers["confidence"]["renderer"] == "singlebandpseudocolor"
