"""The catalogue of bad inputs, each with its exact behaviour through the real CLI.

For every case: exit code 1; the last line on stderr is ``ErrorType: message`` where the
message names the offending value and says how to fix it; nothing that looks finished
(rasters, polygons, manifest, STAC Item...) is left in the output folder. In a multi-scene
job a failing scene is left out, the others are processed and the failure is recorded in the
run manifest (``run.json`` → ``failed_scenes``). A full disk fails cleanly and a rerun after
freeing space completes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
import safetensors.numpy
import yaml
from fixtures_flaky import FlakyServer
from rasterio.shutil import copy as rio_copy

from geounet import model
from geounet.cli import main as cli_main
from geounet.model import ClassInfo, ModelSpec, networks

BANDS = ("red", "green", "blue")
CLASSES = (ClassInfo(0, "dark", "#000000"), ClassInfo(1, "bright", "#ffffff"))
#: Files whose presence says "this run finished".
FINISHED = (
    "classes.tif", "confidence.tif", "run.json", "item.json", "areas.csv", "quicklook.png", "project.qgs",
    "polygons.gpkg", "polygons.parquet", "polygons.fgb", "timeseries.gpkg", "coverage.json",
)  # fmt: skip
BOWTIE = "POLYGON ((-78 23, -76 25, -76 23, -78 25, -78 23))"


# --------------------------------------------------------------------------- helpers


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``geounet ARGS`` in-process as a user would; (exit code, last stderr line)."""
    capsys.readouterr()
    try:
        cli_main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    return code, lines[-1] if lines else ""


