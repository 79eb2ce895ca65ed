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

from geounet import atomic, planning, rasters, safety, search
from geounet import model as model_mod
from geounet.config import MonitorConfig, load_monitor_config
from geounet.errors import ReadError, SearchError
from geounet.search import Scene
from geounet.state import LockHeld, StateStore
from workflows.parcels import Parcels, load_parcels, scene_rows

log = logging.getLogger(__name__)

LAYER = "timeseries"
KEY = ("parcel_id", "scene_id")


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


def predict_scene(scene: Scene, parcels: Parcels, cfg: MonitorConfig, bundle_path: Path, out: Path) -> Path:
    """Segment ``scene`` over the parcels (tiles without a parcel are skipped); returns classes.tif."""
    from workflows.region_landcover import results_fn

    bundle = model_mod.load(bundle_path)
    by_name = {b.name: b for b in scene.bands}
    model_scene = replace(scene, bands=tuple(by_name[b] for b in bundle.bands))
    options = cfg.predict.options(resampling=cfg.grid.resampling)
    job = planning.plan_scenes(
        [model_scene],
        model=bundle_path,
        out_dir=out,
        options=options,
        grid=parcels.grid,
        aoi=parcels.frame.union_all(),
        source=scene.id,
    )
    out.mkdir(parents=True, exist_ok=True)
    rasters.write_rasters(job, results_fn(cfg.execution)(job))
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
    atomic.write_text(
        paths["changes_json"], json.dumps({**meta, "changes": found}, indent=2, default=str) + "\n"
    )
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

    from geounet.overrides import parse_overrides

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
