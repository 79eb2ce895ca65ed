"""Untrusted input: hostile STAC ids and hrefs, unsafe YAML, SQL, pickled bundles, credentials in
logs and manifests, and two jobs writing into one output folder."""

from __future__ import annotations

import json
import os
import pickle
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import torch
import yaml
from filelock import FileLock, Timeout
from fixtures_flaky import FlakyServer
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.shutil import copy as rio_copy

from geounet import model, publish, safety, scenes
from geounet.config import load_monitor_config, load_run_config, load_train_config
from geounet.errors import BundleError, ConfigError, InputError
from geounet.model import ClassInfo, ModelSpec, networks
from geounet.state import StateStore

REPO = Path(__file__).resolve().parents[1]
BANDS = ("red", "green", "blue")
CLASSES = (ClassInfo(0, "dark", "#000000"), ClassInfo(1, "bright", "#ffffff"))
SECRET_SIG = "SeCrEtSiGnAtUrE0123456789"
SECRET_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_AMZ = "SeCrEtAmZsIgNaTuRe42"
SECRETS = (SECRET_SIG, SECRET_KEY_ID, SECRET_AMZ, "hunter2password")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = networks.init_bundle(
        bands=BANDS, classes=CLASSES, spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4), seed=4
    )
    return model.save(bundle, tmp_path_factory.mktemp("sec-model") / "tiny.safetensors")


# --------------------------------------------------------------------------- file names from ids

HOSTILE_IDS = ["../../x", "/etc/passwd", "..", ".", "", "a/../../b", "C:\\Windows\\x", "con", "x\x00y",
               "~/.ssh/id_rsa", ".hidden", "a" * 400, "S2A_MSIL2A_20240601T101031_R022_T33UUU_20240601T152307"]  # fmt: skip


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_hostile_ids_stay_inside_the_output_folder(value: str, tmp_path: Path) -> None:
    path = safety.safe_path(tmp_path, "predictions", value, suffix=".tif")
    assert path.resolve().parent == (tmp_path / "predictions").resolve()
    name = path.name
    assert "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")
    assert len(name) <= 104


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=200), st.text(min_size=0, max_size=200))
def test_safe_names_are_safe_and_distinct(a: str, b: str) -> None:
    na, nb = safety.safe_name(a), safety.safe_name(b)
    for n in (na, nb):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", n) and not n.startswith(".") and n not in (".", "..")
    if a != b:
        assert na != nb


