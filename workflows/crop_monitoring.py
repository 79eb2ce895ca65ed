"""Nightly crop monitoring: per-parcel NDVI and class-fraction time series from new scenes only.

``geounet monitor run configs/crop-monitoring.yaml`` (or ``python -m workflows.crop_monitoring``):

1. the parcels file (fields with unique ids) fixes the target grid (UTM of its centroid, or
   ``grid.crs``) and the search area;
2. the STAC source is searched from a look-back period before the **watermark** (the newest
   scene processed so far) and the scenes already processed are dropped (:mod:`geounet.state`);
3. per scene and parcel: pixels with data, pixels the scene's cloud mask calls clear (Landsat
   fmask, Sentinel-2 SCL, or a binary mask), NDVI statistics (mean, median, std) over the clear
   pixels, and, with a model, the segmentation's class fractions and dominant class over them.
   A parcel with less than ``screening.min_valid_fraction`` clear is **screened** (status
   ``cloudy``; ``nodata`` when the scene has no data over it) and gets no statistics;
4. rows are appended to the time-series table ``timeseries.gpkg`` (and ``timeseries.parquet``,
   GeoParquet) keyed by (parcel id, scene id): a key already there is never written twice;
5. only then is the scene marked processed; a scene that fails to read is logged, left
   unmarked (retried next run) and makes the run end ``partial`` (non-zero exit);
6. the change summary (median NDVI drop above ``change.ndvi_drop``, dominant class change,
   of each parcel's newest clear observation of this run against its newest one from earlier
   runs) is printed and written as
   ``changes.csv`` / ``changes.json``.

A lock lets one run per monitor proceed; a second concurrent run returns status ``locked``
at once without touching anything.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from geounet import atomic, jobs, pipeline, safety, search
from geounet import model as model_mod
from geounet.config import MonitorConfig, load_monitor_config
from geounet.errors import InputError, InputNotFoundError, ReadError, SearchError
from geounet.geo import Grid, Window
from geounet.scenes import composite
from geounet.search import Scene
from geounet.state import LockHeld, StateStore

log = logging.getLogger(__name__)

#: Mask values counted as clear, and values meaning "no data", per mask kind.
CLEAR = {"fmask": (0, 1), "scl": (4, 5, 6, 7, 11), "binary": (0,)}
NO_DATA = {"fmask": (255,), "scl": (0,), "binary": ()}
BLOCK = 1024
LAYER = "timeseries"
KEY = ("parcel_id", "scene_id")


@dataclass(frozen=True)
class Parcels:
    """The parcels in the grid's CRS (columns ``parcel_id``, ``geometry``), their lon/lat hull and grid."""

    frame: Any  # GeoDataFrame
    hull: Any  # shapely geometry, lon/lat
    grid: Grid


