"""The notebook API: :func:`search`, :func:`predict`, :func:`vectorize` (``from geounet import api``).

Thin wrappers over the same stages the CLI runs (search → plan → tiled read/predict by the
local or Ray executor → COG writer), so a notebook gets the CLI's results::

    from geounet import api
    scenes = api.search("earth-search", bbox=[12.5, 52.4, 12.6, 52.5],
                        datetime="2024-06-01/2024-06-30", max_cloud=10,
                        bands=["blue", "green", "red", "nir"])
    ds = api.predict(scenes[0], "landcover.safetensors")   # xarray.Dataset(classes, confidence)
    ds.classes.rio.crs, ds.classes.rio.transform()          # the grid survives
    gdf = api.vectorize(ds)                                 # GeoDataFrame of class polygons

``predict`` accepts a raster file, a STAC item (pystac Item, item JSON dict or path/URL, or
a :class:`~geounet.search.Scene`), a list of scenes (composited onto ``grid`` or the first
scene's grid), or a rioxarray ``DataArray`` (band, y, x) in the model's band order.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from geounet import executors, harmonize, jobs, masks, planning, rasters
from geounet import model as model_mod
from geounet import search as search_mod
from geounet.errors import ConfigError, InputError
from geounet.geo import Grid
from geounet.model import ClassInfo
from geounet.search import Scene

__all__ = ["predict", "search", "vectorize"]

_TIFF = {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "DEFLATE"}


def search(source: str, **query: Any) -> list[Scene]:
    """Search a STAC API, static catalog or preset; keyword arguments as :func:`geounet.search.scenes`.

    Example:
        ``api.search("earth-search", bbox=[12.5, 52.4, 12.6, 52.5], datetime="2024-06", max_cloud=10)``
    """
    return search_mod.scenes(source, **query)


def _scenes_of(source: Any, bands: Sequence[str]) -> list[Scene] | None:
    """The scenes of a STAC-ish ``source``, or None when it is a raster file / array."""
    import pystac

    if isinstance(source, Scene):
        return [source]
    if isinstance(source, (pystac.Item, dict)):
        return [search_mod.from_item(source, bands=list(bands))]
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, Scene) for s in source):
        return list(source)
    if isinstance(source, (str, Path)) and str(source).endswith(".json"):
        return [search_mod.item(str(source), bands=list(bands))]
    return None


def predict(
    source: Any,
    model: str | Path,
    *,
    out_dir: str | Path | None = None,
    grid: Grid | None = None,
    tile: int | None = None,
    halo: int | None = None,
    batch_size: int = 8,
    merge: str = "crop",
    device: str = "auto",
    executor: str = "local",
    tta: bool = False,
    composite: str = "first",
) -> Any:
    """Segment ``source`` with a model bundle; returns an ``xarray.Dataset`` (``classes``, ``confidence``).

    Both variables keep the CRS and transform of the grid (``ds.rio.crs``, ``ds.rio.transform()``);
    ``classes`` is uint8 with nodata 255 (``_FillValue``), ``confidence`` uint8 percent. The
    class names and colors are in ``ds.attrs["classes"]`` (JSON) and as CF ``flag_values`` /
    ``flag_meanings`` on ``classes``. With ``out_dir`` the COGs stay there and the arrays are
    read lazily from them; without, they are loaded into memory and the temporary files deleted.

    Several scenes are composited per pixel by ``composite`` (``first`` clear observation in
    order of cloud cover then date, or ``median`` of the clear ones); pixels their quality
    assets (SCL, QA_PIXEL, Fmask, cloud mask or probability) mark as not clear never count.

    Raises:
        InputError: an unsupported ``source``; the errors of the CLI's ``predict`` otherwise.
        ConfigError: ``tile``/``halo``/``composite`` out of range (the message names the argument).
    """
    _check(tile=tile, halo=halo, composite=composite)
    bundle = model_mod.load(model)
    options = jobs.PredictOptions(
        tile=tile, halo=halo, batch_size=batch_size, merge=merge, device=device, tta=tta
    )
    work = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="geounet-predict-"))
    keep = out_dir is not None
    try:
        work.mkdir(parents=True, exist_ok=True)
        scenes = _scenes_of(source, bundle.bands)
        if scenes is not None:
            job = planning.plan_scenes(scenes, model=model, out_dir=work, options=options, grid=grid)
            extra = {"composite": composite, "resampling": harmonize.resampling(bundle.provenance)}
            job = dataclasses.replace(job, extra={**job.extra, **extra})
        else:
            path = _raster_path(source, work)
            job = planning.plan(path, model=model, out_dir=work, options=options)
        rasters.write_rasters(job, executors.results_fn(executor)(job))
        ds = _open(work, bundle.classes)
        if not keep:
            ds = ds.load()
        return ds
    finally:
        if not keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def _check(*, tile: int | None, halo: int | None, composite: str) -> None:
    if tile is not None and tile < 16:
        raise ConfigError(
            f"tile={tile} must be >= 16; leave it out (None) for the planned tile, or give e.g. 512"
        )
    if halo is not None and halo < 0:
        raise ConfigError(f"halo={halo} must be >= 0; leave it out (None) for the bundle's halo")
    masks.check_method(composite)


def _raster_path(source: Any, work: Path) -> Path:
    """A file path for ``source``: a path as is, a rioxarray DataArray written to a GeoTIFF first."""
    if isinstance(source, (str, Path)):
        return Path(source)
    import xarray as xr

    if isinstance(source, xr.DataArray):
        if source.rio.crs is None:
            raise InputError(
                "the DataArray has no CRS; set one with da.rio.write_crs('EPSG:32633') before predict"
            )
        arr = source if "band" in source.dims else source.expand_dims("band")
        path = work / "input.tif"
        arr.rio.to_raster(path, tiled=True, blockxsize=256, blockysize=256, compress="DEFLATE")
        return path
    raise InputError(
        f"cannot predict a {type(source).__name__}; give a raster path, a STAC item / Scene, a list "
        "of Scenes, or a rioxarray DataArray"
    )


def _open(folder: Path, classes: Sequence[ClassInfo]) -> Any:
    import rioxarray
    import xarray as xr

    opts: dict[str, Any] = {}  # lazily read by xarray's backend: nothing is loaded until used
    cls = cast(xr.DataArray, rioxarray.open_rasterio(folder / "classes.tif", **opts)).squeeze(
        "band", drop=True
    )
    conf = cast(xr.DataArray, rioxarray.open_rasterio(folder / "confidence.tif", **opts)).squeeze(
        "band", drop=True
    )
    cls.attrs.update(
        flag_values=[c.id for c in classes],
        flag_meanings=" ".join(c.name.replace(" ", "_") for c in classes),
        long_name="class id",
    )
    conf.attrs.update(long_name="confidence of the winning class", units="percent")
    table = [{"id": c.id, "name": c.name, "color": c.color} for c in classes]
    ds = xr.Dataset({"classes": cls, "confidence": conf}, attrs={"classes": json.dumps(table)})
    return ds.rio.write_crs(cls.rio.crs)


def vectorize(
    source: Any,
    *,
    classes: Sequence[ClassInfo] | None = None,
    simplify: float | None = None,
    min_area: float = 0.0,
) -> Any:
    """Class polygons (GeoDataFrame: class_id, class_name, area_m2, perimeter_m, mean_confidence, geometry).

    ``source``: a Dataset from :func:`predict` (its classes are in its attrs) or a class raster
    path (then give ``classes``). Seams between blocks are dissolved as in the CLI's outputs.
    """
    from geounet import vectorize as vec

    if isinstance(source, (str, Path)):
        if classes is None:
            raise InputError(
                "vectorize(path) needs classes=[ClassInfo(...), ...] (or pass predict()'s Dataset)"
            )
        return vec.polygons(Path(source), classes=classes, simplify=simplify, min_area=min_area)
    info = classes or [ClassInfo(c["id"], c["name"], c["color"]) for c in json.loads(source.attrs["classes"])]
    with tempfile.TemporaryDirectory(prefix="geounet-vectorize-") as tmp:
        cls_path, conf_path = Path(tmp) / "classes.tif", Path(tmp) / "confidence.tif"
        source["classes"].rio.write_nodata(model_mod.NODATA_CLASS).rio.to_raster(cls_path, **_TIFF)
        conf_arg = None
        if "confidence" in source:
            source["confidence"].rio.to_raster(conf_path, **_TIFF)
            conf_arg = conf_path
        return vec.polygons(
            cls_path, classes=info, confidence_path=conf_arg, simplify=simplify, min_area=min_area
        )
