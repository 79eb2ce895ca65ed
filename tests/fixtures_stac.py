"""Real STAC components on loopback: a range-capable asset HTTP server and a pgstac STAC API.

``stac_assets`` (session): converts the real scenes of the data folder into COGs the way
public archives serve them, serves them with RangeHTTPServer on 127.0.0.1 (GDAL's
/vsicurl/ needs range requests), and describes them as STAC items (pystac, with the
eo/proj/raster extensions) plus a static catalog of the same items:

* ``sentinel-2-l1c``: the Brandenburg scene (13 single-band COGs, 10/20/60 m, keyed
  ``B01``..``B12``/``B8A`` like Planetary Computer) and the five Slovenia dates (one
  13-band COG each). Cloud cover is honest: Slovenia's from eo-learn's own cloud masks
  (dates 0-1 fully cloudy, 2-4 clear); Brandenburg's is the share of pixels over the
  L1C cirrus threshold (B10 reflectance > 0.012): 0 %.
* ``landsat-7-rgb``: the Landsat 7 RGB scene, one 3-band asset; its acquisition date is
  unknown, so the item has a ``start_datetime``/``end_datetime`` range (the Landsat 7
  science mission) and no cloud cover.
* ``s2-zone-pair``: two halves of the Brandenburg scene (B04, B08) that overlap by 64
  columns: the eastern half as is (EPSG:32633) and the western half **reprojected by this
  fixture into the neighbouring UTM zone 32N** (EPSG:32632), for seamless-mosaic tests.

``stac_api`` (session): Debian's PostgreSQL 15 + PostGIS initialised in a 0755 temp dir
(as the ``postgres`` user: initdb refuses root), ``pg_ctl start`` on a free loopback port
with fsync off, ``pypgstac`` migrate + load, then stac-fastapi-pgstac under uvicorn on
another free loopback port. Everything is stopped and removed at session end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from pystac.extensions.eo import Band as EOBand
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterBand, RasterExtension
from rasterio.features import shapes
from rasterio.shutil import copy as rio_copy
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_geom
from rasterio.windows import Window
from shapely import union_all
from shapely.geometry import box, mapping, shape

PG_BIN = Path("/usr/lib/postgresql/15/bin")
S2_COMMON = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge", "B06": "rededge",
    "B07": "rededge", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B10": "cirrus", "B11": "swir16",
    "B12": "swir22",
}  # fmt: skip
S2_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
BRANDENBURG_ID = "S2A_MSIL1C_20170216T102101_T33UUU"
SLOVENIA_DATES = {  # scene index → (acquisition, cloud cover %) from eo-learn's timestamps and CLM masks
    0: ("2015-08-20T10:07:28Z", 100.0),
    1: ("2015-07-31T10:00:09Z", 100.0),
    2: ("2015-09-09T10:00:17Z", 0.0),
    3: ("2015-08-30T10:05:47Z", 0.0),
    4: ("2015-07-11T10:00:08Z", 0.0),
}
PAIR_SPLIT = (800, 736)  # west half: cols [0, 800); east half: cols [736, 1536): 64 columns of overlap


def free_port() -> int:
    """A loopback TCP port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StacAssets:
    """What ``stac_assets`` made: served folder, base URL, items, static catalog, local COGs."""

    root: Path
    url: str
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    local: dict[str, dict[str, Path]] = field(default_factory=dict)  # item id → asset key → COG
    catalog: Path = Path()

    @property
    def catalog_url(self) -> str:
        """The static catalog over HTTP."""
        return f"{self.url}/{self.catalog.relative_to(self.root).as_posix()}"

    def href(self, path: Path) -> str:
        """The HTTP URL of a file under the served folder."""
        return f"{self.url}/{path.relative_to(self.root).as_posix()}"


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server for {url} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server for {url} not ready after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cog(src: Path | rasterio.io.DatasetReader | rasterio.io.MemoryFile, dst: Path, **extra: Any) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    rio_copy(
        src, str(dst), driver="COG", compress="DEFLATE", blocksize=256, overview_resampling="average", **extra
    )
    return dst


def write_cog(data: np.ndarray, profile: dict[str, Any], dst: Path) -> Path:
    """Write ``data`` (rows, cols) or (bands, rows, cols) as a COG like the served ones (test helper)."""
    array = data[None] if data.ndim == 2 else data
    profile = dict(profile, driver="GTiff", count=array.shape[0], dtype=array.dtype.name)
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave"):
        profile.pop(key, None)
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(array)
        with mem.open() as tmp:
            return _cog(tmp, dst)


