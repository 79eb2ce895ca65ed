"""The outputs of a run, opened in real QGIS (Debian's python3-qgis, offscreen, in a subprocess).

The run is the land-use stand-in of ``tests/fixtures_qgis.py``: the COGs written tile by
tile, then :func:`geounet.publish.products`. ``tests/qgis_probe.py`` loads every output
the way a user's QGIS does (default styles included), renders maps to PNG and reports.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from fixtures_model import assert_real_output, read_bands, save_calibrated
from fixtures_qgis import CRACK
from PIL import Image
from scipy import ndimage

from geounet.model import ClassInfo, ModelSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seen(run_outputs: dict[str, Path], photo, qgis, tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("qgis-render")
    classes, gpkg = str(run_outputs["classes"]), str(run_outputs["polygons"])
    photo_classes, photo_gpkg = str(photo[1]["classes"]), str(photo[1]["polygons"])
    with rasterio.open(classes) as src:
        width, height = src.width, src.height
    report = qgis(
        {
            "rasters": [classes, str(run_outputs["confidence"]), photo_classes],
            "vectors": [gpkg, photo_gpkg],
            "project": str(run_outputs["project"]),
            "render": [
                {
                    "layer": photo_gpkg,
                    "extent_of": photo_classes,
                    "png": str(out / "photo.png"),
                    "width": 512,
                    "height": 512,
                },
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
    report["png"] = {"raster": out / "raster.png", "vector": out / "vector.png", "photo": out / "photo.png"}
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


def test_photo_polygons_lie_on_the_photo_in_qgis(seen, photo) -> None:
    """No georeferencing: QGIS draws the image at y = -row; the polygons must land on it."""
    array, paths = photo
    assert seen[str(paths["classes"])]["valid"] and seen[str(paths["polygons"])]["valid"]
    assert seen[str(paths["polygons"])]["crs"] == ""
    image = np.asarray(Image.open(seen["png"]["photo"]).convert("RGB"))
    for c in CRACK:
        inside = ndimage.binary_erosion(array == c.id, iterations=1)
        assert inside.any()
        assert (image[inside] == np.array(c.rgb)).all(axis=1).mean() > 0.99, c.name


PREDICTED_CLASSES = (
    ClassInfo(0, "water", "#2166ac"),
    ClassInfo(1, "field", "#f5dc8c"),
    ClassInfo(2, "forest", "#1b7837"),
)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, data_dir: Path) -> Path:
    """A seeded 3-class U-Net with its head calibrated on the real Landsat RGB scene (every class
    occurs, so each one's rendered color is checked), for a real ``geounet predict`` run."""
    root = tmp_path_factory.mktemp("predict")
    save_calibrated(
        root / "m.safetensors",
        read_bands(data_dir / "landsat7-rgb" / "RGB.byte.tif"),
        bands=("red", "green", "blue"),
        classes=PREDICTED_CLASSES,
        spec=ModelSpec(in_channels=3, n_classes=3, depth=2, width=8),
    )
    return root


def test_a_real_predict_run_opens_in_qgis(predicted: Path, data_dir: Path, qgis) -> None:
    out = predicted / "out"
    src = data_dir / "landsat7-rgb" / "RGB.byte.tif"
    run = [sys.executable, "-m", "geounet", "predict", str(src), "--model", str(predicted / "m.safetensors")]
    proc = subprocess.run([*run, "--out", str(out)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    classes, gpkg = str(out / "classes.tif"), str(out / "polygons.gpkg")
    with rasterio.open(classes) as ds:
        array, crs = ds.read(1), ds.crs.to_string()
    png = str(predicted / "map.png")
    report = qgis(
        {
            "rasters": [classes, str(out / "confidence.tif")],
            "vectors": [gpkg],
            "project": str(out / "project.qgs"),
            "render": [{"layer": classes, "png": png, "width": array.shape[1], "height": array.shape[0]}],
        }
    )
    expected = list(PREDICTED_CLASSES)
    assert_real_output(array, len(expected))
    assert report[classes]["valid"] and report[classes]["crs"] == crs == "EPSG:32618"
    assert report[classes]["palette"] == palette_of(tuple(expected))
    layer = report[gpkg]
    assert layer["valid"] and layer["crs"] == crs
    assert layer["features"] == len(gpd.read_file(gpkg, layer="polygons"))
    assert layer["renderer"] == "categorizedSymbol" and layer["attribute"] == "class_id"
    assert [c["color"] for c in layer["categories"]] == [c.color for c in expected]
    assert report["project"]["read"] and all(v["valid"] for v in report["project"]["layers"].values())
    image = np.asarray(Image.open(png).convert("RGB"))
    for c in expected:
        inside = ndimage.binary_erosion(array == c.id, iterations=1)
        assert inside.sum() > 100, c.name
        assert (image[inside] == np.array(c.rgb)).all(axis=1).mean() > 0.99, c.name
    border = ndimage.binary_erosion(array == 255, iterations=2)
    assert border.any() and (image[border] == 255).all(axis=1).mean() > 0.99  # nodata border
