"""The parcels of a crop monitor and their per-scene statistics (screening, NDVI, class fractions).

:func:`load_parcels` reads the parcels file and fixes the target grid; :func:`scene_rows`
composites one scene block by block over the parcels it touches and returns one row per
parcel: pixels with data, pixels the cloud mask calls clear, NDVI statistics over the clear
pixels and, with a class raster, class fractions and the dominant class
(:mod:`workflows.crop_monitoring` runs it per new scene).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geounet import model as model_mod
from geounet import search
from geounet.config import MonitorConfig
from geounet.errors import InputError, InputNotFoundError
from geounet.geo import Grid, Window
from geounet.scenes import composite
from geounet.search import Scene

#: Mask values counted as clear, and values meaning "no data", per mask kind.
CLEAR = {"fmask": (0, 1), "scl": (4, 5, 6, 7, 11), "binary": (0,)}
NO_DATA = {"fmask": (255,), "scl": (0,), "binary": ()}
BLOCK = 1024


@dataclass(frozen=True)
class Parcels:
    """The parcels in the grid's CRS (columns ``parcel_id``, ``geometry``), their lon/lat hull and grid."""

    frame: Any  # GeoDataFrame
    hull: Any  # shapely geometry, lon/lat
    grid: Grid


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


def _screen(
    data: np.ndarray, ok: np.ndarray, cfg: MonitorConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(has data, clear, NDVI) of one block's composite bands (red, nir[, cloud mask])."""
    kind = cfg.bands.mask_kind
    if cfg.bands.mask:
        mask = data[2].astype(np.int64)
        has = ok & ~np.isin(mask, np.array(NO_DATA[kind]))
        clear = has & np.isin(mask, np.array(cfg.bands.clear_values or CLEAR[kind]))
    else:
        has = clear = ok
    red, nir = data[0], data[1]
    total = nir + red
    clear &= total != 0  # in place: without a mask, `has` is the same array and loses these too
    ndvi = np.where(clear, (nir - red) / np.where(total == 0, 1, total), np.nan)
    return has, clear, ndvi


def _accumulate(
    accs: dict[int, _Acc],
    ids: np.ndarray,
    *,
    has: np.ndarray,
    clear: np.ndarray,
    ndvi: np.ndarray,
    cls: np.ndarray | None,
    n_classes: int = 256,
) -> None:
    """Add one block's pixels to each parcel's counts (``ids``: parcel index + 1, 0 outside)."""
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
    names = [cfg.bands.red, cfg.bands.nir] + ([cfg.bands.mask] if cfg.bands.mask else [])
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
            has, clear, ndvi = _screen(data, ok, cfg)
            cls = (
                cls_src.read(1, window=((win.row, win.row_stop), (win.col, win.col_stop)))
                if cls_src
                else None
            )
            _accumulate(accs, ids, has=has, clear=clear, ndvi=ndvi, cls=cls)
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