def _footprint(path: Path) -> tuple[dict[str, Any], list[float]]:
    """Lon/lat footprint of a raster's valid data (its full extent, or its nodata-free part)."""
    with rasterio.open(path) as ds:
        if ds.nodata is None:
            geom = mapping(box(*ds.bounds))
        else:
            mask = ds.dataset_mask() > 0
            polys = [
                shape(g) for g, v in shapes(mask.astype("uint8"), mask=mask, transform=ds.transform) if v
            ]
            geom = mapping(union_all(polys).simplify(ds.res[0]))
        lonlat = transform_geom(ds.crs, "EPSG:4326", geom)
    return lonlat, list(shape(lonlat).bounds)


def _asset(
    item: pystac.Item,
    key: str,
    href: str,
    path: Path,
    bands: list[dict[str, Any]],
    raster: list[dict[str, Any]],
) -> None:
    """Add a COG asset with eo:bands, proj:shape/transform and raster:bands taken from the file."""
    asset = pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data"])
    item.add_asset(key, asset)
    with rasterio.open(path) as ds:
        shape_, transform, dtype = [ds.height, ds.width], list(ds.transform)[:6], ds.dtypes[0]
    EOExtension.ext(asset, add_if_missing=True).bands = [EOBand.create(**b) for b in bands]
    proj = ProjectionExtension.ext(asset, add_if_missing=True)
    proj.shape, proj.transform = shape_, transform
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(**dict(r, data_type=dtype)) for r in raster
    ]


def _item(
    item_id: str,
    collection: str,
    footprint_of: Path,
    *,
    when: str | None,
    cloud: float | None,
    epsg: int,
    extra: dict[str, Any] | None = None,
) -> pystac.Item:
    geom, bbox = _footprint(footprint_of)
    props: dict[str, Any] = dict(extra or {})
    instant = datetime.fromisoformat(when) if when else None
    item = pystac.Item(item_id, geom, bbox, instant, props, collection=collection)
    if cloud is not None:
        EOExtension.ext(item, add_if_missing=True).cloud_cover = cloud
    else:
        EOExtension.ext(item, add_if_missing=True)
    ProjectionExtension.ext(item, add_if_missing=True).epsg = epsg
    return item


def _brandenburg(data_dir: Path, out: Path, url: str) -> tuple[pystac.Item, dict[str, Path]]:
    img = data_dir / "s2-brandenburg-20170216" / "IMG_DATA"
    local: dict[str, Path] = {}
    item = None
    for band in S2_ORDER:
        cog = _cog(img / f"T33UUU_20170216T102101_{band}.jp2", out / "s2-brandenburg" / f"{band}.tif")
        local[band] = cog
    with rasterio.open(img / "T33UUU_20170216T102101_B10.jp2") as ds:
        cirrus = float((ds.read(1) > 120).mean() * 100)  # L1C cirrus test: B10 reflectance > 0.012
    item = _item(
        BRANDENBURG_ID, "sentinel-2-l1c", local["B02"], when="2017-02-16T10:21:01Z", cloud=round(cirrus, 2),
        epsg=32633, extra={"platform": "sentinel-2a", "constellation": "sentinel-2", "s2:mgrs_tile": "33UUU"},
    )  # fmt: skip
    for band, cog in local.items():
        with rasterio.open(cog) as ds:
            res = ds.res[0]
        bands = [{"name": band, "common_name": S2_COMMON[band]}]
        raster = [{"nodata": 0, "spatial_resolution": res, "scale": 0.0001, "offset": 0.0}]
        _asset(item, band, f"{url}/s2-brandenburg/{band}.tif", cog, bands, raster)
    return item, local


def _slovenia(data_dir: Path, out: Path, url: str) -> list[tuple[pystac.Item, dict[str, Path]]]:
    made = []
    for index, (when, cloud) in SLOVENIA_DATES.items():
        src = data_dir / "s2-slovenia-eolearn" / "geotiff" / f"reference_scene_{index}_s2l1c_13band.tif"
        name = f"S2_L1C_slovenia_{when[:10].replace('-', '')}"
        cog = _cog(src, out / "s2-slovenia" / f"{name}.tif")
        item = _item(name, "sentinel-2-l1c", cog, when=when, cloud=cloud, epsg=32633)
        bands = [{"name": b, "common_name": S2_COMMON[b]} for b in S2_ORDER]
        raster = [{"spatial_resolution": 10.0} for _ in S2_ORDER]
        _asset(item, "data", f"{url}/s2-slovenia/{name}.tif", cog, bands, raster)
        paths = {"data": cog, **_slovenia_masks(data_dir, out, when, cog, name)}
        for key, kind in (("CLM", "cloud mask, 1 = cloud"), ("CLP", "cloud probability 0-1")):
            _asset(item, key, f"{url}/s2-slovenia/{paths[key].name}", paths[key], [{"name": key, "description": kind}],
                   [{"spatial_resolution": 10.0}])  # fmt: skip
        made.append((item, paths))
    return made


