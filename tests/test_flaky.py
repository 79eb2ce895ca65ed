"""Flaky network: a STAC job over a loopback server that fails 20% of its requests (503s, connection
resets, slow answers) gives output identical to a clean run; a server that is really down gives a
clear error, and leaves nothing that looks finished."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from fixtures_flaky import FlakyServer
from fixtures_model import assert_real_output, read_bands, save_calibrated
from rasterio.shutil import copy as rio_copy

from geounet import jobs, pipeline, planning, scenes, search
from geounet.errors import InputError, ReadError, SearchError
from geounet.model import ClassInfo, ModelSpec

BANDS = ("red", "green", "blue")
CLASSES = (ClassInfo(0, "dark", "#000000"), ClassInfo(1, "bright", "#ffffff"))
COLLECTION = "landsat-7-rgb"


@pytest.fixture(scope="module")
def tiny_bundle(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded U-Net with its head calibrated on the scene (both classes occur, no near-ties)."""
    return save_calibrated(
        tmp_path_factory.mktemp("flaky-model") / "tiny.safetensors",
        read_bands(data_dir / "landsat7-rgb" / "RGB.byte.tif"),
        bands=BANDS,
        classes=CLASSES,
        spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4),
        seed=11,
    )


@pytest.fixture(scope="module")
def served(flaky_server: FlakyServer, data_dir: Path) -> FlakyServer:
    """The real Landsat 7 RGB scene as a COG (128 px blocks: many range requests) + a static catalog."""
    root = flaky_server.root
    cog = root / "landsat7" / "RGB.byte.tif"
    cog.parent.mkdir(parents=True, exist_ok=True)
    rio_copy(str(data_dir / "landsat7-rgb" / "RGB.byte.tif"), str(cog), driver="COG", blocksize=128)
    with rasterio.open(cog) as ds:
        west, south, east, north = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    geometry = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }
    item = pystac.Item(
        "LE07_RGB_byte", geometry, [west, south, east, north], None,
        {"start_datetime": "1999-04-15T00:00:00Z", "end_datetime": "2022-04-06T23:59:59Z"},
        collection=COLLECTION,
    )  # fmt: skip
    asset = pystac.Asset("../../../landsat7/RGB.byte.tif", media_type=pystac.MediaType.COG, roles=["data"])
    asset.extra_fields["eo:bands"] = [{"name": b, "common_name": b} for b in BANDS]
    asset.extra_fields["raster:bands"] = [{"nodata": 0} for _ in BANDS]
    item.add_asset("data", asset)
    catalog = pystac.Catalog("flaky", "the Landsat scene behind a flaky server")
    collection = pystac.Collection(
        COLLECTION,
        "Landsat 7 RGB",
        pystac.Extent(
            pystac.SpatialExtent([[west, south, east, north]]), pystac.TemporalExtent([[None, None]])
        ),
    )
    collection.add_item(item)
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(root / "catalog"))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return flaky_server


def _job(served: FlakyServer, bundle: Path, namespace: str, out: Path) -> dict[str, Any]:
    """Search the catalog and predict its scene, every byte over HTTP under ``namespace``.

    Small tiles (the budget would read the scene in one tile, a handful of merged range
    requests): many windowed reads, so the 20% failures hit a real number of requests.
    """
    found = search.scenes(served.href(namespace, served.root / "catalog" / "catalog.json"), bands=BANDS)
    job = planning.plan_scenes(
        found, model=bundle, out_dir=out, options=jobs.PredictOptions(batch_size=4, tile=128), source="flaky"
    )
    outputs = pipeline.run(job, progress=False)
    return {"scenes": [(s.id, s.band_names) for s in found], "outputs": outputs}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_twenty_percent_failures_give_the_clean_output(
    served: FlakyServer, tiny_bundle: Path, tmp_path: Path
) -> None:
    served.set(fail=0.0)
    clean = _job(served, tiny_bundle, "clean", tmp_path / "clean")
    assert served.stats().get("requests", 0) > 20  # the job really read over HTTP

    served.set(fail=0.2, modes="503,reset,slow", seed=7, slow=0.2)
    started = time.monotonic()
    flaky = _job(served, tiny_bundle, "flaky", tmp_path / "flaky")
    stats = served.stats()
    # The server really misbehaved, with every kind of failure.
    assert stats["503"] > 0 and stats["reset"] > 0 and stats["slow"] > 0, stats
    assert (stats["503"] + stats["reset"]) / stats["requests"] > 0.08, stats
    assert time.monotonic() - started < 120

    assert flaky["scenes"] == clean["scenes"]
    for name in ("classes", "confidence"):
        a, b = clean["outputs"][name], flaky["outputs"][name]
        with rasterio.open(a) as da, rasterio.open(b) as db:
            if name == "classes":
                assert_real_output(da.read(1), len(CLASSES))
            assert np.array_equal(da.read(), db.read()), name
            assert da.transform == db.transform and da.crs == db.crs
        assert _digest(a) == _digest(b), f"{name}: the files differ"
    assert _digest(clean["outputs"]["areas"]) == _digest(flaky["outputs"]["areas"])
    import geopandas as gpd

    pa, pb = gpd.read_file(clean["outputs"]["polygons"]), gpd.read_file(flaky["outputs"]["polygons"])
    assert len(pa) == len(pb) > 0
    assert pa.geometry.geom_equals(pb.geometry).all()


def test_stac_server_down_is_a_clear_search_error(served: FlakyServer) -> None:
    served.set(fail=1.0, modes="503")
    url = served.href("down", served.root / "catalog" / "catalog.json")
    with pytest.raises(SearchError) as err:
        search.scenes(url, bands=BANDS, retries=search.Retries(total=2, backoff=0.05))
    message = str(err.value)
    assert url in message and "retries" in message and "check the URL and that the server is up" in message
    assert served.stats()["503"] >= 3  # the first try and two retries


def test_asset_server_down_fails_cleanly(
    served: FlakyServer, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served.set(fail=0.0)
    found = search.scenes(served.href("down2", served.root / "catalog" / "catalog.json"), bands=BANDS)
    job = planning.plan_scenes(
        found, model=tiny_bundle, out_dir=tmp_path / "out", options=jobs.PredictOptions()
    )
    # GDAL's own retries, shortened so the test is quick (production: 5 retries from 0.5 s).
    monkeypatch.setitem(scenes.GDAL_ENV, "GDAL_HTTP_MAX_RETRY", 2)
    monkeypatch.setitem(scenes.GDAL_ENV, "GDAL_HTTP_RETRY_DELAY", 0.05)
    served.set(fail=1.0, modes="503")
    with pytest.raises((ReadError, InputError)) as err:
        pipeline.run(job, progress=False)
    message = str(err.value)
    assert "LE07_RGB_byte" in message and "RGB.byte.tif" in message
    assert "check that the URL is reachable" in message
    assert not (tmp_path / "out" / "classes.tif").exists()
    assert not (tmp_path / "out" / "run.json").exists()
    served.set(fail=0.0)
