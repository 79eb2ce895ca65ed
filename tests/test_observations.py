"""``observations.tif``: the per-pixel count of clear valid observations, as a COG."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from geounet import tiling
from geounet.errors import InputError
from geounet.geo import Grid, Window
from geounet.publish.observations import DESCRIPTION, write_observations


def test_counts_are_written_per_block_with_zero_elsewhere(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "s2-brandenburg-20170216" / "IMG_DATA" / "T33UUU_20170216T102101_B02.jp2"
    with rasterio.open(src) as ds:
        grid = Grid.of_dataset(ds).window_grid(Window(0, 0, 1100, 1300))
    counts = np.random.default_rng(0).integers(0, 6, grid.shape, dtype=np.uint16)
    plan = list(tiling.grid(grid.shape, tile=512, halo=0))
    written = plan[:-1]  # the last block is never observed: it stays 0
    blocks = ((t.core, counts[t.core.to_slices()]) for t in written)
    path = write_observations(tmp_path / "observations.tif", blocks, grid=grid)
    assert cog_validate(str(path))[0]
    with rasterio.open(path) as ds:
        assert ds.dtypes == ("uint16",) and ds.nodata is None and ds.descriptions == (DESCRIPTION,)
        assert (ds.crs, ds.transform) == (rasterio.crs.CRS.from_user_input(grid.crs), grid.transform)
        got = ds.read(1)
    expected = counts.copy()
    expected[plan[-1].core.to_slices()] = 0
    np.testing.assert_array_equal(got, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "observations.qml",
        "observations.tif",
    ]  # + QGIS style


def test_a_count_block_that_does_not_fit_is_an_input_error(tmp_path: Path) -> None:
    grid = Grid(shape=(8, 8))
    with pytest.raises(InputError, match="do not fit"):
        write_observations(tmp_path / "o.tif", [(Window(0, 0, 8, 8), np.zeros((4, 8)))], grid=grid)
    with pytest.raises(InputError, match=r"outside 0\.\.65535"):
        write_observations(tmp_path / "o.tif", [(Window(0, 0, 2, 2), np.full((2, 2), -1))], grid=grid)
    assert list(tmp_path.iterdir()) == []


# -- in the prediction's own read pass -------------------------------------------------------------

SLOVENIA_BBOX = (14.55, 45.86, 14.57, 45.88)
BANDS = ["B02", "B03", "B04", "B08"]
GEOTIFF = "s2-slovenia-eolearn/geotiff/reference_scene_4_s2l1c_13band.tif"  # 2015-07-11, clear
OUTPUTS = ("classes", "confidence", "observations")


@pytest.fixture(scope="module")
def slovenia_job(stac_api: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A job over the five real Slovenia dates (two cloudy; CLP masks), a triangular AOI, 16 tiles."""
    from fixtures_model import read_bands, save_calibrated
    from shapely.geometry import Polygon

    from geounet import jobs, planning, search
    from geounet.model import ClassInfo, ModelSpec

    found = search.scenes(stac_api, collections=["sentinel-2-l1c"], bbox=SLOVENIA_BBOX, bands=BANDS)
    assert len(found) == 5
    # s2cloudless' probability only (eo-learn's CLM masks the cloudy dates whole): counts vary per pixel
    found = [replace(s, masks=tuple(m for m in s.masks if m.name == "cloud_probability")) for s in found]
    local = data_dir / GEOTIFF
    bundle = save_calibrated(
        tmp_path_factory.mktemp("m") / "s2.safetensors",
        read_bands(local, [2, 3, 4, 8]),
        bands=tuple(BANDS),
        classes=(ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ffffff"), ClassInfo(2, "c", "#ff0000")),
        spec=ModelSpec(in_channels=4, n_classes=3, depth=2, width=8),
        seed=5,
    )
    with rasterio.open(local) as ds:
        grid = Grid.of_dataset(ds)
    (x0, y1), (x1, y0) = grid.xy(0, 0), grid.xy(grid.rows, grid.cols)
    aoi = Polygon([(x0, y0), (x1, y0), (x0 + 0.7 * (x1 - x0), y1)])  # leaves a corner tile outside
    options = jobs.PredictOptions(tile=64, halo=16, batch_size=4, outputs=OUTPUTS)
    return planning.plan_scenes(found, model=bundle, out_dir=tmp_path_factory.mktemp("o"), options=options,
                                grid=grid, aoi=aoi)  # fmt: skip


def _second_pass(job: Any) -> np.ndarray:
    """What the region workflow computed after the prediction, reading every scene again."""
    from rasterio.features import geometry_mask
    from shapely.geometry import box

    from geounet import scenes

    out = np.zeros(job.grid.shape, np.uint16)
    for tile in job.plan:
        core = job.grid.window_grid(tile.core)
        if not job.aoi.intersects(box(*core.bounds)):
            continue
        _, _, counts = scenes.mosaic(list(job.scenes), tile.core, grid=job.grid, resampling=job.options.resampling,
                                     failures=[], counts=True)  # fmt: skip
        inside = geometry_mask([job.aoi], out_shape=core.shape, transform=core.transform, invert=True)
        out[tile.core.to_slices()] = counts * inside
    return out


def test_the_prediction_counts_what_a_second_read_pass_counted(slovenia_job: Any, tmp_path: Path) -> None:
    from geounet import pipeline
    from geounet.resume import fingerprint_of

    written = pipeline.run(slovenia_job, progress=False)
    with rasterio.open(written["observations"]) as ds:
        got = ds.read(1)
        assert ds.dtypes == ("uint16",) and ds.descriptions == (DESCRIPTION,)
    with rasterio.open(written["classes"]) as ds:
        classes = ds.read(1)
    want = _second_pass(slovenia_job)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want[want > 0])) >= 2 and want.max() <= 5  # cloudy dates: fewer clear views
    assert (want == 0).any()  # outside the AOI
    np.testing.assert_array_equal(got == 0, classes == 255)  # no clear view ⇔ no class
    assert cog_validate(str(written["observations"]))[0]
    item = json.loads((written["item"]).read_text())
    assert item["assets"]["observations"]["href"] == "./observations.tif"
    asked = fingerprint_of(slovenia_job)
    plain = fingerprint_of(replace(slovenia_job, options=replace(slovenia_job.options, outputs=("classes",))))
    assert asked != plain  # a cache recorded without counts cannot serve a run that writes them


