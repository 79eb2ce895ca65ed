"""The notebook API: geounet.api.search / predict / vectorize give what the CLI's stages give."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import rioxarray
from fixtures_model import assert_real_output, read_bands, save_calibrated

import geounet
from geounet import api, jobs, planning, predict, rasters
from geounet.model import ClassInfo, ModelSpec

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
CLASSES = (
    ClassInfo(0, "forest", "#1b7837"),
    ClassInfo(1, "grass", "#a6dba0"),
    ClassInfo(2, "built", "#e31a1c"),
)


@pytest.fixture(scope="module")
def scene(data_dir: Path) -> Path:
    return data_dir / "s2-slovenia-eolearn" / "geotiff" / "reference_scene_3_s2l1c_13band.tif"


@pytest.fixture(scope="module")
def bundle(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded U-Net with a head calibrated on the scene: all 3 classes occur, no near-ties."""
    return save_calibrated(
        tmp_path_factory.mktemp("m") / "s2.safetensors",
        read_bands(scene),
        bands=tuple(S2),
        classes=CLASSES,
        spec=ModelSpec(in_channels=13, n_classes=3, depth=2, width=8),
        tile=64,
        halo=8,
        seed=2,
    )


@pytest.fixture(scope="module")
def cli_classes(scene: Path, bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    out = tmp_path_factory.mktemp("cli")
    job = planning.plan(scene, model=bundle, out_dir=out, options=jobs.PredictOptions())
    rasters.write_rasters(job, predict.local_results(job))
    with rasterio.open(out / "classes.tif") as ds:
        classes = ds.read(1)
    assert_real_output(classes, len(CLASSES))
    return classes


def _same_grid(ds: Any, scene: Path) -> None:
    with rasterio.open(scene) as src:
        assert ds.rio.crs == src.crs
        assert ds.rio.transform().almost_equals(src.transform)
        assert ds.classes.shape == src.shape


def test_predict_a_file(scene: Path, bundle: Path, cli_classes: np.ndarray) -> None:
    ds = api.predict(scene, bundle)
    _same_grid(ds, scene)
    assert np.array_equal(ds.classes.values, cli_classes)
    assert ds.classes.dtype == np.uint8 and ds.confidence.max() <= 100
    assert ds.classes.attrs["flag_meanings"] == "forest grass built"


def test_predict_a_dataarray(scene: Path, bundle: Path, cli_classes: np.ndarray) -> None:
    da = rioxarray.open_rasterio(scene)
    ds = api.predict(da, bundle)
    _same_grid(ds, scene)
    assert np.array_equal(ds.classes.values, cli_classes)


def test_predict_a_stac_item(scene: Path, bundle: Path, cli_classes: np.ndarray) -> None:
    from rasterio.warp import transform_bounds
    from shapely.geometry import box, mapping

    with rasterio.open(scene) as src:
        ll = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    item = pystac.Item("slovenia", mapping(box(*ll)), list(ll), datetime(2015, 8, 30, tzinfo=UTC), {})
    item.add_asset("data", pystac.Asset(str(scene), roles=["data"], media_type=pystac.MediaType.GEOTIFF,
                   extra_fields={"eo:bands": [{"name": b} for b in S2]}))  # fmt: skip
    ds = api.predict(item, bundle)
    _same_grid(ds, scene)
    assert np.array_equal(ds.classes.values, cli_classes)


def test_predict_keeps_files_in_out_dir(scene: Path, bundle: Path, tmp_path: Path) -> None:
    ds = api.predict(scene, bundle, out_dir=tmp_path)
    assert (tmp_path / "classes.tif").exists() and (tmp_path / "confidence.tif").exists()
    with rasterio.open(tmp_path / "classes.tif") as src:
        assert np.array_equal(ds.classes.values, src.read(1))


def test_vectorize_a_prediction(scene: Path, bundle: Path) -> None:
    ds = api.predict(scene, bundle)
    gdf = api.vectorize(ds)
    assert gdf.crs == ds.rio.crs and gdf.is_valid.all()
    counts = np.bincount(ds.classes.values.ravel(), minlength=256)
    px = abs(ds.rio.transform().a * ds.rio.transform().e)
    for cid, area in gdf.groupby("class_id")["area_m2"].sum().items():
        assert area == pytest.approx(counts[cid] * px, rel=0.005)
    assert set(gdf["class_name"]) <= {c.name for c in CLASSES}


def test_the_notebook_api_is_plain_functions_of_geounet_api(tmp_path: Path, scene: Path) -> None:
    import types

    from geounet import search as search_module

    assert isinstance(geounet.search, types.ModuleType) and not callable(geounet.search)
    assert geounet.search is search_module and type(search_module) is types.ModuleType
    assert all(isinstance(getattr(api, f), types.FunctionType) for f in api.__all__)
    cat = pystac.Catalog("c", "one item")
    with rasterio.open(scene) as src:
        from rasterio.warp import transform_bounds
        from shapely.geometry import box, mapping

        ll = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    item = pystac.Item("s", mapping(box(*ll)), list(ll), datetime(2015, 8, 30, tzinfo=UTC), {})
    item.add_asset(
        "data", pystac.Asset(str(scene), roles=["data"], extra_fields={"eo:bands": [{"name": b} for b in S2]})
    )
    cat.add_item(item)
    cat.normalize_hrefs(str(tmp_path / "cat"))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    found = api.search(str(tmp_path / "cat" / "catalog.json"), bbox=list(ll), bands=["B04", "B08"])
    assert [s.id for s in found] == ["s"] and found[0].band_names == ("B04", "B08")