@dataclass(frozen=True)
class MonitorResult:
    """What a run did. ``status``: ``done``, ``nothing-new``, ``partial`` (a scene failed) or ``locked``."""

    status: str
    message: str = ""
    scenes: tuple[str, ...] = ()
    rows: int = 0
    screened: int = 0
    failed: tuple[str, ...] = ()
    changes: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 done / nothing new / skipped because another run holds the lock; 2 when a scene failed."""
        return 2 if self.status == "partial" else 0


def _check_one_crs(gdf: Any, ids: Any, path: Path) -> None:
    """Refuse parcels outside their CRS's area of use: the file mixes coordinate systems
    (e.g. UTM metres in a lon/lat GeoJSON), which would blow the grid up to the whole zone."""
    area = gdf.crs.area_of_use
    if area is None or area.west > area.east:  # unknown, or crossing the antimeridian: cannot tell
        return
    with np.errstate(all="ignore"):
        b = gdf.geometry.to_crs("EPSG:4326").bounds
    tol = 1.0  # degrees of slack around the published area of use
    bad = (
        ~np.isfinite(b.to_numpy()).all(axis=1)
        | (b["minx"] < area.west - tol).to_numpy()
        | (b["maxx"] > area.east + tol).to_numpy()
        | (b["miny"] < area.south - tol).to_numpy()
        | (b["maxy"] > area.north + tol).to_numpy()
    )
    if bad.any():
        listed = ", ".join(ids[bad].astype(str).tolist()[:5])
        raise InputError(
            f"parcels {listed} in {path} lie outside the area of their CRS {gdf.crs.to_string()} "
            f"({area.west:g},{area.south:g},{area.east:g},{area.north:g}): the file mixes coordinate "
            "systems; reproject every parcel into one CRS (e.g. ogr2ogr -t_srs) before monitoring"
        )


def load_parcels(cfg: MonitorConfig) -> Parcels:
    """Read the parcels, check their ids, and derive the target grid.

    Raises:
        InputNotFoundError, InputError: missing file, missing/duplicate ids, no CRS.
    """
    import geopandas as gpd
    from shapely.geometry import box

    p = cfg.parcels
    if not Path(p.file).exists():
        raise InputNotFoundError(f"parcels file {str(p.file)!r} does not exist; fix parcels.file")
    gdf = gpd.read_file(p.file, layer=p.layer) if p.layer else gpd.read_file(p.file)
    if p.id_field not in gdf.columns:
        raise InputError(
            f"parcels.id_field={p.id_field!r} is not a column of {p.file} (columns: "
            f"{', '.join(c for c in gdf.columns if c != 'geometry')}); set parcels.id_field"
        )
    if gdf.crs is None:
        raise InputError(f"parcels file {p.file} has no CRS; assign one (e.g. ogr2ogr -a_srs)")
    ids = gdf[p.id_field].astype(str)
    _check_one_crs(gdf, ids, p.file)
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise InputError(
            f"parcels.id_field={p.id_field!r} is not unique in {p.file} (e.g. {', '.join(dup[:5])}); "
            "choose a unique id column"
        )
    gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
    lonlat = gdf.to_crs("EPSG:4326")
    hull = box(*lonlat.total_bounds)
    grid = search.target_grid(hull, resolution=cfg.grid.resolution, crs=cfg.grid.crs)
    assert grid.crs is not None
    frame = gpd.GeoDataFrame(
        {"parcel_id": ids.loc[gdf.index].values}, geometry=gdf.geometry.values, crs=gdf.crs
    )
    return Parcels(frame=frame.to_crs(grid.crs).reset_index(drop=True), hull=hull, grid=grid)


def _interval(configured: str | None, watermark: datetime | None, lookback_days: float) -> str | None:
    """The search datetime: the configured window, its start moved up to watermark − look-back.

    Example:
        >>> from datetime import datetime, UTC
        >>> _interval("2010-01-01/2011-12-31", datetime(2010, 6, 30, tzinfo=UTC), 10)
        '2010-06-20T00:00:00+00:00/2011-12-31'
        >>> _interval(None, None, 10) is None
        True
    """
    if watermark is None:
        return configured
    start = watermark - timedelta(days=lookback_days)
    end = ".."
    if configured:
        lo, _, hi = configured.partition("/")
        end = hi or ".."
        if lo not in ("", ".."):
            lo_dt = datetime.fromisoformat(lo.replace("Z", "+00:00"))
            lo_dt = lo_dt if lo_dt.tzinfo else lo_dt.replace(tzinfo=UTC)
            start = max(start, lo_dt)
    return f"{start.isoformat()}/{end}"


def _bands(cfg: MonitorConfig, bundle: model_mod.Bundle | None) -> list[str]:
    names = [cfg.bands.red, cfg.bands.nir] + ([cfg.bands.mask] if cfg.bands.mask else [])
    for b in bundle.bands if bundle else ():
        if b not in names:
            names.append(b)
    return names


def new_scenes(
    cfg: MonitorConfig, parcels: Parcels, *, done: set[str], watermark: datetime | None, bands: Sequence[str]
) -> list[Scene]:
    """Scenes over the parcels not processed yet, oldest first ([] when there is nothing new)."""
    try:
        found = search.scenes(
            cfg.stac.source,
            collections=cfg.stac.collections,
            aoi=parcels.hull,
            datetime=_interval(cfg.stac.datetime, watermark, cfg.lookback_days),
            max_cloud=cfg.stac.max_cloud,
            limit=cfg.stac.limit,
            bands=list(bands),
            preset=cfg.stac.preset,
        )
    except SearchError as exc:
        if str(exc).startswith("no scenes match"):
            return []
        raise
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted((s for s in found if s.id not in done), key=lambda s: (s.datetime or oldest, s.id))


# ------------------------------------------------------------------------------ per-scene statistics


@dataclass
class _Acc:
    pixels: int = 0
    data: int = 0
    clear: int = 0
    ndvi: list[np.ndarray] = field(default_factory=list)
    classes: np.ndarray | None = None


def _blocks(parcels: Parcels, subset: Any) -> list[Window]:
    from shapely.geometry import box

    grid = parcels.grid
    out = []
    for r in range(0, grid.rows, BLOCK):
        for c in range(0, grid.cols, BLOCK):
            win = Window(r, c, min(BLOCK, grid.rows - r), min(BLOCK, grid.cols - c))
            if len(subset.sindex.query(box(*grid.window_grid(win).bounds), predicate="intersects")):
                out.append(win)
    return out


def scene_rows(
    scene: Scene,
    parcels: Parcels,
    cfg: MonitorConfig,
    *,
    classes_path: Path | None = None,
    class_info: Sequence[model_mod.ClassInfo] = (),
) -> list[dict[str, Any]]:
    """One row per parcel the scene's footprint touches: screening, NDVI stats, class fractions."""
    from rasterio.features import rasterize
    from shapely.geometry import box

    frame = parcels.frame
    foot = _footprint_in(scene, parcels.grid.crs)
    subset = frame[frame.intersects(foot)]
    if subset.empty:
        return []
    kind = cfg.bands.mask_kind
    clear_values = np.array(cfg.bands.clear_values or CLEAR[kind])
    nodata_values = np.array(NO_DATA[kind])
    names = [cfg.bands.red, cfg.bands.nir] + ([cfg.bands.mask] if cfg.bands.mask else [])
    n_classes = 256
    accs = {i: _Acc() for i in subset.index}
    grid = parcels.grid
    cls_src = None
    if classes_path is not None:
        import rasterio

        cls_src = rasterio.open(classes_path)
    try:
        for win in _blocks(parcels, subset):
            bgrid = grid.window_grid(win)
            hits = subset.iloc[subset.sindex.query(box(*bgrid.bounds), predicate="intersects")]
            ids = rasterize(
                [(g, int(i) + 1) for i, g in zip(hits.index, hits.geometry, strict=True)],
                out_shape=win.shape,
                transform=bgrid.transform,
                fill=0,
                dtype="int32",
            )
            if not ids.any():
                continue
            data, ok = composite([scene], win, grid=grid, bands=names, apply_scale=True)
            if cfg.bands.mask:
                mask = data[2].astype(np.int64)
                has = ok & ~np.isin(mask, nodata_values)
                clear = has & np.isin(mask, clear_values)
            else:
                has = clear = ok
            red, nir = data[0], data[1]
            total = nir + red
            clear &= total != 0
            ndvi = np.where(clear, (nir - red) / np.where(total == 0, 1, total), np.nan)
            cls = (
                cls_src.read(1, window=((win.row, win.row_stop), (win.col, win.col_stop)))
                if cls_src
                else None
            )
            for idx in np.unique(ids[ids > 0]):
                sel = ids == idx
                acc = accs[int(idx) - 1]
                acc.pixels += int(sel.sum())
                acc.data += int((sel & has).sum())
                c = sel & clear
                acc.clear += int(c.sum())
                if c.any():
                    acc.ndvi.append(ndvi[c])
                    if cls is not None:
                        counts = np.bincount(cls[c].ravel(), minlength=n_classes)[:n_classes]
                        acc.classes = counts if acc.classes is None else acc.classes + counts
    finally:
        if cls_src is not None:
            cls_src.close()
    return [
        _row(scene, subset.loc[i, "parcel_id"], acc, cfg=cfg, class_info=class_info)
        for i, acc in accs.items()
        if acc.pixels > 0
    ]


