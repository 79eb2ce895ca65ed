"""STAC search against a real pgstac STAC API and a static catalog of the same items (loopback)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import geopandas
import pystac
import pystac.validation
import pytest
from fixtures_stac import BRANDENBURG_ID, StacAssets, free_port
from shapely.geometry import box

from geounet import search
from geounet.errors import ConfigError, InputError, SearchError

DATA = Path(__file__).parent / "data" / "stac"
SLOVENIA_BBOX = (14.55, 45.86, 14.57, 45.88)
BRANDENBURG_BBOX = (12.55, 52.46, 12.65, 52.5)
CLEAR = {"S2_L1C_slovenia_20150711", "S2_L1C_slovenia_20150830", "S2_L1C_slovenia_20150909"}
CLOUDY = {"S2_L1C_slovenia_20150731", "S2_L1C_slovenia_20150820"}
FAST = search.Retries(total=2, backoff=0.01, timeout=5)


@pytest.fixture(params=["api", "static", "static-http"])
def source(request: pytest.FixtureRequest, stac_assets: StacAssets) -> str:
    """The same items three ways: pgstac STAC API, local static catalog, static catalog over HTTP."""
    if request.param == "api":
        return str(request.getfixturevalue("stac_api"))
    return str(stac_assets.catalog) if request.param == "static" else stac_assets.catalog_url


def ids(found: list[search.Scene]) -> set[str]:
    return {s.id for s in found}


def test_bbox_datetime_max_cloud_returns_exactly_the_clear_dates(source: str) -> None:
    common: dict[str, Any] = dict(
        collections=["sentinel-2-l1c"], bbox=SLOVENIA_BBOX, datetime="2015-07-01/2015-09-30"
    )
    assert ids(search.scenes(source, **common)) == CLEAR | CLOUDY
    clear = search.scenes(source, max_cloud=10, **common)
    assert ids(clear) == CLEAR
    assert all(s.cloud_cover == 0.0 and s.crs == "EPSG:32633" for s in clear)
    august = search.scenes(source, max_cloud=10, **dict(common, datetime="2015-08-01/2015-08-31"))
    assert ids(august) == {"S2_L1C_slovenia_20150830"}


def test_bbox_selects_by_footprint_and_collection(source: str) -> None:
    found = search.scenes(source, collections="sentinel-2-l1c", bbox=BRANDENBURG_BBOX, datetime="2017-02-16")
    assert ids(found) == {BRANDENBURG_ID}
    pair = search.scenes(source, collections=["s2-zone-pair"], bbox=BRANDENBURG_BBOX)
    assert ids(pair) == {f"{BRANDENBURG_ID}_east", f"{BRANDENBURG_ID}_west"}
    assert {s.crs for s in pair} == {"EPSG:32633", "EPSG:32632"}


def test_interval_item_matches_by_overlap(source: str) -> None:
    found = search.scenes(source, collections=["landsat-7-rgb"], datetime="2001-01-01/2001-12-31")
    assert ids(found) == {"LE07_RGB_byte"}
    assert found[0].datetime is not None and found[0].datetime.isoformat() == "1999-04-15T00:00:00+00:00"
    assert found[0].cloud_cover is None
    with pytest.raises(SearchError):
        search.scenes(source, collections=["landsat-7-rgb"], datetime="2001-01-01/2001-12-31", max_cloud=50)


def test_paging_beyond_one_page_and_limit(source: str) -> None:
    everything = search.scenes(source, collections=["sentinel-2-l1c"], page_size=2)
    assert len(everything) == 6
    assert ids(everything) == CLEAR | CLOUDY | {BRANDENBURG_ID}
    assert len(search.scenes(source, collections=["sentinel-2-l1c"], page_size=2, limit=5)) == 5


def test_sortby_orders_results(source: str) -> None:
    found = search.scenes(
        source, collections=["sentinel-2-l1c"], bbox=SLOVENIA_BBOX, sortby="properties.datetime"
    )
    dates = [s.datetime for s in found]
    assert dates == sorted(dates) and len(dates) == 5  # type: ignore[type-var]
    newest = search.scenes(
        source, collections=["sentinel-2-l1c"], bbox=SLOVENIA_BBOX, sortby="-datetime", limit=1
    )
    assert ids(newest) == {"S2_L1C_slovenia_20150909"}


def test_aoi_from_wkt_geojson_and_gpkg(source: str, tmp_path: Path) -> None:
    aoi = box(*SLOVENIA_BBOX)
    frame = geopandas.GeoDataFrame({"name": ["aoi"]}, geometry=[aoi], crs="EPSG:4326").to_crs("EPSG:32633")
    frame.to_file(tmp_path / "aoi.gpkg")
    frame.to_file(tmp_path / "aoi.geojson")
    for value in (aoi.wkt, tmp_path / "aoi.gpkg", str(tmp_path / "aoi.geojson")):
        found = search.scenes(source, collections=["sentinel-2-l1c"], aoi=value, max_cloud=10)
        assert ids(found) == CLEAR
    both = search.scenes(source, collections=["sentinel-2-l1c"], aoi=aoi, bbox=(14, 45, 15, 46), max_cloud=10)
    assert ids(both) == CLEAR
    with pytest.raises(SearchError, match="no scenes match"):
        search.scenes(source, collections=["sentinel-2-l1c"], aoi=aoi, bbox=BRANDENBURG_BBOX)


def test_bands_map_to_assets_in_model_order(source: str, stac_assets: StacAssets) -> None:
    [s2] = search.scenes(
        source, collections=["sentinel-2-l1c"], bbox=BRANDENBURG_BBOX, bands=["B04", "nir", "B11"]
    )
    assert s2.band_names == ("B04", "nir", "B11")
    assert [b.href for b in s2.bands] == [
        f"{stac_assets.url}/s2-brandenburg/{b}.tif" for b in ("B04", "B08", "B11")
    ]
    assert {(b.scale, b.offset, b.nodata) for b in s2.bands} == {(0.0001, 0.0, 0.0)}
    assert s2.shape == (768, 1536) and s2.transform is not None and s2.transform.a == 10
    slo = search.scenes(
        source, collections=["sentinel-2-l1c"], bbox=SLOVENIA_BBOX, bands=["red", "B08", "nir08"]
    )
    assert {(b.asset, b.index) for b in slo[0].bands} == {("data", 4), ("data", 8), ("data", 9)}
    assert [b.index for b in slo[0].bands] == [4, 8, 9]
    [rgb] = search.scenes(source, collections=["landsat-7-rgb"], bands=["blue", "green", "red"])
    assert [b.index for b in rgb.bands] == [3, 2, 1]


def test_missing_band_is_a_clear_error(source: str) -> None:
    with pytest.raises(InputError, match=r"no band 'B08'.*visual-data\[red,green,blue\]"):
        search.scenes(source, collections=["landsat-7-rgb"], bands=["red", "B08"])


def test_empty_search_echoes_the_query(source: str) -> None:
    with pytest.raises(SearchError) as err:
        search.scenes(
            source, collections=["sentinel-2-l1c"], bbox=SLOVENIA_BBOX, datetime="2016-01-01/2016-02-01"
        )
    msg = str(err.value)
    assert "no scenes match" in msg and "bbox=14.55,45.86,14.57,45.88" in msg
    assert "datetime=2016-01-01/2016-02-01" in msg and "collections=sentinel-2-l1c" in msg


def test_cql2_text_filter_on_the_api(stac_api: str) -> None:
    found = search.scenes(stac_api, collections=["sentinel-2-l1c"], filter='"eo:cloud_cover" > 50')
    assert ids(found) == CLOUDY
    with pytest.raises(SearchError, match="no scenes match"):  # a valid combined filter that matches nothing
        search.scenes(stac_api, collections=["sentinel-2-l1c"], filter='"eo:cloud_cover" > 50', max_cloud=10)
    assert ids(search.scenes(stac_api, filter="id = 'LE07_RGB_byte'")) == {"LE07_RGB_byte"}


def test_the_installed_console_script_filters_on_the_api(stac_api: str, tmp_path: Path) -> None:
    """Acceptance 5: ``geounet search --filter "eo:cloud_cover < 20"`` through an installed console script.

    Run as a user would after ``pip install .``: the ``geounet`` entry point beside this
    Python (or ``$GEOUNET_CLI``, e.g. a fresh venv's ``bin/geounet``) in a clean
    environment (no ``PYTHONPATH``) from an empty folder, so only installed code is imported.
    """
    script = os.environ.get("GEOUNET_CLI") or str(Path(sys.executable).with_name("geounet"))
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    cmd = [script, "search", "--stac", stac_api, "--collection", "sentinel-2-l1c",
           "--filter", "eo:cloud_cover < 20", "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    collection = json.loads(proc.stdout)
    assert collection["type"] == "FeatureCollection"
    assert {f["id"] for f in collection["features"]} == CLEAR | {BRANDENBURG_ID}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2017-02", {BRANDENBURG_ID}),
        ("2017", {BRANDENBURG_ID}),
        ("2017-02-16", {BRANDENBURG_ID}),
        ("2017-01/2017-03", {BRANDENBURG_ID}),
        ("2016-01/..", {BRANDENBURG_ID}),
        ("../2015-07-31", {"S2_L1C_slovenia_20150711", "S2_L1C_slovenia_20150731"}),
        ("2015-08", {"S2_L1C_slovenia_20150820", "S2_L1C_slovenia_20150830"}),
        ("2015", CLEAR | CLOUDY),
    ],
)
def test_partial_dates_and_open_intervals_as_pystac_client_expands_them(
    source: str, when: str, expected: set[str]
) -> None:
    assert ids(search.scenes(source, collections=["sentinel-2-l1c"], datetime=when)) == expected


def test_datetime_expands_exactly_like_pystac_client() -> None:
    assert search.expand_datetime("2017-02") == "2017-02-01T00:00:00Z/2017-02-28T23:59:59Z"
    assert search.expand_datetime("2016-02") == "2016-02-01T00:00:00Z/2016-02-29T23:59:59Z"  # leap year
    assert search.expand_datetime("../2017") == "../2017-12-31T23:59:59Z"
    assert search.expand_datetime("2017-02-16T10:21:01+01:00") == "2017-02-16T10:21:01+01:00"
    assert search.expand_datetime(None) is None
    for bad in ("2017-13", "last tuesday", "2017/2018/2019", "2017-02-30"):
        with pytest.raises(
            ConfigError, match=rf"datetime '{bad}' is not RFC 3339.*--datetime 2017-02/2017-03"
        ):
            search.expand_datetime(bad)
    with pytest.raises(ConfigError, match="ends before it starts"):
        search.expand_datetime("2017-03/2017-02")


def test_cql2_filter_on_a_static_catalog_by_cql2s_evaluator(source: str) -> None:
    found = search.scenes(source, collections=["sentinel-2-l1c"], filter="eo:cloud_cover < 20")
    assert ids(found) == CLEAR | {BRANDENBURG_ID}
    both = search.scenes(source, filter="eo:cloud_cover < 20 AND collection = 's2-zone-pair'", max_cloud=5)
    assert ids(both) == {f"{BRANDENBURG_ID}_east", f"{BRANDENBURG_ID}_west"}
    with pytest.raises(SearchError, match="no scenes match"):
        search.scenes(source, collections=["sentinel-2-l1c"], filter='"eo:cloud_cover" > 50', max_cloud=10)


def test_malformed_filter_and_numbers_are_config_errors_naming_the_flag(stac_assets: StacAssets) -> None:
    catalog = str(stac_assets.catalog)
    with pytest.raises(ConfigError, match=r"filter 'eo:cloud_cover <<< 20' is not CQL2 text.*--filter"):
        search.scenes(catalog, filter="eo:cloud_cover <<< 20")
    with pytest.raises(ConfigError, match=r"max_cloud=-5 must be a percentage in 0\.\.100 \(--max-cloud"):
        search.scenes(catalog, max_cloud=-5)
    with pytest.raises(ConfigError, match=r"limit=0 must be >= 1 \(--limit"):
        search.scenes(catalog, limit=0)


def test_api_down_is_retried_then_a_search_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SearchError, match=r"failed after 2 retries.*check the URL and that the server is up"):
        search.scenes(url, collections=["x"], retries=FAST)


class _Always500(BaseHTTPRequestHandler):
    hits = 0

    def _answer(self) -> None:
        type(self).hits += 1
        body = b'{"code": "InternalError", "description": "database is gone"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_500() -> Iterator[str]:
    _Always500.hits = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Always500)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_server_error_is_retried_then_a_search_error(server_500: str) -> None:
    with pytest.raises(SearchError, match=r"database is gone") as err:
        search.scenes(server_500, collections=["x"], retries=FAST)
    assert _Always500.hits == 3  # first try + 2 retries
    assert "collections=x" in str(err.value)
    _Always500.hits = 0
    with pytest.raises(SearchError, match="failed after 2 retries"):
        search.scenes(server_500 + "/catalog.json", retries=FAST)
    assert _Always500.hits == 3


def test_missing_static_catalog_is_a_search_error(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="does not exist"):
        search.scenes(str(tmp_path / "nope" / "catalog.json"))


@pytest.mark.parametrize(
    ("name", "bands", "keys"),
    [
        ("earth-search", ["B02", "red", "B8A", "nir", "swir16", "B05"],
         ["blue", "red", "nir08", "nir", "swir16", "rededge1"]),
        ("planetary-computer", ["blue", "B04", "nir08", "B08", "swir16", "rededge1"],
         ["B02", "B04", "B8A", "B08", "B11", "B05"]),
    ],
)  # fmt: skip
def test_preset_band_maps_on_archive_shaped_items(name: str, bands: list[str], keys: list[str]) -> None:
    path = DATA / f"{'earth-search-v1' if name == 'earth-search' else name}-sentinel-2-l2a-item.json"
    scene = search.from_item(json.loads(path.read_text()), bands=bands, preset=name)
    assert [b.asset for b in scene.bands] == keys
    assert all(b.href.startswith("https://") and b.href.endswith(".tif") for b in scene.bands)
    assert scene.crs == "EPSG:32633" and scene.cloud_cover == 7.412
    assert scene.datetime is not None and scene.datetime.year == 2023
    # without the preset the generic matching (eo:bands names, common names, S2 aliases) agrees
    assert [b.asset for b in search.from_item(json.loads(path.read_text()), bands=bands).bands] == keys


def test_earth_search_scale_offset_and_default_bands() -> None:
    item = json.loads((DATA / "earth-search-v1-sentinel-2-l2a-item.json").read_text())
    scene = search.from_item(item, bands=["red"], preset="es")
    assert (scene.bands[0].scale, scene.bands[0].offset, scene.bands[0].nodata) == (0.0001, -0.1, 0.0)
    every = search.from_item(item).bands
    assert "thumbnail" not in {b.asset for b in every} and "visual" not in {b.asset for b in every}
    assert "tileinfo_metadata" not in {b.asset for b in every}
    assert scene.shape == (10980, 10980)


def test_planetary_computer_without_signer_warns(caplog: pytest.LogCaptureFixture) -> None:
    try:
        import planetary_computer  # noqa: F401
    except ImportError:
        with caplog.at_level(logging.WARNING, logger="geounet.search"):
            assert search._signer(search.stac_presets.preset("pc")) is None
        assert "planetary-computer" in caplog.text
    else:
        assert search._signer(search.stac_presets.preset("pc")) is not None


def test_single_item_from_url_and_path(stac_assets: StacAssets) -> None:
    href = next(stac_assets.catalog.parent.rglob(f"{BRANDENBURG_ID}.json"))
    for value in (str(href), stac_assets.href(href)):
        scene = search.item(value, bands=["B02", "B03"])
        assert scene.id == BRANDENBURG_ID and scene.band_names == ("B02", "B03")
        assert scene.bands[0].href == f"{stac_assets.url}/s2-brandenburg/B02.tif"


def test_target_grid_is_utm_of_the_aoi_centroid() -> None:
    aoi = box(*BRANDENBURG_BBOX)
    grid = search.target_grid(aoi, resolution=10)
    assert grid.crs == "EPSG:32633" and grid.resolution == (10.0, 10.0)
    left, bottom, right, top = grid.bounds
    assert left % 10 == 0 and top % 10 == 0
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(*aoi.exterior.coords.xy)
    assert left <= min(x) and right >= max(x) and bottom <= min(y) and top >= max(y)
    assert search.target_grid(aoi, resolution=20, crs="EPSG:3035").crs == "EPSG:3035"


def test_bad_arguments_are_config_errors(stac_assets: StacAssets) -> None:
    with pytest.raises(ConfigError, match="bbox"):
        search.scenes(str(stac_assets.catalog), bbox=(1, 2, 0, 3))
    with pytest.raises(ConfigError, match="RFC 3339"):
        search.scenes(str(stac_assets.catalog), datetime="last tuesday")
    with pytest.raises(ConfigError, match="ends before it starts"):
        search.scenes(str(stac_assets.catalog), datetime="2017-02-16/2017-02-01")
    with pytest.raises(ConfigError, match="earth-search"):
        search.scenes(str(stac_assets.catalog), preset="nasa")


def test_scene_is_a_frozen_value(stac_assets: StacAssets) -> None:
    [scene] = search.scenes(str(stac_assets.catalog), collections=["landsat-7-rgb"])
    with pytest.raises(AttributeError):
        scene.id = "other"  # type: ignore[misc]
    assert hash(scene) == hash(search.scenes(str(stac_assets.catalog), collections=["landsat-7-rgb"])[0])
    assert scene.to_dict()["id"] == "LE07_RGB_byte" and json.dumps(scene.to_dict())
    assert pickle.loads(pickle.dumps(scene)) == scene  # travels to Ray tasks


def test_cli_search_prints_a_table_and_json(stac_api: str, capsys: pytest.CaptureFixture[str]) -> None:
    from geounet.cli import main

    args = [
        "search",
        "--stac",
        stac_api,
        "--collection",
        "sentinel-2-l1c",
        "--bbox",
        ",".join(map(str, SLOVENIA_BBOX)),
    ]
    main([*args, "--datetime", "2015-07-01/2015-09-30", "--max-cloud", "10"])
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0].split()[:4] == ["id", "datetime", "cloud", "%"]
    assert {line.split()[0] for line in lines[1:]} == CLEAR
    assert "3 scene(s)" in out.err
    main([*args, "--bands", "B04,B08", "--json", "--limit", "2", "--sortby", "-datetime"])
    listed = pystac.ItemCollection.from_dict(json.loads(capsys.readouterr().out))  # pipeable to STAC tools
    assert [it.id for it in listed] == ["S2_L1C_slovenia_20150909", "S2_L1C_slovenia_20150830"]
    assert listed.items[0].properties["eo:cloud_cover"] == 0.0 and "data" in listed.items[0].assets
    for it in listed:  # the core Item schema pystac ships (the extension schemas need the network)
        pystac.validation.validate_dict(it.to_dict(), extensions=[])
    main([*args, "--datetime", "2015-08", "--json"])
    assert {it.id for it in pystac.ItemCollection.from_dict(json.loads(capsys.readouterr().out))} == {
        "S2_L1C_slovenia_20150820",
        "S2_L1C_slovenia_20150830",
    }


def test_cli_search_errors_are_one_line(stac_api: str, capsys: pytest.CaptureFixture[str]) -> None:
    from geounet.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "search",
                "--stac",
                stac_api,
                "--collection",
                "sentinel-2-l1c",
                "--datetime",
                "1990-01-01/1990-02-01",
            ]
        )
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("SearchError: no scenes match") and "datetime=1990-01-01/1990-02-01" in err
    assert len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["search", "--stac", stac_api, "--bbox", "1,2,3"])
    assert "ConfigError: --bbox '1,2,3' must be four numbers" in capsys.readouterr().err
    bad = {
        (
            "--max-cloud",
            "-5",
        ): "ConfigError: --max-cloud -5 must be in 0..100; give a percentage, e.g. --max-cloud 20",
        ("--max-cloud", "150"): "ConfigError: --max-cloud 150 must be in 0..100",
        ("--limit", "0"): "ConfigError: --limit 0 must be >= 1; leave --limit out for every matching scene",
        ("--datetime", "2017-13"): "ConfigError: datetime '2017-13' is not RFC 3339",
        ("--filter", "cloud <<< 3"): "ConfigError: filter 'cloud <<< 3' is not CQL2 text",
    }
    for (flag, value), message in bad.items():
        with pytest.raises(SystemExit) as exit_:
            main(["search", "--stac", stac_api, flag, value])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 1 and err.startswith(message) and len(err.splitlines()) == 1, err


def test_preset_name_resolves_to_its_api_and_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[search.Query] = []

    def fake_api(query: search.Query, **kwargs: object) -> list[object]:
        seen.append(query)
        return []

    monkeypatch.setattr(search, "_api_items", fake_api)  # no network beyond loopback in tests
    with pytest.raises(SearchError, match=r"source=https://earth-search\.aws\.element84\.com/v1 "):
        search.scenes("earth-search", bbox=BRANDENBURG_BBOX, max_cloud=20)
    assert seen[0].collections == ("sentinel-2-l2a",) and seen[0].max_cloud == 20
    with pytest.raises(SearchError):
        search.scenes("pc", collections=["sentinel-2-l1c"])
    assert seen[1].source == "https://planetarycomputer.microsoft.com/api/stac/v1"
    assert seen[1].collections == ("sentinel-2-l1c",)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--tile", "0", "--tile 0 must be >= 16; leave --tile out for the bundle's tile"),
        ("--halo", "-1", "--halo -1 must be >= 0; leave --halo out for the bundle's halo"),
        ("--resolution", "0", "--resolution 0 must be > 0; give the mosaic pixel size"),
        ("--max-cloud", "-5", "--max-cloud -5 must be in 0..100"),
        ("--limit", "0", "--limit 0 must be >= 1"),
        ("--actors", "0", "--actors 0 must be >= 1"),
        ("--gpus-per-actor", "0", "--gpus-per-actor 0 must be > 0"),
        ("--min-area", "-1", "--min-area -1 must be >= 0"),
    ],
)
def test_cli_predict_bad_numbers_are_one_line_errors(
    flag: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from geounet.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "predict",
                "x.tif",
                "--model",
                str(tmp_path / "m.safetensors"),
                "--out",
                str(tmp_path),
                flag,
                value,
            ]
        )
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and err.startswith(f"ConfigError: {message}")
    assert len(err.splitlines()) == 1