def test_ray_parts_count_the_same_observations(ray_cluster: Any, slovenia_job: Any, tmp_path: Path) -> None:
    from geounet import pipeline
    from geounet.distributed import RayExecutor
    from geounet.pool import RayOptions

    executor = RayExecutor(RayOptions(actors=1, cpus_per_actor=0.5, ready_timeout_s=120))
    written = pipeline.run(replace(slovenia_job, out_dir=tmp_path), results=executor, progress=False)
    assert executor.stats.assembled_on  # the parts path
    with rasterio.open(written["observations"]) as ds:
        np.testing.assert_array_equal(ds.read(1), _second_pass(slovenia_job))


def test_observations_of_a_single_raster_is_a_config_error(data_dir: Path, tmp_path: Path) -> None:
    from geounet import jobs, planning
    from geounet.errors import ConfigError

    src = data_dir / "landsat7-rgb" / "RGB.byte.tif"
    bundle = tmp_path / "m.safetensors"
    from geounet import model
    from geounet.model import ClassInfo, ModelSpec, networks

    model.save(networks.init_bundle(bands=("r", "g", "b"), classes=(ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ffffff")),
                                    spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4), seed=0), bundle)  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"observations counts the clear observations of STAC scenes.*--stac"
    ):
        planning.plan(src, model=bundle, out_dir=tmp_path / "o", options=jobs.PredictOptions(outputs=OUTPUTS))
    assert not (tmp_path / "o").exists()


def test_warped_scenes_count_as_the_second_pass_did(stac_api: str, data_dir: Path, tmp_path: Path) -> None:
    """The s2-zone-pair halves (west reprojected to 32N) warped bilinearly onto one 33N grid: scenes past
    the first rule's fill are read over the core only, and the counts still equal the core-window reads."""
    import yaml
    from fixtures_model import save_calibrated
    from pyproj import Transformer

    from geounet import pipeline
    from geounet.config import load_run_config
    from geounet.model import ClassInfo, ModelSpec
    from workflows import region_landcover

    ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform_bounds(
        335500, 5816500, 340000, 5820000
    )
    with rasterio.open(data_dir / "s2-brandenburg-20170216/IMG_DATA/T33UUU_20170216T102101_B04.jp2") as ds:
        image = ds.read(window=rasterio.windows.Window(0, 0, 256, 256)).astype(np.float64)
    bundle = save_calibrated(tmp_path / "m.safetensors", np.concatenate([image, image[:, ::-1]]), bands=("red", "nir"),
                             classes=(ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ffffff")),
                             spec=ModelSpec(in_channels=2, n_classes=2, depth=2, width=8), seed=7)  # fmt: skip
    cfg = {
        "name": "zone-pair", "aoi": {"bbox": list(ll)}, "stac": {"source": stac_api, "collections": ["s2-zone-pair"]},
        "grid": {"resolution": 10, "crs": "EPSG:32633", "resampling": "bilinear"}, "model": str(bundle),
        "predict": {"tile": 128, "halo": 16}, "execution": {"executor": "local"}, "outputs": {"dir": str(tmp_path / "out")},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    job = region_landcover.plan(load_run_config(tmp_path / "run.yaml")).job
    assert "observations" in job.options.outputs and len(job.scenes) == 2
    written = pipeline.run(job, progress=False)
    with rasterio.open(written["observations"]) as ds:
        got = ds.read(1)
    want = _second_pass(job)
    np.testing.assert_array_equal(got, want)
    assert want.max() == 2 and (want == 1).any()  # the halves overlap along the zone boundary
