"""Region land-cover workflow end-to-end against the loopback pgstac server with real scenes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import yaml
from fixtures_model import assert_real_output, save_calibrated
from rasterio.features import geometry_mask
from shapely.geometry import Polygon, box, shape

from geounet import publish
from geounet.config import load_run_config
from geounet.model import ClassInfo, ModelSpec
from workflows import region_landcover

CLASSES = (
    ClassInfo(0, "water", "#1f78b4"),
    ClassInfo(1, "forest", "#1b7837"),
    ClassInfo(2, "farm", "#f0d264"),
)
# A pentagon inside the Brandenburg scene (T33UUU, 2017-02-16): not a rectangle, so the
# mosaic must be nodata in the corners of its bounding box.
AOI = Polygon([(12.555, 52.465), (12.61, 52.462), (12.625, 52.49), (12.585, 52.515), (12.55, 52.495)])


S2_10M = ("B02", "B03", "B04", "B08")  # blue, green, red, nir


def _s2_bands(data_dir: Path, names: tuple[str, ...], aoi: Polygon | None = None) -> np.ndarray:
    """The real Brandenburg 10 m bands ``names`` (within the AOI's bounds when given)."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    img = data_dir / "s2-brandenburg-20170216" / "IMG_DATA"
    out = []
    for name in names:
        with rasterio.open(img / f"T33UUU_20170216T102101_{name}.jp2") as ds:
            window = None
            if aoi is not None:
                window = from_bounds(*transform_bounds("EPSG:4326", ds.crs, *aoi.bounds), ds.transform)
                window = window.round_offsets().round_lengths()
            out.append(ds.read(1, window=window).astype(np.float64))
    return np.stack(out)


@pytest.fixture(scope="module")
def rgbn_bundle(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded U-Net, head calibrated on the AOI of the real scene: all 3 classes, no near-ties."""
    return save_calibrated(
        tmp_path_factory.mktemp("m") / "rgbn.safetensors",
        _s2_bands(data_dir, S2_10M, AOI),
        bands=("blue", "green", "red", "nir"),
        classes=CLASSES,
        spec=ModelSpec(in_channels=4, n_classes=3, depth=2, width=8),
        seed=5,
    )


def _config(tmp: Path, **sections: Any) -> Path:
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.fixture(scope="module")
def region_run(stac_api: str, rgbn_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("region")
    cfg_path = _config(
        tmp,
        name="brandenburg-test",
        aoi={"wkt": AOI.wkt},
        stac={"source": stac_api, "collections": ["sentinel-2-l1c"], "datetime": "2017-02-01/2017-02-28",
              "max_cloud": 20},
        grid={"resolution": 10},
        model=str(rgbn_bundle),
        predict={"tile": 128, "halo": 16, "batch_size": 4},
        execution={"executor": "local"},
        outputs={"dir": str(tmp / "out")},
    )  # fmt: skip
    cfg = load_run_config(cfg_path)
    return region_landcover.run(cfg, progress=False)


def test_region_run_writes_one_mosaic_with_nodata_outside_the_aoi(region_run: Any) -> None:
    out = region_run.outputs
    assert [s.id for s in region_run.plan.scenes] == ["S2A_MSIL1C_20170216T102101_T33UUU"]
    assert region_run.plan.coverage.fraction == pytest.approx(1.0)
    with rasterio.open(out["classes"]) as ds:
        assert ds.crs.to_epsg() == 32633
        classes = ds.read(1)
        inside = geometry_mask(
            [region_run.plan.job.aoi], out_shape=ds.shape, transform=ds.transform, invert=True
        )
    assert inside.mean() < 0.9  # the AOI is not its bounding box
    assert_real_output(classes[inside], len(CLASSES))
    assert (classes[~inside] == 255).all()
    assert (classes[inside] != 255).mean() > 0.99
    assert len(list(out["classes"].parent.glob("classes*.tif"))) == 1


def test_region_run_publishes_polygons_areas_and_item(region_run: Any, stac_schemas: dict[str, dict]) -> None:
    import geopandas as gpd

    out = region_run.outputs
    polys = gpd.read_file(out["polygons"])
    assert len(polys) > 0 and polys.crs.to_epsg() == 32633
    assert shape(region_landcover.mapping(region_run.plan.job.aoi)).buffer(10).contains(polys.union_all())
    with open(out["areas"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(float(r["percent"]) for r in rows) == pytest.approx(100.0, abs=0.01)
    aoi_km2 = region_run.plan.coverage.aoi_m2 / 1e6
    assert sum(float(r["area_km2"]) for r in rows) == pytest.approx(aoi_km2, rel=0.02)
    item = pystac.Item.from_file(str(out["item"]))
    used = publish.validate_item(out["item"], schemas=stac_schemas, offline=True)  # every declared extension
    assert set(item.stac_extensions) <= set(used) and len(item.stac_extensions) >= 4
    assert {"classes", "polygons"} <= set(item.assets)
    manifest = json.loads(out["manifest"].read_text())
    assert manifest["scenes"][0]["id"] == "S2A_MSIL1C_20170216T102101_T33UUU"
    assert out["project"].exists() and out["quicklook"].exists()


def test_region_run_writes_the_per_pixel_observation_count(region_run: Any) -> None:
    """observations.tif: 1 where the one clear scene gave the mosaic data, 0 outside the AOI."""
    out = region_run.outputs
    with rasterio.open(out["observations"]) as ds, rasterio.open(out["classes"]) as classes_ds:
        assert ds.dtypes == ("uint16",) and ds.descriptions == ("clear valid observations",)
        assert (ds.crs, ds.transform, ds.shape) == (classes_ds.crs, classes_ds.transform, classes_ds.shape)
        counts, classes = ds.read(1), classes_ds.read(1)
    np.testing.assert_array_equal(counts, (classes != 255).astype(np.uint16))
    assert out["observations"].parent == out["classes"].parent


def test_dry_run_reports_scenes_tiles_and_estimate(stac_api: str, rgbn_bundle: Path, tmp_path: Path) -> None:
    big = Polygon([(12.5, 52.43), (12.75, 52.43), (12.75, 52.55), (12.5, 52.55)])  # reaches past the scene
    cfg_path = _config(
        tmp_path,
        name="dry",
        aoi={"wkt": big.wkt},
        stac={"source": stac_api, "collections": ["sentinel-2-l1c"], "datetime": "2017-02-01/2017-02-28"},
        model=str(rgbn_bundle),
        predict={"tile": 256, "halo": 16},
        outputs={"dir": str(tmp_path / "out")},
    )
    rp = region_landcover.plan(load_run_config(cfg_path))
    text = region_landcover.describe(rp)
    assert "S2A_MSIL1C_20170216T102101_T33UUU" in text and "tiles:" in text and "cpu ~" in text
    assert 0.2 < rp.coverage.fraction < 0.95
    assert not rp.coverage.uncovered.is_empty
    assert not (tmp_path / "out").exists()  # nothing written by a dry run


def test_choose_prefers_clear_scenes_and_skips_redundant_ones() -> None:
    from datetime import UTC, datetime

    from shapely.geometry import box

    from geounet.search import Scene

    def mk(i: str, cloud: float, bounds: tuple[float, float, float, float]) -> Scene:
        return Scene(i, datetime(2020, 1, 1, tzinfo=UTC), cloud, box(*bounds), ())

    aoi = box(12.0, 52.0, 12.2, 52.1)
    found = [mk("cloudy-full", 50, (11.9, 51.9, 12.3, 52.2)), mk("clear-west", 1, (11.9, 51.9, 12.1, 52.2)),
             mk("clear-east", 2, (12.1, 51.9, 12.3, 52.2)), mk("dup", 3, (12.0, 52.0, 12.05, 52.05))]  # fmt: skip
    chosen, cov = region_landcover.choose(found, aoi, crs="EPSG:32633")
    assert [s.id for s in chosen] == ["clear-west", "clear-east"]
    assert cov.fraction == pytest.approx(1.0)
    assert np.isclose(sum(g for _, g in cov.gains), 1.0)


def test_cli_run_dry_run_and_errors(stac_api: str, rgbn_bundle: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geounet.cli import cli

    cfg_path = _config(
        tmp_path,
        name="cli",
        aoi={"wkt": AOI.wkt},
        stac={"source": stac_api, "collections": ["sentinel-2-l1c"], "datetime": "2017-02-01/2017-02-28"},
        model=str(rgbn_bundle),
        predict={"tile": 128, "halo": 16},
        outputs={"dir": str(tmp_path / "out")},
    )
    runner = CliRunner()
    res = runner.invoke(cli, ["run", str(cfg_path), "--dry-run", "--executor", "local"])
    assert res.exit_code == 0, res.output
    assert "S2A_MSIL1C_20170216T102101_T33UUU" in res.output and "coverage: 100.00%" in res.output
    res = runner.invoke(cli, ["run", str(cfg_path), "--dry-run", "--set", "predict.halo=64"])
    assert "predict: tile=128 must be > 2*halo=128" in str(res.exception)
    res = runner.invoke(
        cli, ["run", str(cfg_path), "--dry-run", "--set", "stac.datetime=2018-01-01/2018-02-01"]
    )
    assert "no scenes match" in str(res.exception)


def test_workflow_doctests() -> None:
    import doctest

    from workflows import crop_monitoring, demo

    for mod in (region_landcover, crop_monitoring, demo):
        failed, _ = doctest.testmod(mod, verbose=False)
        assert failed == 0, mod.__name__
    assert doctest.testmod(crop_monitoring).attempted >= 2 and doctest.testmod(demo).attempted >= 1


def test_region_over_two_scenes_in_two_utm_zones_is_one_seamless_mosaic(
    stac_api: str, data_dir: Path, tmp_path: Path
) -> None:
    """The s2-zone-pair halves (east in 33N, west reprojected to 32N by the fixture) → one mosaic."""
    from pyproj import Transformer

    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    ll = to_ll.transform_bounds(335500, 5816500, 340000, 5820000)  # straddles the split at x≈337700
    path = save_calibrated(
        tmp_path / "rn.safetensors",
        _s2_bands(data_dir, ("B04", "B08"), box(*ll)),
        bands=("red", "nir"),
        classes=CLASSES,
        spec=ModelSpec(in_channels=2, n_classes=3, depth=2, width=8),
        seed=7,
    )
    cfg_path = _config(
        tmp_path,
        name="zone-pair",
        aoi={"bbox": list(ll)},
        stac={"source": stac_api, "collections": ["s2-zone-pair"]},
        grid={"resolution": 10, "crs": "EPSG:32633"},
        model=str(path),
        predict={"tile": 128, "halo": 16},
        execution={"executor": "local"},
        outputs={"dir": str(tmp_path / "out")},
    )
    result = region_landcover.run(load_run_config(cfg_path), progress=False)
    assert {s.id.rsplit("_", 1)[1] for s in result.plan.scenes} == {"east", "west"}
    assert result.plan.coverage.fraction == pytest.approx(1.0, abs=1e-6)
    with rasterio.open(result.outputs["classes"]) as ds:
        classes = ds.read(1)
        inside = geometry_mask([result.plan.job.aoi], out_shape=ds.shape, transform=ds.transform, invert=True)
    assert (classes[inside] != 255).all()  # no gap along the zone boundary
    assert_real_output(classes[inside], len(CLASSES))
    # one mosaic: classes + confidence, and the per-pixel count of clear observations beside them
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == [
        "classes.tif",
        "confidence.tif",
        "observations.tif",
    ]