def _row(
    scene: Scene, parcel_id: str, acc: _Acc, *, cfg: MonitorConfig, class_info: Sequence[model_mod.ClassInfo]
) -> dict[str, Any]:
    valid_fraction = acc.clear / acc.pixels
    if valid_fraction >= cfg.screening.min_valid_fraction:
        status = "ok"
    else:  # screened: by clouds, or by the scene not covering enough of the parcel
        status = "cloudy" if acc.data - acc.clear > acc.pixels - acc.data else "nodata"
    row: dict[str, Any] = {
        "parcel_id": parcel_id,
        "scene_id": scene.id,
        "datetime": scene.datetime.isoformat() if scene.datetime else None,
        "collection": scene.collection,
        "status": status,
        "pixels": acc.pixels,
        "data_fraction": round(acc.data / acc.pixels, 4),
        "valid_fraction": round(valid_fraction, 4),
        "ndvi_mean": None,
        "ndvi_median": None,
        "ndvi_std": None,
    }
    for c in class_info:
        row[f"frac_{c.name}"] = None
    if class_info:
        row["dominant_class"] = None
    if status != "ok":
        return row
    values = np.concatenate(acc.ndvi)
    row.update(
        ndvi_mean=round(float(values.mean()), 5),
        ndvi_median=round(float(np.median(values)), 5),
        ndvi_std=round(float(values.std()), 5),
    )
    if class_info and acc.classes is not None:
        counted = sum(int(acc.classes[c.id]) for c in class_info)
        for c in class_info:
            row[f"frac_{c.name}"] = round(int(acc.classes[c.id]) / counted, 4) if counted else None
        if counted:
            row["dominant_class"] = max(class_info, key=lambda c: int(acc.classes[c.id])).name  # type: ignore[index]
    return row