def _slovenia_masks(data_dir: Path, out: Path, when: str, like: Path, name: str) -> dict[str, Path]:
    """eo-learn's own cloud mask (CLM) and s2cloudless probability (CLP) of that date, as COGs."""
    patch = data_dir / "s2-slovenia-eolearn" / "original" / "TestEOPatch"
    stamps = json.loads((patch / "timestamps.json").read_text())
    t = stamps.index(when.removesuffix("Z"))
    with rasterio.open(like) as ds:
        profile = dict(ds.profile, nodata=None)
    clm = np.load(patch / "mask" / "CLM.npy")[t, ..., 0].astype(np.uint8)
    clp = np.load(patch / "data" / "CLP.npy")[t, ..., 0].astype(np.float32)
    return {
        "CLM": write_cog(clm, profile, out / "s2-slovenia" / f"{name}_CLM.tif"),
        "CLP": write_cog(clp, profile, out / "s2-slovenia" / f"{name}_CLP.tif"),
    }


def _landsat(data_dir: Path, out: Path, url: str) -> tuple[pystac.Item, dict[str, Path]]:
    cog = _cog(data_dir / "landsat7-rgb" / "RGB.byte.tif", out / "landsat7" / "RGB.byte.tif")
    item = _item(
        "LE07_RGB_byte", "landsat-7-rgb", cog, when=None, cloud=None, epsg=32618,
        extra={"start_datetime": "1999-04-15T00:00:00Z", "end_datetime": "2022-04-06T23:59:59Z",
               "platform": "landsat-7"},
    )  # fmt: skip
    bands = [{"name": n, "common_name": n} for n in ("red", "green", "blue")]
    raster = [{"nodata": 0, "spatial_resolution": 300.0} for _ in range(3)]
    _asset(item, "visual-data", f"{url}/landsat7/RGB.byte.tif", cog, bands, raster)
    return item, {"visual-data": cog}


def _zone_pair(local: dict[str, Path], out: Path, url: str) -> list[tuple[pystac.Item, dict[str, Path]]]:
    """The Brandenburg B04/B08 split in two overlapping halves; the western one moved to UTM 32N."""
    west_stop, east_start = PAIR_SPLIT
    made = []
    for part in ("east", "west"):
        paths: dict[str, Path] = {}
        for band in ("B04", "B08"):
            with rasterio.open(local[band]) as src:
                if part == "east":
                    win = Window(east_start, 0, src.width - east_start, src.height)
                    profile = dict(src.profile, width=int(win.width), height=int(win.height),
                                   transform=src.window_transform(win), driver="GTiff")  # fmt: skip
                    data = src.read(1, window=win)
                else:
                    win = Window(0, 0, west_stop, src.height)
                    bounds = src.window_bounds(win)
                    transform, width, height = calculate_default_transform(
                        src.crs, "EPSG:32632", west_stop, src.height, *bounds, resolution=10.0
                    )
                    data = np.zeros((height, width), dtype=src.dtypes[0])
                    reproject(
                        src.read(1, window=win), data, src_transform=src.window_transform(win), src_crs=src.crs,
                        dst_transform=transform, dst_crs="EPSG:32632", resampling=Resampling.nearest,
                        src_nodata=0, dst_nodata=0,
                    )  # fmt: skip
                    profile = dict(src.profile, width=width, height=height, transform=transform,
                                   crs="EPSG:32632", driver="GTiff")  # fmt: skip
            profile.update(nodata=0, count=1)
            profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
            with rasterio.MemoryFile() as mem:
                with mem.open(**profile) as tmp:
                    tmp.write(data, 1)
                with mem.open() as tmp:
                    paths[band] = _cog(tmp, out / "s2-zone-pair" / part / f"{band}.tif")
        epsg = 32633 if part == "east" else 32632
        item = _item(f"{BRANDENBURG_ID}_{part}", "s2-zone-pair", paths["B04"], when="2017-02-16T10:21:01Z",
                     cloud=0.0, epsg=epsg)  # fmt: skip
        for band, cog in paths.items():
            bands = [{"name": band, "common_name": S2_COMMON[band]}]
            raster = [{"nodata": 0, "spatial_resolution": 10.0, "scale": 0.0001, "offset": 0.0}]
            _asset(item, band, f"{url}/s2-zone-pair/{part}/{band}.tif", cog, bands, raster)
        made.append((item, paths))
    return made


