"""The write stage of a job: classes.tif / confidence.tif on the input grid, valid COGs, nodata, block polygons."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fixtures_s2 import CLASSES

from geounet import jobs, model, pipeline, planning
from geounet.model import ModelSpec, networks


@pytest.fixture(scope="module")
def s2_run(s2_rgbn: Path, small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from geounet.cli import main

    out = tmp_path_factory.mktemp("run") / "out"
    main(["predict", str(s2_rgbn), "--model", str(small_bundle), "--out", str(out), "--batch-size", "4"])
    return out


def test_outputs_keep_the_input_grid(s2_run: Path, s2_rgbn: Path) -> None:
    with rasterio.open(s2_rgbn) as src, rasterio.open(s2_run / "classes.tif") as cls:
        assert cls.crs == src.crs
        assert cls.transform == src.transform
        assert (cls.height, cls.width) == (src.height, src.width)
        assert cls.nodata == 255 and cls.dtypes[0] == "uint8"
        values = set(np.unique(cls.read(1)).tolist())
    assert values <= {0, 1, 2}


def test_rasters_are_valid_cogs(s2_run: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    for name in ("classes.tif", "confidence.tif"):
        path = s2_run / name
        ok, errors, _warnings = cog_validate(str(path))
        assert ok, (name, errors)
        proc = subprocess.run(
            [
                "/usr/bin/python3",
                "-m",
                "osgeo_utils.samples.validate_cloud_optimized_geotiff",
                str(path),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_polygon_area_matches_pixel_count(s2_run: Path) -> None:
    import geopandas as gpd

    gdf = gpd.read_file(s2_run / "polygons.gpkg")
    with rasterio.open(s2_run / "classes.tif") as cls:
        arr = cls.read(1)
        pixel_area = abs(cls.transform.a * cls.transform.e)
        assert gdf.crs == cls.crs
    for c in CLASSES:
        raster_area = float((arr == c.id).sum()) * pixel_area
        poly_area = float(gdf.loc[gdf.class_id == c.id].geometry.area.sum())
        if raster_area == 0:
            assert poly_area == 0
            continue
        assert abs(poly_area - raster_area) / raster_area < 0.005, (c.name, poly_area, raster_area)
    assert set(gdf.class_name) <= {c.name for c in CLASSES}


def test_nodata_border_of_landsat_stays_nodata(data_dir: Path, tmp_path: Path) -> None:
    from geounet.cli import main

    src_path = data_dir / "landsat7-rgb" / "RGB.byte.tif"
    bundle = model.save(
        networks.init_bundle(
            bands=("red", "green", "blue"),
            classes=CLASSES[:2],
            spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4),
            normalization=model.Normalization(mean=(80.0,) * 3, std=(40.0,) * 3),
        ),
        tmp_path / "rgb.safetensors",
    )
    out = tmp_path / "out"
    main(["predict", str(src_path), "--model", str(bundle), "--out", str(out)])
    with rasterio.open(src_path) as src, rasterio.open(out / "classes.tif") as cls:
        invalid = src.dataset_mask() == 0
        arr = cls.read(1)
        assert cls.crs == src.crs and cls.transform == src.transform
    assert invalid.any()
    assert (arr[invalid] == 255).all(), "input nodata must be output nodata"
    assert (arr[~invalid] != 255).all(), "every valid input pixel gets a class"


def test_polygons_made_while_predicting_equal_those_from_the_cog(
    s2_rgbn: Path, small_bundle: Path, tmp_path: Path
) -> None:
    """The raster stage's block vectorizing gives the features publishing would make from the COG."""
    import geopandas as gpd

    from geounet import publish

    opts = jobs.PredictOptions(device="cpu", memory=64 << 20)
    job = planning.plan(s2_rgbn, model=small_bundle, out_dir=tmp_path / "a", options=opts)
    outputs = pipeline.run(job, progress=False, resume=False)
    overlapped = gpd.read_file(outputs["polygons"])
    again = publish.products(
        tmp_path / "a", classes_path=outputs["classes"], confidence_path=outputs["confidence"],
        classes=model.load(small_bundle).classes, manifest=None, polygons=True,
    )  # fmt: skip
    from_cog = gpd.read_file(again["polygons"])
    assert len(overlapped) == len(from_cog) > 100

    def ordered(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        c = gdf.geometry.representative_point()
        return (
            gdf.assign(x=c.x.round(3), y=c.y.round(3))
            .sort_values(["class_id", "x", "y"])
            .reset_index(drop=True)
        )

    a, b = ordered(overlapped), ordered(from_cog)
    np.testing.assert_array_equal(a.class_id, b.class_id)
    np.testing.assert_allclose(a.area_m2, b.area_m2)
    np.testing.assert_allclose(a.mean_confidence, b.mean_confidence)
    assert a.geometry.union_all().symmetric_difference(b.geometry.union_all()).area < 1e-6