def _footprint_in(scene: Scene, crs: str | None) -> Any:
    from pyproj import Transformer
    from shapely.ops import transform

    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return transform(tr.transform, scene.footprint)


def predict_scene(scene: Scene, parcels: Parcels, cfg: MonitorConfig, bundle_path: Path, out: Path) -> Path:
    """Segment ``scene`` over the parcels (tiles without a parcel are skipped); returns classes.tif."""
    from workflows.region_landcover import results_fn

    bundle = model_mod.load(bundle_path)
    by_name = {b.name: b for b in scene.bands}
    model_scene = replace(scene, bands=tuple(by_name[b] for b in bundle.bands))
    p = cfg.predict
    options = jobs.PredictOptions(
        tile=p.tile,
        halo=p.halo,
        batch_size=p.batch_size,
        merge=p.merge,
        device=p.device,
        amp=p.amp,
        tta=p.tta,
        resampling=cfg.grid.resampling,
    )
    job = pipeline.plan_scenes(
        [model_scene],
        model=bundle_path,
        out_dir=out,
        options=options,
        grid=parcels.grid,
        aoi=parcels.frame.union_all(),
        source=scene.id,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipeline.write_rasters(job, results_fn(cfg.execution)(job))
    return out / "classes.tif"


# ------------------------------------------------------------------------------ time-series table


def append_rows(rows: list[dict[str, Any]], parcels: Parcels, out_dir: Path) -> int:
    """Append rows whose (parcel id, scene id) is not in ``timeseries.gpkg`` yet; returns rows written."""
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    if not rows:
        return 0
    path = out_dir / "timeseries.gpkg"
    new = pd.DataFrame(rows)
    if path.exists():
        have = pyogrio.read_dataframe(path, layer=LAYER, columns=list(KEY), read_geometry=False)
        seen = set(zip(have["parcel_id"].astype(str), have["scene_id"].astype(str), strict=True))
        keep = [(p, s) not in seen for p, s in zip(new["parcel_id"], new["scene_id"], strict=True)]
        new = new[keep]
    if new.empty:
        return 0
    geoms = parcels.frame.set_index("parcel_id").geometry
    gdf = gpd.GeoDataFrame(new, geometry=geoms.loc[new["parcel_id"]].values, crs=parcels.frame.crs)
    if path.exists():
        pyogrio.write_dataframe(gdf, path, layer=LAYER, driver="GPKG", append=True)
    else:
        with atomic.replacing(path, suffix=".gpkg") as tmp:
            pyogrio.write_dataframe(gdf, tmp, layer=LAYER, driver="GPKG")
    return len(gdf)


def read_timeseries(out_dir: Path) -> Any:
    """The whole time-series table (GeoDataFrame; empty when nothing was written yet)."""
    import geopandas as gpd

    path = Path(out_dir) / "timeseries.gpkg"
    if not path.exists():
        return gpd.GeoDataFrame({"parcel_id": [], "scene_id": []}, geometry=[])
    return gpd.read_file(path, layer=LAYER)


def write_parquet(out_dir: Path) -> Path | None:
    """Rewrite ``timeseries.parquet`` (GeoParquet) from the GeoPackage, atomically."""
    ts = read_timeseries(out_dir)
    if ts.empty:
        return None
    path = out_dir / "timeseries.parquet"
    with atomic.replacing(path, suffix=".parquet") as tmp:
        ts.to_parquet(tmp)
    return path


# ------------------------------------------------------------------------------ changes


def changes(ts: Any, scene_ids: Sequence[str], *, ndvi_drop: float) -> list[dict[str, Any]]:
    """Parcels whose newest clear observation among ``scene_ids`` (this run's scenes) changed against
    their newest clear observation from earlier runs (nothing to compare on a parcel's first run)."""
    if ts.empty or not scene_ids:
        return []
    ok = ts[ts["status"] == "ok"].sort_values(["parcel_id", "datetime", "scene_id"])
    out: list[dict[str, Any]] = []
    fresh = set(scene_ids)
    for pid, group in ok.groupby("parcel_id", sort=True):
        rows = group.to_dict("records")
        new = [r for r in rows if r["scene_id"] in fresh]
        old = [r for r in rows if r["scene_id"] not in fresh]
        if not new or not old:
            continue
        now, before = new[-1], old[-1]
        kinds = []
        drop = float(before["ndvi_median"]) - float(now["ndvi_median"])
        if drop > ndvi_drop:
            kinds.append("ndvi_drop")
        dom_now, dom_before = now.get("dominant_class"), before.get("dominant_class")
        if dom_now and dom_before and dom_now != dom_before:
            kinds.append("class_change")
        if kinds:
            out.append(
                {
                    "parcel_id": str(pid),
                    "change": "+".join(kinds),
                    "scene_id": now["scene_id"],
                    "datetime": now["datetime"],
                    "previous_scene_id": before["scene_id"],
                    "previous_datetime": before["datetime"],
                    "ndvi_median": now["ndvi_median"],
                    "previous_ndvi_median": before["ndvi_median"],
                    "ndvi_drop": round(drop, 5),
                    "dominant_class": dom_now,
                    "previous_dominant_class": dom_before,
                }
            )
    return out


def write_changes(found: list[dict[str, Any]], out_dir: Path, *, meta: dict[str, Any]) -> dict[str, Path]:
    """``changes.csv`` and ``changes.json`` of the latest run, atomically."""
    import csv
    import io

    fields = [
        "parcel_id", "change", "scene_id", "datetime", "previous_scene_id", "previous_datetime",
        "ndvi_median", "previous_ndvi_median", "ndvi_drop", "dominant_class", "previous_dominant_class",
    ]  # fmt: skip
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(found)
    paths = {"changes_csv": out_dir / "changes.csv", "changes_json": out_dir / "changes.json"}
    atomic.write_text(paths["changes_csv"], buf.getvalue())
    atomic.write_text(paths["changes_json"], json.dumps({**meta, "changes": found}, indent=2, default=str) + "\n")
    return paths


# ------------------------------------------------------------------------------ a run


def run(cfg: MonitorConfig) -> MonitorResult:
    """One monitoring run: new scenes → rows → state; a run already in progress → ``locked``."""
    t0 = time.time()
    out = Path(cfg.outputs.dir)
    out.mkdir(parents=True, exist_ok=True)
    store = StateStore.open(cfg.state.url, out_dir=out)
    try:
        with store.lock(cfg.name):
            run_id = store.start_run(cfg.name)
            try:
                result = _run_locked(cfg, store, run_id, out)
            except BaseException as exc:
                store.finish_run(run_id, status="failed", message=f"{type(exc).__name__}: {exc}")
                raise
            store.finish_run(
                run_id,
                status=result.status,
                scenes=len(result.scenes),
                rows=result.rows,
                message=result.message,
            )
            return replace(result, seconds=time.time() - t0)
    except LockHeld as exc:
        log.warning("%s", exc)
        return MonitorResult(status="locked", message=str(exc), seconds=time.time() - t0)
    finally:
        store.close()


def _run_locked(cfg: MonitorConfig, store: StateStore, run_id: int, out: Path) -> MonitorResult:
    parcels = load_parcels(cfg)
    bundle = model_mod.load(cfg.model) if cfg.model else None
    found = new_scenes(
        cfg,
        parcels,
        done=store.processed(cfg.name),
        watermark=store.watermark(cfg.name),
        bands=_bands(cfg, bundle),
    )
    outputs: dict[str, Path] = {"timeseries": out / "timeseries.gpkg", "state": Path(store.where)}
    if not found:
        if (out / "timeseries.gpkg").exists() and not (out / "timeseries.parquet").exists():
            write_parquet(out)
        return MonitorResult(
            status="nothing-new", message="no new scenes since the last run", outputs=outputs
        )
    done: list[str] = []
    failed: list[str] = []
    rows_total = screened = 0
    for scene in found:
        try:
            classes_path = None
            if bundle is not None and cfg.model is not None:
                classes_path = predict_scene(
                    scene, parcels, cfg, cfg.model, safety.safe_path(out / "predictions", scene.id)
                )
            rows = scene_rows(
                scene, parcels, cfg, classes_path=classes_path, class_info=bundle.classes if bundle else ()
            )
        except ReadError as exc:
            log.error("scene %s failed and stays unprocessed (retried next run): %s", scene.id, exc)
            failed.append(scene.id)
            continue
        written = append_rows(rows, parcels, out)
        store.mark_processed(cfg.name, [(scene.id, scene.datetime, written)], run_id=run_id)
        n_screened = sum(r["status"] != "ok" for r in rows)
        log.debug("scene %s: %d parcel rows (%d screened), %d new", scene.id, len(rows), n_screened, written)
        rows_total += written
        screened += n_screened
        done.append(scene.id)
    parquet = write_parquet(out)
    if parquet is not None:
        outputs["timeseries_parquet"] = parquet
    found_changes = changes(read_timeseries(out), done, ndvi_drop=cfg.change.ndvi_drop)
    outputs.update(
        write_changes(found_changes, out, meta={"monitor": cfg.name, "run_id": run_id, "scenes": done})
    )
    status = "partial" if failed else "done"
    msg = f"{len(done)} scenes, {rows_total} rows" + (f"; failed: {', '.join(failed)}" if failed else "")
    return MonitorResult(
        status=status,
        message=msg,
        scenes=tuple(done),
        rows=rows_total,
        screened=screened,
        failed=tuple(failed),
        changes=found_changes,
        outputs=outputs,
    )


def summary(result: MonitorResult, *, top: int = 10, paths: bool = True) -> str:
    """Short human summary of a run (status, counts, changes, outputs)."""
    if result.status in ("locked", "nothing-new"):
        return f"{result.status}: {result.message}"
    lines = [
        f"{result.status}: {len(result.scenes)} new scenes, {result.rows} rows "
        f"({result.screened} parcel observations screened as cloudy/no data) in {result.seconds:.1f} s"
    ]
    if result.failed:
        lines.append(f"  failed (retried next run): {', '.join(result.failed)}")
    lines.append(f"  changes: {len(result.changes)} parcels")
    for ch in result.changes[:top]:
        lines.append(
            f"    {ch['parcel_id']}: {ch['change']} (NDVI {ch['previous_ndvi_median']} → {ch['ndvi_median']}, "
            f"{ch['previous_datetime'][:10]} → {ch['datetime'][:10]})"
        )
    for name, path in result.outputs.items() if paths else ():
        lines.append(f"  {name:<18} {path}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workflows.crop_monitoring CONFIG [--set k=v ...]``."""
    import argparse

    from geounet.config import parse_overrides

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run(load_monitor_config(args.config, overrides=parse_overrides(args.overrides)))
    print(summary(result))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