def _collection(cid: str, items: list[pystac.Item], description: str) -> pystac.Collection:
    bbox = list(union_all([shape(i.geometry) for i in items]).bounds)
    starts = [i.datetime or datetime.fromisoformat(i.properties["start_datetime"]) for i in items]
    extent = pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[min(starts), max(starts)]]))
    return pystac.Collection(cid, description, extent, license="proprietary")


@pytest.fixture(scope="session")
def stac_assets(data_dir: Path) -> Iterator[StacAssets]:
    """COGs of the real scenes served with range requests on 127.0.0.1, their items and a static catalog."""
    root = Path(tempfile.mkdtemp(prefix="geounet-stac-assets-"))
    port = free_port()
    log = root.parent / f"{root.name}.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "RangeHTTPServer", str(port), "--bind", "127.0.0.1"],
            cwd=root, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/", server, log)
        made = [_brandenburg(data_dir, root, url)]
        made += _slovenia(data_dir, root, url)
        made.append(_landsat(data_dir, root, url))
        made += _zone_pair(made[0][1], root, url)
        assets = StacAssets(root=root, url=url)
        by_collection: dict[str, list[pystac.Item]] = {}
        for item, paths in made:
            assets.items[item.id] = item.to_dict(include_self_link=False)
            assets.local[item.id] = paths
            by_collection.setdefault(item.collection_id or "", []).append(item)
        catalog = pystac.Catalog("geounet-test", "Real scenes of the geounet test data, as COGs on loopback")
        for cid, items in by_collection.items():
            coll = _collection(cid, items, f"geounet test collection {cid}")
            assets.collections[cid] = coll.to_dict(include_self_link=False)
            for it in items:
                coll.add_item(it.clone())
            catalog.add_child(coll)
        catalog.normalize_hrefs(str(root / "catalog"))
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        assets.catalog = root / "catalog" / "catalog.json"
        yield assets
    finally:
        _stop(server)
        shutil.rmtree(root, ignore_errors=True)
        log.unlink(missing_ok=True)


def _pg(*args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, **kw)


@pytest.fixture(scope="session")
def stac_api(stac_assets: StacAssets) -> Iterator[str]:
    """URL of a stac-fastapi-pgstac server on 127.0.0.1 holding every item of ``stac_assets``."""
    if (
        not (PG_BIN / "initdb").exists()
        or not Path("/usr/share/postgresql/15/extension/postgis.control").exists()
    ):
        pytest.fail("PostgreSQL 15 + PostGIS missing: apt-get install -y postgresql-15-postgis-3")
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods
    from pypgstac.migrate import Migrate

    base = Path(tempfile.mkdtemp(prefix="geounet-pgstac-", dir="/tmp"))
    base.chmod(0o755)  # initdb runs as `postgres` and must traverse the parents
    pgdata = base / "data"
    pgdata.mkdir(mode=0o700)
    shutil.chown(pgdata, "postgres", "postgres")
    db_port, api_port = free_port(), free_port()
    started = False
    api: subprocess.Popen[bytes] | None = None
    try:
        _pg(str(PG_BIN / "initdb"), "-D", str(pgdata), "--auth=trust", "-U", "postgres", "--no-sync",
            "-E", "UTF8", "--locale=C")  # fmt: skip
        opts = f"-h 127.0.0.1 -p {db_port} -k {pgdata} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        _pg(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(pgdata),
            "-w",
            "-l",
            str(pgdata / "server.log"),
            "-o",
            opts,
            "start",
        )
        started = True
        dsn = f"postgresql://postgres@127.0.0.1:{db_port}/postgres"
        with PgstacDB(dsn=dsn) as db:
            Migrate(db).run_migration()
            loader = Loader(db)
            loader.load_collections(iter(stac_assets.collections.values()), insert_mode=Methods.insert)
            loader.load_items(iter(stac_assets.items.values()), insert_mode=Methods.insert)
        env = dict(os.environ, PGUSER="postgres", PGPASSWORD="trust", PGHOST="127.0.0.1", PGPORT=str(db_port),
                   PGDATABASE="postgres",
                   # the Transactions extension lets monitoring tests add items night by night
                   ENABLE_TRANSACTIONS_EXTENSIONS="true")  # fmt: skip
        log = base / "api.log"
        with log.open("wb") as sink:
            api = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(api_port), "--log-level", "warning", "--timeout-graceful-shutdown", "1"],
                cwd=base, env=env, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        url = f"http://127.0.0.1:{api_port}"
        _wait_http(url + "/", api, log)
        yield url
    finally:
        if api is not None:
            _stop(api)
        if started:
            _pg(str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON (test helper)."""
    path.write_text(json.dumps(obj))
    return path