def assert_fails(
    code: int, line: str, error: str, fragments: tuple[str, ...], out: Path | None = None
) -> None:
    """Exit 1, one ``ErrorType: message`` line holding every fragment, nothing finished in ``out``."""
    assert code == 1, line
    assert line.startswith(f"{error}: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} missing from: {line}"
    if out is not None:
        assert_nothing_finished(out)


def assert_run_not_finished(out: Path) -> None:
    """The weaker guarantee of a failure after the rasters were written (e.g. disk full while
    publishing): no run manifest or STAC Item (written last, they mark a finished run), and every
    file present is complete (each is written under a temporary name and renamed)."""
    assert not (out / "run.json").exists() and not (out / "item.json").exists()
    for p in out.rglob("*.tif"):
        if not p.name.startswith("."):
            with rasterio.open(p) as ds:
                ds.read()
    for p in out.rglob("*.gpkg"):
        gpd.read_file(p, layer="polygons")


def assert_nothing_finished(out: Path) -> None:
    if not out.exists():
        return
    visible = sorted(
        p.name for p in out.rglob("*") if not any(part.startswith(".") for part in p.relative_to(out).parts)
    )
    assert not [n for n in visible if n in FINISHED], f"finished-looking outputs left in {out}: {visible}"
    for p in out.rglob(
        "*"
    ):  # whatever is left must be complete, never a half-written file under a final name
        if p.suffix == ".tif" and not p.name.startswith("."):
            with rasterio.open(p) as ds:
                ds.read()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random 3-band (red, green, blue) U-Net bundle."""
    bundle = networks.init_bundle(
        bands=BANDS,
        classes=CLASSES,
        spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4),
        normalization=model.Normalization(mean=(60.0,) * 3, std=(40.0,) * 3),
        seed=2,
    )
    return model.save(bundle, tmp_path_factory.mktemp("bundles") / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = networks.init_bundle(
        bands=("blue", "green", "red", "nir"),
        classes=CLASSES,
        spec=ModelSpec(in_channels=4, n_classes=2, depth=2, width=4),
        seed=2,
    )
    return model.save(bundle, tmp_path_factory.mktemp("bundles4") / "tiny4.safetensors")


@pytest.fixture(scope="module")
def files(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real inputs and their broken variants (all derived from the real data, byte-level damage)."""
    tmp = tmp_path_factory.mktemp("inputs")
    rgb = data_dir / "landsat7-rgb" / "RGB.byte.tif"
    out: dict[str, Path] = {"rgb": rgb}
    raw = rgb.read_bytes()
    out["truncated_tif"] = tmp / "truncated.tif"
    out["truncated_tif"].write_bytes(raw[: len(raw) * 6 // 10])
    cog = tmp / "rgb_cog.tif"
    rio_copy(str(rgb), str(cog), driver="COG", compress="DEFLATE", blocksize=256)
    out["cog"] = cog
    cog_bytes = cog.read_bytes()
    out["truncated_cog"] = tmp / "truncated_cog.tif"
    out["truncated_cog"].write_bytes(cog_bytes[: len(cog_bytes) * 6 // 10])  # header and overviews intact
    damaged = bytearray(cog_bytes)
    mid = len(damaged) // 2
    damaged[mid : mid + 20000] = b"\x13" * 20000  # garbage over compressed tiles: decoding fails
    out["corrupt_cog"] = tmp / "corrupt_cog.tif"
    out["corrupt_cog"].write_bytes(bytes(damaged))
    jp2 = (data_dir / "s2-brandenburg-20170216" / "IMG_DATA" / "T33UUU_20170216T102101_B02.jp2").read_bytes()
    out["truncated_jp2"] = tmp / "B02_truncated.jp2"
    out["truncated_jp2"].write_bytes(jp2[: len(jp2) // 3])  # header intact, codestream cut: decoding fails
    with rasterio.open(rgb) as ds:
        profile = ds.profile
    out["all_nodata"] = tmp / "all_nodata.tif"
    with rasterio.open(out["all_nodata"], "w", **profile) as dst:  # nodata=0 and every pixel 0
        dst.write(np.zeros((profile["count"], profile["height"], profile["width"]), "uint8"))
    out["no_crs"] = tmp / "no_crs.tif"
    with (
        rasterio.open(rgb) as src,
        rasterio.open(
            out["no_crs"], "w", **(dict(src.profile, crs=None, transform=rasterio.Affine.identity()))
        ) as dst,
    ):
        dst.write(src.read())
    return out


def _item(item_id: str, href: str, bbox: list[float]) -> pystac.Item:
    west, south, east, north = bbox
    geom = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }
    item = pystac.Item(item_id, geom, bbox, None,
                       {"start_datetime": "1999-04-15T00:00:00Z", "end_datetime": "2022-04-06T23:59:59Z"},
                       collection="landsat")  # fmt: skip
    asset = pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data"])
    asset.extra_fields["eo:bands"] = [{"name": b, "common_name": b} for b in BANDS]
    item.add_asset("data", asset)
    return item


def _catalog(folder: Path, items: list[pystac.Item]) -> Path:
    cat = pystac.Catalog(folder.name, "test catalog")
    for it in items:
        cat.add_item(it)
    cat.normalize_hrefs(str(folder))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


@dataclass
class Stac:
    bbox: list[float]
    good: Path  # one good scene
    mixed: Path  # the good scene + one scene per kind of broken asset
    broken: Path  # only broken scenes
    broken_ids: dict[str, str]  # scene id → fragment its recorded error must hold


@pytest.fixture(scope="module")
def stac(files: dict[str, Path], flaky_server: FlakyServer, tmp_path_factory: pytest.TempPathFactory) -> Stac:
    tmp = tmp_path_factory.mktemp("catalogs")
    with rasterio.open(files["cog"]) as ds:
        bbox = list(rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    forbidden = flaky_server.root / "bad-input" / "forbidden.tif"
    forbidden.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(files["cog"], forbidden)  # exists, but the server answers 403
    broken = {
        "asset-404": (flaky_server.href("bad-input", flaky_server.root / "bad-input" / "missing.tif"), "404"),
        "asset-403": (flaky_server.href("bad-input", forbidden), "403"),
        "asset-no-crs": (str(files["no_crs"]), "has no CRS"),
        "asset-ftp": ("ftp://example.com/RGB.byte.tif", "has scheme 'ftp'"),
        "asset-inline-vrt": ("<VRTDataset><VRTRasterBand/></VRTDataset>", "inline XML"),
    }
    good = _item("good-scene", str(files["cog"]), bbox)
    bad_items = [_item(i, href, bbox) for i, (href, _) in broken.items()]
    return Stac(
        bbox=bbox,
        good=_catalog(tmp / "good", [good.clone()]),
        mixed=_catalog(tmp / "mixed", [good.clone(), *[b.clone() for b in bad_items]]),
        broken=_catalog(tmp / "broken", [b.clone() for b in bad_items]),
        broken_ids={i: frag for i, (_, frag) in broken.items()},
    )


@contextlib.contextmanager
def _mounted(path: Path, options: str) -> Iterator[bool]:
    """A tmpfs at ``path`` (root only); yields False where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    try:
        yield done.returncode == 0
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


# --------------------------------------------------------------------------- predict: one file


@dataclass(frozen=True)
class Case:
    """One bad input of ``geounet predict``: how to make it, what must be said."""

    name: str
    make: Callable[[dict[str, Path], Path, dict[str, Path]], list[str]]  # → predict args after SOURCE
    error: str
    fragments: Callable[[dict[str, Path], Path], tuple[str, ...]]


def _truncated_bundle(files: dict[str, Path], tmp: Path, b: dict[str, Path]) -> list[str]:
    data = b["tiny"].read_bytes()
    bad = tmp / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    return [str(files["rgb"]), "--model", str(bad)]


def _wrong_metadata_bundle(files: dict[str, Path], tmp: Path, b: dict[str, Path]) -> list[str]:
    data = b["tiny"].read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["geounet"])
    meta["mlm:input"][0]["bands"] = ["red", "green"]  # 2 band names for a 3-channel network
    weights = safetensors.numpy.load(data)
    bad = tmp / "wrong_metadata.safetensors"
    bad.write_bytes(safetensors.numpy.save(weights, metadata={"geounet": json.dumps(meta)}))
    return [str(files["rgb"]), "--model", str(bad)]


class _Payload:
    """Unpickling this would create a marker file: a bundle must never be unpickled."""

    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def _pickle_bundle(files: dict[str, Path], tmp: Path, b: dict[str, Path]) -> list[str]:
    payload = _Payload()
    payload.marker = str(tmp / "UNPICKLED")
    bad = tmp / "model.safetensors"
    bad.write_bytes(pickle.dumps({"state_dict": payload}))
    return [str(files["rgb"]), "--model", str(bad)]


PREDICT_CASES = [
    Case("missing-file", lambda f, t, b: [str(t / "nope.tif"), "--model", str(b["tiny"])],
         "InputNotFoundError", lambda f, t: (str(t / "nope.tif"), "does not exist; check the path")),
    Case("truncated-geotiff", lambda f, t, b: [str(f["truncated_tif"]), "--model", str(b["tiny"])],
         "InputError", lambda f, t: (str(f["truncated_tif"]), "check that it is a complete GeoTIFF")),
    Case("truncated-cog", lambda f, t, b: [str(f["truncated_cog"]), "--model", str(b["tiny"])],
         "ReadError", lambda f, t: (str(f["truncated_cog"]), "re-download or re-export it")),
    Case("corrupt-cog", lambda f, t, b: [str(f["corrupt_cog"]), "--model", str(b["tiny"])],
         "ReadError", lambda f, t: (str(f["corrupt_cog"]), "Decoding error", "re-download or re-export it")),
    Case("jpeg2000-undecodable", lambda f, t, b: [str(f["truncated_jp2"]), "--model", str(b["tiny"]), "--bands", "1,1,1"],
         "ReadError", lambda f, t: (str(f["truncated_jp2"]), "opj_get_decoded_tile", "re-download or re-export it")),
    Case("band-count", lambda f, t, b: [str(f["rgb"]), "--model", str(b["tiny4"])],
         "InputError", lambda f, t: ("has 3 band(s)", "expects 4: blue,green,red,nir", "pass --bands with 4")),
    Case("band-list", lambda f, t, b: [str(f["rgb"]), "--model", str(b["tiny"]), "--bands", "1,2"],
         "InputError", lambda f, t: ("--bands 1,2 must name 3 band(s) in 1..3", "fix the band list")),
    Case("band-out-of-range", lambda f, t, b: [str(f["rgb"]), "--model", str(b["tiny"]), "--bands", "1,2,7"],
         "InputError", lambda f, t: ("--bands 1,2,7", "in 1..3", "fix the band list")),
    Case("all-nodata", lambda f, t, b: [str(f["all_nodata"]), "--model", str(b["tiny"])],
         "InputError", lambda f, t: (str(f["all_nodata"]), "no valid pixel", "check the input's nodata value")),
    Case("batch-0", lambda f, t, b: [str(f["rgb"]), "--model", str(b["tiny"]), "--batch-size", "0"],
         "ConfigError", lambda f, t: ("batch_size=0 must be >= 1",)),
    Case("tile-not-above-2-halo", lambda f, t, b: [str(f["rgb"]), "--model", str(b["tiny"]), "--tile", "64", "--halo", "32"],
         "ConfigError", lambda f, t: ("tile=64 must be > 2*halo=64", "raise --tile / predict.tile", "lower --halo / predict.halo")),
    Case("bundle-missing", lambda f, t, b: [str(f["rgb"]), "--model", str(t / "none.safetensors")],
         "InputNotFoundError", lambda f, t: (str(t / "none.safetensors"), "does not exist", "geounet model init")),
    Case("bundle-truncated", _truncated_bundle,
         "BundleError", lambda f, t: (str(t / "truncated.safetensors"), "is truncated")),
    Case("bundle-wrong-metadata", _wrong_metadata_bundle,
         "BundleError", lambda f, t: (str(t / "wrong_metadata.safetensors"), "inconsistent", "bands")),
    Case("bundle-pickle", _pickle_bundle,
         "BundleError", lambda f, t: (str(t / "model.safetensors"), "is not a geounet bundle (safetensors)")),
]  # fmt: skip


@pytest.mark.parametrize("case", PREDICT_CASES, ids=[c.name for c in PREDICT_CASES])
def test_predict_bad_input(
    case: Case,
    files: dict[str, Path],
    tiny: Path,
    tiny4: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = case.make(files, tmp_path, {"tiny": tiny, "tiny4": tiny4})
    out = tmp_path / "out"
    code, line = run_cli(["predict", *args, "--out", str(out), "--executor", "local"], capsys)
    assert_fails(code, line, case.error, case.fragments(files, tmp_path), out)
    assert not (tmp_path / "UNPICKLED").exists(), "a bundle was unpickled"


def test_output_folder_not_writable(
    files: dict[str, Path], tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ro"
    if os.geteuid() == 0:  # root ignores permission bits: a read-only filesystem refuses even root
        with _mounted(folder, "ro,size=1m") as ok:
            if not ok:
                pytest.fail("running as root but cannot mount a read-only tmpfs; run as a normal user")
            code, line = run_cli(["predict", str(files["rgb"]), "--model", str(tiny), "--out", str(folder / "out"),
                                  "--executor", "local"], capsys)  # fmt: skip
    else:
        folder.mkdir()
        folder.chmod(0o555)
        try:
            code, line = run_cli(["predict", str(files["rgb"]), "--model", str(tiny), "--out", str(folder / "out"),
                                  "--executor", "local"], capsys)  # fmt: skip
        finally:
            folder.chmod(0o755)
    assert_fails(code, line, "WriteError", (str(folder / "out"), "choose a writable --out"))


def test_output_path_is_a_file(
    files: dict[str, Path], tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    code, line = run_cli(["predict", str(files["rgb"]), "--model", str(tiny), "--out", str(blocker / "sub"),
                          "--executor", "local"], capsys)  # fmt: skip
    assert_fails(
        code, line, "WriteError", (str(blocker / "sub"), "Not a directory", "choose a writable --out")
    )
    # --out naming a file itself is a usage error (click's exit code 2), with the value
    code, line = run_cli(["predict", str(files["rgb"]), "--model", str(tiny), "--out", str(blocker)], capsys)
    assert code == 2 and str(blocker) in line and "is a file" in line
    assert blocker.read_text() == "a file where the output folder should be"


# --------------------------------------------------------------------------- full disk


def _fill(folder: Path, leave_kib: int) -> Path:
    free = shutil.disk_usage(folder).free
    filler = folder / "filler"
    with open(filler, "wb") as f:
        f.truncate(0)
        os.posix_fallocate(f.fileno(), 0, max(free - leave_kib * 1024, 0))
    return filler


def test_full_disk_fails_cleanly_and_a_rerun_completes(
    files: dict[str, Path], tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2 MiB tmpfs with ~600 KiB free: the COGs do not fit. Where tmpfs cannot be mounted
    (not root), the same run is limited with RLIMIT_FSIZE in a child process instead."""
    disk = tmp_path / "disk"
    args = ["predict", str(files["cog"]), "--model", str(tiny), "--executor", "local"]
    with _mounted(disk, "size=2m") as ok:
        if not ok:
            _full_disk_by_rlimit(args, tmp_path)
            return
        out = disk / "out"
        filler = _fill(disk, leave_kib=600)
        code, line = run_cli([*args, "--out", str(out)], capsys)
        assert_fails(code, line, "WriteError", (str(out),))
        assert "No space left on device" in line or "disk is probably full" in line, line
        assert_run_not_finished(out)
        filler.unlink()  # free the space: the rerun completes (reusing the tiles it had recorded)
        code, line = run_cli([*args, "--out", str(out)], capsys)
        assert code == 0, line
        with rasterio.open(out / "classes.tif") as ds:
            assert ds.read().shape == (1, 718, 791)
        assert json.loads((out / "run.json").read_text())["counts"]["tiles"] > 0
        assert not (out / ".geounet-run").exists()


def _full_disk_by_rlimit(args: list[str], tmp: Path) -> None:
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "from geounet.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    out = tmp / "out"
    done = subprocess.run(
        [sys.executable, "-c", code, *args, "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("WriteError: ")
    assert_run_not_finished(out)
    done = subprocess.run(
        [sys.executable, "-m", "geounet", *args, "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- STAC


def test_multi_scene_job_leaves_failing_scenes_out_and_records_them(
    stac: Stac, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, line = run_cli(["predict", "--stac", str(stac.mixed), "--model", str(tiny), "--out", str(out),
                          "--executor", "local"], capsys)  # fmt: skip
    assert code == 0, line
    manifest = json.loads((out / "run.json").read_text())
    assert [s["id"] for s in manifest["scenes"]] == ["good-scene"]
    failed = {f["id"]: f["error"] for f in manifest["failed_scenes"]}
    assert set(failed) == set(stac.broken_ids)
    for scene_id, fragment in stac.broken_ids.items():
        assert fragment in failed[scene_id], (scene_id, failed[scene_id])
        assert scene_id in failed[scene_id]
    with rasterio.open(out / "classes.tif") as ds:  # the good scene was processed in full
        assert (ds.read(1) != 255).mean() > 0.5


def test_every_scene_failing_is_an_error(
    stac: Stac, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, line = run_cli(["predict", "--stac", str(stac.broken), "--model", str(tiny), "--out", str(out),
                          "--executor", "local"], capsys)  # fmt: skip
    assert_fails(code, line, "ReadError", ("no scene can be read", "asset-"), out)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def flaky(flaky_server: FlakyServer) -> Iterator[FlakyServer]:
    flaky_server.set(fail=0.0)
    yield flaky_server
    flaky_server.set(fail=0.0)


STAC_CASES: list[tuple[str, Callable[[Stac, FlakyServer], list[str]], str, Callable[[Stac, FlakyServer], tuple[str, ...]]]] = [
    ("empty-search", lambda s, f: ["--stac", str(s.good), "--datetime", "1980-01-01/1980-12-31"],
     "SearchError", lambda s, f: ("no scenes match", "datetime=1980-01-01/1980-12-31", "widen the bbox/aoi or datetime")),
    ("aoi-outside-every-scene", lambda s, f: ["--stac", str(s.good), "--bbox", "10,50,11,51"],
     "SearchError", lambda s, f: ("no scenes match", "bbox=10,50,11,51", "widen the bbox/aoi")),
    ("aoi-self-intersecting", lambda s, f: ["--stac", str(s.good), "--aoi", BOWTIE],
     "InputError", lambda s, f: ("AOI WKT", "is not a valid geometry", "Self-intersection", "fix it")),
    ("stac-unreachable", lambda s, f: ["--stac", f"http://127.0.0.1:{_closed_port()}/api"],
     "SearchError", lambda s, f: ("http://127.0.0.1:", "Connection refused", "check the URL and that the server is up")),
    ("stac-500", lambda s, f: (f.set(fail=1.0, modes="500"), ["--stac", f"{f.url}/api-500/"])[1],
     "SearchError", lambda s, f: (f"{f.url}/api-500/", "failed after 3 retries", "check the URL and that the server is up")),
    ("stac-malformed-json", lambda s, f: (f.set(fail=1.0, modes="garbage"), ["--stac", f"{f.url}/api-json/"])[1],
     "SearchError", lambda s, f: (f"{f.url}/api-json/", "malformed JSON", "check that the URL is a STAC API root")),
    ("static-catalog-malformed-json", lambda s, f: (f.set(fail=1.0, modes="garbage"), ["--stac", f"{f.url}/c/catalog.json"])[1],
     "SearchError", lambda s, f: (f"{f.url}/c/catalog.json", "is not a readable STAC catalog", "check the file")),
]  # fmt: skip


@pytest.mark.parametrize("name,make,error,fragments", STAC_CASES, ids=[c[0] for c in STAC_CASES])
def test_stac_bad_input(
    name: str,
    make: Callable[[Stac, FlakyServer], list[str]],
    error: str,
    fragments: Callable[[Stac, FlakyServer], tuple[str, ...]],
    stac: Stac,
    flaky: FlakyServer,
    tiny: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    args = make(stac, flaky)
    code, line = run_cli(
        ["predict", *args, "--model", str(tiny), "--out", str(out), "--executor", "local"], capsys
    )
    assert_fails(code, line, error, fragments(stac, flaky), out)


# --------------------------------------------------------------------------- YAML configs


def _run_config(tmp: Path, stac: Stac, tiny: Path, **changes: Any) -> Path:
    west, south = stac.bbox[:2]
    cfg: dict[str, Any] = {
        "name": "bad-input",
        "aoi": {"bbox": [west + 0.1, south + 0.1, west + 0.3, south + 0.3]},
        "stac": {"source": str(stac.good)},
        "grid": {"resolution": 300},
        "model": str(tiny),
        "predict": {"batch_size": 4},
        "execution": {"executor": "local"},
        "outputs": {"dir": str(tmp / "out")},
    }
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(leaf)
        else:
            node[leaf] = value
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


_DELETE = object()

YAML_CASES: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    ("typo-key", {"predcit": {"tile": 128}}, "ConfigError", ("unknown field predcit", "check its spelling")),
    ("typo-nested-key", {"predict__hallo": 8}, "ConfigError", ("unknown field predict.hallo", "check its spelling")),
    ("wrong-type", {"predict__batch_size": "eight"}, "ConfigError", ("predict.batch_size='eight'", "valid integer", "--set predict.batch_size=")),
    ("tile-not-above-2-halo", {"predict__tile": 64, "predict__halo": 32}, "ConfigError", ("tile=64 must be > 2*halo=64", "raise predict.tile to at least", "or lower predict.halo")),
    ("batch-0", {"predict__batch_size": 0}, "ConfigError", ("predict.batch_size=0", "greater than or equal to 1")),
    ("missing-required", {"model": _DELETE}, "ConfigError", ("model is required", "add it to the YAML")),
    ("aoi-self-intersecting", {"aoi": {"wkt": BOWTIE}}, "InputError", ("AOI WKT", "is not a valid geometry", "Self-intersection")),
    ("aoi-outside-every-scene", {"aoi": {"bbox": [10, 50, 11, 51]}}, "SearchError", ("no scenes match", "widen the bbox/aoi")),
]  # fmt: skip


@pytest.mark.parametrize("name,changes,error,fragments", YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_run_config_bad_input(
    name: str,
    changes: dict[str, Any],
    error: str,
    fragments: tuple[str, ...],
    stac: Stac,
    tiny: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _run_config(tmp_path, stac, tiny, **changes)
    code, line = run_cli(["run", str(path), "--executor", "local"], capsys)
    assert_fails(code, line, error, fragments, tmp_path / "out")
    if error == "ConfigError" and name != "aoi-self-intersecting":
        assert str(path) in line  # the file is named


def test_yaml_syntax_error_names_the_file(
    stac: Stac, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: x\npredict:\n  tile: [128\n")
    code, line = run_cli(["run", str(path)], capsys)
    assert_fails(code, line, "ConfigError", (str(path), "is not valid YAML", "fix the file"))


# --------------------------------------------------------------------------- parcels (monitoring)


def _monitor_config(tmp: Path, stac: Stac, parcels: Path) -> Path:
    cfg = {
        "name": "bad-parcels",
        "parcels": {"file": str(parcels), "id_field": "field_id"},
        "stac": {"source": str(stac.good)},
        "outputs": {"dir": str(tmp / "out")},
    }
    path = tmp / "monitor.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def parcels(data_dir: Path) -> gpd.GeoDataFrame:
    frame = gpd.read_file(data_dir / "parcels" / "nl_brp_gewaspercelen_2023_sample.gpkg").head(6)
    frame["field_id"] = [f"f{i}" for i in range(len(frame))]
    return frame[["field_id", "geometry"]]


def test_parcels_with_duplicate_ids(
    parcels: gpd.GeoDataFrame, stac: Stac, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = parcels.copy()
    frame.loc[frame.index[3], "field_id"] = "f1"
    path = tmp_path / "parcels.gpkg"
    frame.to_file(path)
    code, line = run_cli(["monitor", "run", str(_monitor_config(tmp_path, stac, path))], capsys)
    assert_fails(
        code,
        line,
        "InputError",
        ("field_id", "is not unique", "f1", "choose a unique id column"),
        tmp_path / "out",
    )


def test_parcels_mixing_crs(
    parcels: gpd.GeoDataFrame, stac: Stac, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Half the parcels pasted in lon/lat into a file whose CRS is the Dutch RD grid (metres)."""
    crs = parcels.crs
    assert crs is not None and not crs.is_geographic
    lonlat = parcels.to_crs("EPSG:4326")
    mixed = gpd.GeoDataFrame(
        {"field_id": parcels["field_id"]},
        geometry=list(parcels.geometry[:3]) + list(lonlat.geometry[3:]),
        crs=crs,
    )
    path = tmp_path / "parcels.gpkg"
    mixed.to_file(path)
    code, line = run_cli(["monitor", "run", str(_monitor_config(tmp_path, stac, path))], capsys)
    assert_fails(code, line, "InputError", ("parcels f3, f4, f5", "mixes coordinate systems", "reproject every parcel"),
                 tmp_path / "out")  # fmt: skip