@pytest.fixture(scope="module")
def slovenia_catalog(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two real Slovenia scenes whose item ids try to escape: a relative and an absolute path."""
    import geopandas as gpd
    from rasterio.warp import transform_bounds
    from shapely.geometry import box, mapping

    src = data_dir / "s2-slovenia-eolearn"
    tmp = tmp_path_factory.mktemp("hostile")
    s2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    common = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
    escape_abs = Path("/tmp") / f"geounet-escape-{uuid.uuid4().hex[:8]}"
    hostile = {2: "../../escaped-relative", 3: str(escape_abs)}
    cat = pystac.Catalog("hostile", "hostile ids")
    for index, date in ((2, "2015-09-09"), (3, "2015-08-30")):
        scene = src / "geotiff" / f"reference_scene_{index}_s2l1c_13band.tif"
        with rasterio.open(scene) as ds:
            ll = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
        item = pystac.Item(f"placeholder-{index}", mapping(box(*ll)), list(ll),
                           pystac.utils.str_to_datetime(f"{date}T10:00:00Z"), {}, collection="s2")  # fmt: skip
        bands = [{"name": b, **({"common_name": common[b]} if b in common else {})} for b in s2]
        item.add_asset("data", pystac.Asset(str(scene), media_type=pystac.MediaType.GEOTIFF, roles=["data"],
                                            extra_fields={"eo:bands": bands}))  # fmt: skip
        cat.add_item(item)
    cat.normalize_hrefs(str(tmp / "catalog"))
    cat.save(catalog_type=pystac.CatalogType.ABSOLUTE_PUBLISHED)
    for index, bad_id in hostile.items():  # the ids change only inside the JSON: the files stay put
        path = tmp / "catalog" / f"placeholder-{index}" / f"placeholder-{index}.json"
        obj = json.loads(path.read_text())
        obj["id"] = bad_id
        path.write_text(json.dumps(obj))
    parcels = gpd.read_file(src / "original/TestEOPatch/vector_timeless/LULC.gpkg").head(8)
    parcels["field_id"] = [f"p{i}" for i in range(len(parcels))]
    parcels[["field_id", "geometry"]].to_file(tmp / "parcels.gpkg")
    bundle = networks.init_bundle(
        bands=("B02", "B03", "B04", "B08"), classes=CLASSES,
        spec=ModelSpec(in_channels=4, n_classes=2, depth=2, width=4), seed=1,
    )  # fmt: skip
    return {"tmp": tmp, "catalog": tmp / "catalog" / "catalog.json", "parcels": tmp / "parcels.gpkg",
            "bundle": model.save(bundle, tmp / "m.safetensors"), "ids": list(hostile.values()),
            "escape_abs": escape_abs}  # fmt: skip


def test_hostile_stac_item_ids_cannot_write_outside_the_output_folder(
    slovenia_catalog: dict[str, Any], tmp_path: Path
) -> None:
    """A real monitoring run (which names a folder per scene) over items with ids that are paths."""
    from workflows import crop_monitoring

    out = tmp_path / "deep" / "er" / "out"
    cfg_path = tmp_path / "monitor.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "hostile", "parcels": {"file": str(slovenia_catalog["parcels"]), "id_field": "field_id"},
        "stac": {"source": str(slovenia_catalog["catalog"])}, "grid": {"resolution": 10},
        "model": str(slovenia_catalog["bundle"]), "predict": {"tile": 64, "halo": 8, "batch_size": 8},
        "outputs": {"dir": str(out)},
    }))  # fmt: skip
    before = {p for p in tmp_path.rglob("*")}
    result = crop_monitoring.run(load_monitor_config(cfg_path))
    assert result.status == "done", result.message
    assert sorted(result.scenes) == sorted(slovenia_catalog["ids"])
    assert not slovenia_catalog["escape_abs"].exists()
    created = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in created if out not in p.parents and p != out and p not in out.parents]
    assert outside == [], outside
    folders = sorted(p.name for p in (out / "predictions").iterdir())
    assert folders == sorted(safety.safe_name(i) for i in slovenia_catalog["ids"])
    for folder in (out / "predictions").iterdir():
        assert (folder / "classes.tif").exists()
    ts = crop_monitoring.read_timeseries(out)  # the data keep the real ids
    assert set(ts["scene_id"]) == set(slovenia_catalog["ids"])


# --------------------------------------------------------------------------- hrefs

REFUSED = [
    "ftp://example.com/B04.tif", "data:image/tiff;base64,AAAA", "javascript:alert(1)", "/vsistdin/",
    "/vsicurl_streaming/http://h/x.tif", "/vsizip//etc/x.zip", "PG:dbname=geounet user=postgres",
    "WMS:http://example.com/wms", "<VRTDataset><VRTRasterBand/></VRTDataset>", "http://h/x.tif\nHost: evil",
    "gopher://h/x", "smb://server/share/x.tif", "az://container/x.tif",
]  # fmt: skip
ALLOWED = ["https://h/B04.tif?x=1", "http://127.0.0.1:8080/a.tif", "s3://bucket/key/B04.tif",
           "gs://bucket/B04.tif", "/data/B04.tif", "relative/B04.tif", "file:///data/B04.tif"]  # fmt: skip


@pytest.mark.parametrize("href", REFUSED)
def test_hrefs_with_other_schemes_are_refused(href: str) -> None:
    with pytest.raises(InputError, match="refusing to read it"):
        safety.check_href(href)
    with pytest.raises(InputError):
        scenes.vsi_path(href)  # the one place hrefs become GDAL paths


@pytest.mark.parametrize("href", ALLOWED)
def test_allowed_hrefs(href: str) -> None:
    assert safety.check_href(href) == href
    scenes.vsi_path(href)


def test_allowed_schemes_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOUNET_HREF_SCHEMES", "https")
    with pytest.raises(InputError, match="GEOUNET_HREF_SCHEMES"):
        safety.check_href("/data/B04.tif")
    assert safety.check_href("https://h/B04.tif")
    monkeypatch.setenv("GEOUNET_HREF_SCHEMES", "https,az")
    assert scenes.vsi_path("az://c/x.tif") == "/vsiaz/c/x.tif"


# --------------------------------------------------------------------------- YAML, pickle, SQL


@pytest.mark.parametrize("loader", [load_run_config, load_monitor_config, load_train_config])
def test_yaml_is_loaded_safely(loader: Any, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        loader(path)
    assert not marker.exists()


def test_no_unsafe_deserializers_in_the_code() -> None:
    """Static guard: nothing in the package or workflows unpickles or loads YAML unsafely."""
    pattern = re.compile(
        r"\b(pickle\.loads?|cPickle|dill\.|joblib\.load|torch\.load|np\.load\([^)]*allow_pickle=True|"
        r"yaml\.load\(|yaml\.unsafe_load|yaml\.full_load|yaml\.Loader|marshal\.loads|shelve\.open|"
        r"(?<![.\w])eval\(|(?<![.\w])exec\()"
    )
    hits = []
    for path in [*(REPO / "geounet").rglob("*.py"), *(REPO / "workflows").rglob("*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line) and not line.lstrip().startswith("#"):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hits == []


class _Payload:
    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def test_a_torch_checkpoint_with_a_payload_is_never_unpickled(tmp_path: Path) -> None:
    payload = _Payload()
    payload.marker = str(tmp_path / "UNPICKLED")
    path = tmp_path / "model.safetensors"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": payload}, path)
    with pytest.raises(BundleError, match="not a geounet bundle"):
        model.load(path)
    with pytest.raises(BundleError):
        model.read_metadata(path)
    assert not (tmp_path / "UNPICKLED").exists()
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps(payload))
    with pytest.raises(BundleError):
        model.load(raw)
    assert not (tmp_path / "UNPICKLED").exists()


HOSTILE_SQL = "x'); DROP TABLE geounet_runs; --"


def test_state_store_sql_is_parameterized(tmp_path: Path) -> None:
    store = StateStore.open(None, out_dir=tmp_path)
    try:
        run_id = store.start_run(HOSTILE_SQL)
        store.mark_processed(HOSTILE_SQL, [(HOSTILE_SQL, None, 3), ("b' OR '1'='1", None, 1)], run_id=run_id)
        store.finish_run(run_id, status="done", message=HOSTILE_SQL)
        assert store.processed(HOSTILE_SQL) == {HOSTILE_SQL, "b' OR '1'='1"}
        assert store.processed("other") == set()
        assert store.runs(HOSTILE_SQL)[0]["message"] == HOSTILE_SQL
        with store.lock(HOSTILE_SQL):
            pass
    finally:
        store.close()
    for p in tmp_path.iterdir():  # the lock file is named after the monitor: a safe name
        assert re.fullmatch(r"[A-Za-z0-9._-]+", p.name), p.name


def test_geopackage_style_sql_is_parameterized(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    layer = "polys'; DROP TABLE gpkg_contents; --"
    classes = (
        ClassInfo(0, "a'); DELETE FROM layer_styles; --", "#000000"),
        ClassInfo(1, 'b"<x>&', "#ffffff"),
    )
    path = tmp_path / "p.gpkg"
    gpd.GeoDataFrame(
        {"class_id": [0, 1]}, geometry=[box(0, 0, 1, 1), box(1, 1, 2, 2)], crs="EPSG:32633"
    ).to_file(path, layer=layer)
    publish.add_gpkg_style(path, layer=layer, classes=classes)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT f_table_name, styleQML FROM layer_styles").fetchall()
        tables = {r[0] for r in db.execute("SELECT table_name FROM gpkg_contents")}
    assert rows[0][0] == layer and "DELETE FROM layer_styles" in rows[0][1]
    assert layer in tables


# --------------------------------------------------------------------------- credentials


def test_redaction() -> None:
    text = (
        f"GET https://pc.blob.core.windows.net/c/B04.tif?st=2024&se=2030&sp=rl&sv=2021&sr=c&sig={SECRET_SIG} "
        f"s3://{SECRET_KEY_ID}:hunter2password@bucket/x.tif aws_secret_access_key={SECRET_AMZ} "
        f"Authorization: Bearer {SECRET_SIG} /a.tif?X-Amz-Signature={SECRET_AMZ}"
    )
    out = safety.redact(text)
    assert not any(s in out for s in SECRETS), out
    assert "https://pc.blob.core.windows.net/c/B04.tif?" in out and "s3://" in out
    assert safety.redact("https://h/B04.tif?band=4") == "https://h/B04.tif?band=4"


@pytest.fixture(scope="module")
def signed(flaky_server: FlakyServer, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog whose asset hrefs carry a SAS token and S3-style keys (the server ignores them)."""
    root = flaky_server.root / "signed"
    root.mkdir(parents=True, exist_ok=True)
    cog = root / "RGB.byte.tif"
    rio_copy(str(data_dir / "landsat7-rgb" / "RGB.byte.tif"), str(cog), driver="COG", blocksize=256)
    with rasterio.open(cog) as ds:
        bbox = list(rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    base = flaky_server.url.replace("http://", f"http://{SECRET_KEY_ID}:hunter2password@")
    hrefs = {
        "signed-good": f"{flaky_server.url}/signed/signed/RGB.byte.tif?st=2024-01-01&se=2030-01-01&sp=rl&sv=2021-06-08&sr=c&sig={SECRET_SIG}",
        "signed-missing": f"{base}/signed/signed/missing.tif?X-Amz-Credential={SECRET_KEY_ID}%2F20240101&X-Amz-Signature={SECRET_AMZ}",
    }  # fmt: skip
    west, south, east, north = bbox
    geom = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }
    cat = pystac.Catalog("signed", "signed hrefs")
    for item_id, href in hrefs.items():
        item = pystac.Item(item_id, geom, bbox, pystac.utils.str_to_datetime("2020-01-01T00:00:00Z"), {})
        asset = pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data"])
        asset.extra_fields["eo:bands"] = [{"name": b, "common_name": b} for b in BANDS]
        item.add_asset("data", asset)
        cat.add_item(item)
    folder = tmp_path_factory.mktemp("signed-catalog")
    cat.normalize_hrefs(str(folder))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


def test_credentials_never_reach_logs_or_outputs(
    signed: Path, flaky_server: FlakyServer, tiny: Path, tmp_path: Path
) -> None:
    flaky_server.set(fail=0.0)
    out = tmp_path / "out"
    env = dict(os.environ, GEOUNET_EXECUTOR="local", CPL_DEBUG="ON", CPL_CURL_VERBOSE="NO")
    done = subprocess.run(
        [sys.executable, "-m", "geounet", "-v", "predict", "--stac", str(signed), "--model", str(tiny),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-3000:]
    manifest = json.loads((out / "run.json").read_text())
    assert [f["id"] for f in manifest["failed_scenes"]] == ["signed-missing"]
    assert "REDACTED" in json.dumps(manifest)  # the hrefs are there, their secrets are not
    assert "signed-missing" in logs and "404" in logs  # the failure was logged...
    for secret in SECRETS:  # ...without the secrets, and no output holds them
        assert secret not in logs, f"{secret} in the logs"
        for path in out.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"{secret} in {path.name}"


# --------------------------------------------------------------------------- concurrency


_WAIT_THEN_RUN = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from geounet.cli import main\n"  # the slow imports happen before the signal
    "import geounet.cli.predict, geounet.pipeline\n"
    "go = Path(sys.argv[1])\n"
    "while not go.exists():\n"
    "    time.sleep(0.01)\n"
    "main(sys.argv[2:])\n"
)


def test_two_predict_runs_into_one_folder_refuse_the_second(
    data_dir: Path, tiny: Path, tmp_path: Path
) -> None:
    """Two real processes: the second is refused at once while the first is writing; the first finishes."""
    out = tmp_path / "out"
    # many small tiles one at a time, so the first run is still writing when the second starts
    args = ["predict", str(data_dir / "landsat7-rgb" / "RGB.byte.tif"), "--model", str(tiny), "--out", str(out),
            "--executor", "local", "--tile", "80", "--halo", "24", "--batch-size", "1"]  # fmt: skip
    go = tmp_path / "go"
    second = subprocess.Popen([sys.executable, "-c", _WAIT_THEN_RUN, str(go), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = subprocess.Popen([sys.executable, "-m", "geounet", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lock = FileLock(str(out / ".geounet.lock"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the first run holds the lock
            try:
                lock.acquire(timeout=0)
                lock.release()
            except Timeout:
                break
            assert first.poll() is None, first.communicate()
            time.sleep(0.02)
        else:
            pytest.fail("the first run never took the output lock")
        go.touch()
        _, err2 = second.communicate(timeout=120)
        assert first.poll() is None, "the first run must still be running when the second is refused"
        assert second.returncode == 1, err2
        last = err2.strip().splitlines()[-1]
        assert last.startswith("ExecutionError: another geounet job is writing into"), last
        assert str(out) in last and "wait for it or choose another --out" in last
        _, stderr = first.communicate(timeout=300)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert first.returncode == 0, stderr[-2000:]
    with rasterio.open(out / "classes.tif") as ds:
        classes = ds.read(1)
    assert classes.shape == (718, 791) and np.isin(classes, [0, 1, 255]).all()
    assert json.loads((out / "run.json").read_text())["counts"]["predicted"] > 0
