"""Read a tile's chip from STAC scenes over HTTP, onto a job's target grid.

Each scene's bands are read with GDAL's ``/vsicurl/`` (range requests, HTTP retries, block
cache: :data:`GDAL_ENV`) only for the tile's window: a plain windowed read when the asset's
pixels lie on the grid (bit-identical to a local read), else a rasterio ``WarpedVRT`` that
reprojects and resamples (Sentinel-2's 20 m and 60 m bands onto 10 m).

Scenes are composited per pixel (:mod:`geounet.masks`): their quality assets (SCL, QA_PIXEL,
Fmask, cloud mask or probability; read nearest) exclude clouds, shadows and fill, then the
``first`` clear observation in :func:`order` (least cloudy, then newest) or the ``median``
of the clear ones. What stays invalid, and the read window beyond the grid, is
mirror-padded like a local read, and the chip's ``valid`` mask says which pixels are real.
Signed hrefs are re-signed once when a read fails (:mod:`geounet.signing`).

A failing asset raises :class:`~geounet.errors.ReadError` naming the scene and href; a job
over several scenes passes ``failures=[]`` to record the failing scenes and composite the others.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeVar, Unpack

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RioWindow
from shapely.geometry import Polygon, box

from geounet import masks, read, safety, signing
from geounet.errors import ConfigError, InputError, ReadError, first_line
from geounet.geo import Grid, Window
from geounet.items import Band, Scene
from geounet.masks import MaskRule
from geounet.read import Chip
from geounet.tiling import Tile

#: GDAL settings for COG assets over HTTP (those of :mod:`geounet.read` plus timeouts and range merging).
GDAL_ENV: dict[str, str | int | float] = {
    **read.GDAL_ENV,
    "GDAL_HTTP_TIMEOUT": 60,
    "GDAL_HTTP_CONNECTTIMEOUT": 15,
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_INGESTED_BYTES_AT_OPEN": 32768,
}

_RESAMPLING = {r.name: r for r in Resampling}
T = TypeVar("T")
log = logging.getLogger(__name__)
#: The default mask rule: ESA's, USGS's and Fmask's not-clear classes, cloud probability > 40 %.
DEFAULT_RULE = MaskRule()
_ALIGN_TOL = 1e-6


@dataclass(frozen=True, slots=True)
class _Target:
    """The target window's own grid (shape, transform, CRS) and its parsed CRS."""

    grid: Grid
    crs: CRS


def order(scenes: Sequence[Scene]) -> list[Scene]:
    """Compositing order: least cloudy first (unknown cloud cover last), then newest; stable.

    Example:
        >>> from shapely.geometry import Point
        >>> mk = lambda i, c, d: Scene(i, datetime(2020, 1, d, tzinfo=UTC), c, Point(0, 0), ())
        >>> [s.id for s in order([mk("a", 5.0, 1), mk("b", None, 9), mk("c", 5.0, 3), mk("d", 0.0, 1)])]
        ['d', 'c', 'a', 'b']
    """
    oldest = datetime.min.replace(tzinfo=UTC)

    def key(scene: Scene) -> tuple[float, float]:
        cloud = scene.cloud_cover if scene.cloud_cover is not None else float("inf")
        when = scene.datetime or oldest
        return (cloud, -when.timestamp())

    return sorted(scenes, key=key)


class Compositing(TypedDict, total=False):
    """How :func:`chip`, :func:`composite` and :func:`mosaic` read and composite (defaults: :func:`mosaic`'s).

    - ``bands``: model band names to take from each scene; default: each scene's bands as searched.
    - ``resampling``: GDAL resampling name for reprojected/resampled assets (``nearest``, ``bilinear``...).
    - ``apply_scale``: return ``dn * scale + offset`` (STAC ``raster:bands``) instead of raw values.
    - ``failures``: when given, a scene whose asset fails is appended here (as its ReadError)
      and skipped; otherwise the ReadError propagates.
    - ``method``: composite rule, ``first`` or ``median`` (:data:`geounet.masks.METHODS`).
    - ``mask_rule``: which quality values of a scene's mask assets (SCL, QA_PIXEL, Fmask,
      cloud mask/probability) exclude a pixel; ``None`` ignores the masks.
    """

    bands: Sequence[str] | None
    resampling: str
    apply_scale: bool
    failures: list[ReadError] | None
    method: str
    mask_rule: MaskRule | None


def chip(
    scenes: Sequence[Scene],
    tile: Tile,
    *,
    grid: Grid,
    observations: list[np.ndarray] | None = None,
    **options: Unpack[Compositing],
) -> Chip:
    """Read ``tile``'s chip on ``grid`` from ``scenes`` (composited), mirror-padded beyond valid data.

    Args:
        scenes: the scenes to composite (any order; see :func:`order`).
        tile: the tile; its read window is in ``grid``'s pixel coordinates.
        grid: the job's target grid (CRS, transform, shape).
        observations: when given, the per-pixel count of clear valid observations over the
            tile's core (uint16, ``tile.core.shape``) is appended here (``observations.tif``).
        options: how to read and composite (:class:`Compositing`).

    Returns:
        The :class:`~geounet.read.Chip`: float32 (bands, rows, cols) over ``tile.read`` and its valid mask.

    Raises:
        ReadError: an asset cannot be read (names the scene id and href), unless ``failures`` is given.
        InputError: a scene lacks one of ``bands``.
    """
    inner = tile.read.clip(grid.rows, grid.cols)
    counts = tile.core if observations is not None else False
    data, valid, count = mosaic(scenes, inner, grid=grid, counts=counts, **options)
    if observations is not None and count is not None:
        observations.append(count)  # the core's: the scenes past the first rule's fill are read there only
    if valid.any() and not valid.all():
        data = read.mirror_fill(data, valid)
    pad = tile.padding
    mask = valid
    if pad.any:
        mask = np.pad(valid, ((pad.top, pad.bottom), (pad.left, pad.right)), constant_values=False)
    return Chip(tile=tile, data=read.mirror_pad(data, pad), valid=mask)


def composite(
    scenes: Sequence[Scene], window: Window, *, grid: Grid, **options: Unpack[Compositing]
) -> tuple[np.ndarray, np.ndarray]:
    """The composite of ``scenes`` over ``window`` of ``grid``: float32 (bands, rows, cols) and valid mask.

    Invalid pixels (no scene has a clear valid observation there) are 0. ``window`` must lie
    inside ``grid``. Arguments as :func:`chip`.
    """
    data, valid, _ = mosaic(scenes, window, grid=grid, **options)
    return data, valid


def mosaic(
    scenes: Sequence[Scene],
    window: Window,
    *,
    grid: Grid,
    bands: Sequence[str] | None = None,
    resampling: str = "nearest",
    apply_scale: bool = False,
    failures: list[ReadError] | None = None,
    method: str = "first",
    mask_rule: MaskRule | None = DEFAULT_RULE,
    counts: bool | Window = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`composite` plus, with ``counts``, the per-pixel number of clear valid observations (uint16).

    The other options are :class:`Compositing`'s, and their defaults are these.

    ``counts``: True counts over ``window``, a window inside it (a tile's core) over that one only. Once
    ``first`` has filled ``window`` it stops reading, or reads the other scenes over that window to count.
    """
    if grid.crs is None:
        raise InputError("the target grid has no CRS; STAC scenes can only be read onto a georeferenced grid")
    masks.check_method(method)
    how = _resampling(resampling)
    target = _Target(grid=grid.window_grid(window), crs=CRS.from_user_input(grid.crs))
    names = _band_names(scenes, bands)
    counted = counts if isinstance(counts, Window) else window
    zero = None if counts is False else np.zeros(counted.shape, np.uint16)
    filled = np.zeros(window.shape, dtype=bool)
    if window.size == 0:
        return np.zeros((len(names), *window.shape), "float32"), filled, zero
    late = _Target(grid=grid.window_grid(counted), crs=target.crs)
    area = _lonlat_box(target)
    stack: list[np.ndarray] = []
    usable: list[np.ndarray] = []
    seen_late: list[np.ndarray] = []  # clear masks over ``counted`` of the scenes read only to count
    for scene in order(scenes):
        done = method == "first" and bool(filled.all())
        if done and counts is False:
            break
        if not scene.footprint.is_empty and not scene.footprint.intersects(area):
            continue
        seen = _observe(scene, names, late if done else target, how, apply_scale, mask_rule, failures)
        if seen is not None and done:
            seen_late.append(seen[1])
        elif seen is not None:
            stack.append(seen[0])
            usable.append(seen[1])
            filled |= seen[1]
    if not stack:
        return np.zeros((len(names), *window.shape), "float32"), filled, zero
    data, valid = masks.composite(stack, usable, method=method)
    if counts is False:
        return data, valid, None
    count = masks.count(usable)[counted.relative_to(window).to_slices()]
    return data, valid, count + masks.count(seen_late) if seen_late else count


def _observe(
    scene: Scene, names: Sequence[str], target: _Target, how: Resampling, apply_scale: bool,
    mask_rule: MaskRule | None, failures: list[ReadError] | None,
) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """One scene over ``target``: (values, clear valid mask); None when it fails and ``failures`` records it."""
    try:
        values, ok = _read_scene(scene, names, target, how, apply_scale)
        rule = scene.mask_rule if scene.mask_rule is not None else mask_rule  # a config's mosaic.masks
        if rule is not None:
            ok &= _clear(scene, target, rule)
    except ReadError as exc:
        if failures is None:
            raise
        failures.append(exc)
        return None
    return values, ok


def _clear(scene: Scene, target: _Target, rule: MaskRule) -> np.ndarray:
    """Where every quality asset of ``scene`` says the ground is clear (read nearest: categorical)."""
    rows, cols = target.grid.shape
    ok = np.ones((rows, cols), dtype=bool)
    for band in scene.masks:
        try:
            arr, valid = _signed(scene, band.href, _read_asset, [band.index], target, Resampling.nearest)
        except (RasterioError, CPLE_BaseError) as exc:
            raise ReadError(
                f"scene {scene.id!r}: mask asset {band.href} cannot be read ({first_line(exc)}); "
                "check the URL, or predict without masks (mask_rule=None)"
            ) from exc
        values = arr[0] * np.float32(band.scale) + np.float32(band.offset)
        percent = (band.unit or "").strip().lower() in {"%", "percent"}
        ok &= valid[0] & masks.clear(band.name, values, rule, percent=percent)
    return ok


def _band_names(scenes: Sequence[Scene], bands: Sequence[str] | None) -> tuple[str, ...]:
    if bands is not None:
        return tuple(bands)
    if not scenes:
        raise InputError("no scenes to read; search returned none or all were dropped")
    names = scenes[0].band_names
    for scene in scenes[1:]:
        if len(scene.band_names) != len(names):
            raise InputError(
                f"scene {scene.id!r} has bands {','.join(scene.band_names)} but {scenes[0].id!r} has "
                f"{','.join(names)}; search all scenes with the model's bands (bands=...)"
            )
    return names


def _pick(scene: Scene, names: Sequence[str]) -> list[Band]:
    by_name = {b.name.lower(): b for b in scene.bands}
    if all(n.lower() in by_name for n in names):
        return [by_name[n.lower()] for n in names]
    if len(scene.bands) == len(names) and not set(by_name) & {n.lower() for n in names}:
        return list(scene.bands)  # scenes searched with the model's bands under other names: by position
    raise InputError(
        f"scene {scene.id!r} has bands {','.join(scene.band_names)}, not {','.join(names)}; "
        "search with the model's bands (bands=...)"
    )


def _read_scene(
    scene: Scene, names: Sequence[str], target: _Target, method: Resampling, apply_scale: bool
) -> tuple[np.ndarray, np.ndarray]:
    picked = _pick(scene, names)
    rows, cols = target.grid.shape
    values = np.zeros((len(picked), rows, cols), dtype="float32")
    ok = np.ones((rows, cols), dtype=bool)
    by_href: dict[str, list[int]] = {}
    for i, band in enumerate(picked):
        by_href.setdefault(band.href, []).append(i)
    for href, slots in by_href.items():
        assets = [picked[i] for i in slots]
        try:
            arr, masks = _signed(scene, href, _read_asset, [b.index for b in assets], target, method)
        except (RasterioError, CPLE_BaseError) as exc:
            raise ReadError(
                f"scene {scene.id!r}: asset {href} cannot be read ({first_line(exc)}); check that the URL "
                "is reachable and the file is a complete COG, or leave the scene out"
            ) from exc
        for k, (slot, band) in enumerate(zip(slots, assets, strict=True)):
            good = masks[k]
            if band.nodata is not None and not np.isnan(band.nodata):
                good &= arr[k] != band.nodata
            ok &= good
            scaled = apply_scale or scene.scaled  # harmonized scenes: dn * gain + bias (geounet.harmonize)
            values[slot] = arr[k] * np.float32(band.scale) + np.float32(band.offset) if scaled else arr[k]
    return values, ok


def _signed(scene: Scene, href: str, read_at: Callable[..., T], *args: Any) -> T:
    """``read_at(href, *args)`` with the freshest signature; for a signed scene, re-signed and retried once.

    GDAL reports a refused block read as a failed tile decode (the HTTP 403 goes to its log,
    not the exception), so any failed read of a signed scene gets one fresh signature.
    """
    try:
        return read_at(signing.current(href), *args)
    except (RasterioError, CPLE_BaseError) as exc:
        if scene.signer is None:
            raise
        log.info(
            "scene %s: read failed (%s); re-signing %s", scene.id, first_line(exc), signing.unsigned(href)
        )
    return read_at(signing.resign(href, scene.signer), *args)


def _grid_at(href: str) -> Grid:
    with rasterio.Env(**GDAL_ENV), rasterio.open(vsi_path(href)) as src:
        return Grid.of_dataset(src)


def _read_asset(
    href: str, indexes: list[int], target: _Target, method: Resampling
) -> tuple[np.ndarray, np.ndarray]:
    """Bands ``indexes`` of one asset on the target window: (values float32, valid masks bool)."""
    with rasterio.Env(**GDAL_ENV), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(vsi_path(href)) as src:
            offset = _aligned_offset(src, target)
            if offset is not None:
                return _read_direct(src, indexes, target.grid.shape, offset)
            return _read_warped(src, indexes, target, method)


def _aligned_offset(src: rasterio.io.DatasetReader, target: _Target) -> tuple[int, int] | None:
    """(row, col) of the target window in ``src`` when its pixels are ``src``'s pixels, else None."""
    if src.crs is None or CRS.from_user_input(src.crs) != target.crs:
        return None
    a, b = src.transform, target.grid.transform
    pairs = ((a.a, b.a), (a.b, b.b), (a.d, b.d), (a.e, b.e))
    if any(abs(p - q) > _ALIGN_TOL * max(abs(p), 1.0) for p, q in pairs):
        return None
    col, row = ~a * (b.c, b.f)
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return (round(row), round(col))


def _read_direct(
    src: rasterio.io.DatasetReader, indexes: list[int], shape: tuple[int, int], offset: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = shape
    values = np.zeros((len(indexes), rows, cols), dtype="float32")
    valid = np.zeros((len(indexes), rows, cols), dtype=bool)
    want = Window(offset[0], offset[1], rows, cols)
    inner = want.clip(src.height, src.width)
    if inner.size:
        win = RioWindow(inner.col, inner.row, inner.width, inner.height)
        dst = inner.relative_to(want).to_slices()
        values[(slice(None), *dst)] = src.read(indexes, window=win, out_dtype="float32")
        valid[(slice(None), *dst)] = src.read_masks(indexes, window=win) > 0
    return values, valid


def _read_warped(
    src: rasterio.io.DatasetReader, indexes: list[int], target: _Target, method: Resampling
) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = target.grid.shape
    has_nodata = src.nodata is not None
    options = {
        "crs": target.crs,
        "transform": target.grid.transform,
        "width": cols,
        "height": rows,
        "resampling": method,
        "tolerance": 1e-9,  # ~exact transform: pixels do not depend on the tile extent (0 fails in rasterio)
    }
    # Without a nodata value, an alpha band marks where the source covers the target.
    with WarpedVRT(src, add_alpha=not has_nodata, **options) as vrt:
        values = vrt.read(indexes, out_dtype="float32")
        if has_nodata:
            valid = vrt.read_masks(indexes) > 0
        else:
            alpha = vrt.read(vrt.count) > 0
            valid = np.broadcast_to(alpha, values.shape).copy()
    return values, valid


def native_grid(scenes: Sequence[Scene]) -> Grid:
    """The scenes' own pixel grid: the finest grid among their bands' assets, which all scenes must share.

    Reads only the asset headers (over HTTP for remote assets). This is the target grid of
    "predict this STAC item" jobs: the output lines up with the scene's pixels, as for a local file.

    Raises:
        InputError: no scenes, or scenes on different grids (then give a resolution for a mosaic grid).
        ReadError: an asset header cannot be read (names the scene and href).
    """
    if not scenes:
        raise InputError("no scenes to take a grid from; search returned none")
    grids: dict[str, Grid] = {}
    for scene in scenes:
        finest: Grid | None = None
        for href in dict.fromkeys(b.href for b in scene.bands):
            grid = _asset_grid(scene, href)
            if finest is None or grid.pixel_area < finest.pixel_area:
                finest = grid
        if finest is not None:
            grids[scene.id] = finest
    distinct = set(grids.values())
    if len(distinct) != 1:
        listed = "; ".join(
            f"{k}: {g.crs} {g.shape} at {g.transform.c:g},{g.transform.f:g}" for k, g in grids.items()
        )
        raise InputError(
            f"the scenes lie on different grids ({listed}); give a target resolution (and CRS) to mosaic them"
        )
    return distinct.pop()


def preflight(scenes: Sequence[Scene]) -> tuple[list[Scene], list[dict[str, str]]]:
    """Open every asset header of ``scenes`` (no pixels): the scenes that open, and the failures.

    A failure is ``{"id": scene id, "error": one-line message}`` (an asset that is missing,
    forbidden, unreachable, not a raster, or whose href is refused by
    :func:`geounet.safety.check_href`); a batch job leaves those scenes out and records them.
    """
    ok: list[Scene] = []
    failed: list[dict[str, str]] = []
    for scene in scenes:
        try:
            for href in dict.fromkeys(b.href for b in scene.bands):
                if _asset_grid(scene, href).crs is None:
                    raise InputError(
                        f"scene {scene.id!r}: asset {href} has no CRS (not georeferenced); a STAC scene "
                        "must be georeferenced to be placed on the grid: fix the asset or leave the scene out"
                    )
        except (ReadError, InputError) as exc:
            msg = str(exc)
            failed.append(
                {"id": scene.id, "error": msg if repr(scene.id) in msg else f"scene {scene.id!r}: {msg}"}
            )
            continue
        ok.append(scene)
    return ok, failed


def _asset_grid(scene: Scene, href: str) -> Grid:
    try:
        return _signed(scene, href, _grid_at)
    except (RasterioError, CPLE_BaseError) as exc:
        raise ReadError(
            f"scene {scene.id!r}: asset {href} cannot be opened ({first_line(exc)}); check that the URL "
            "is reachable and the file is a complete COG, or leave the scene out"
        ) from exc


def vsi_path(href: str) -> str:
    """The GDAL path of an asset href: ``/vsicurl/`` for HTTP(S), ``/vsis3/`` for ``s3://``...

    Example:
        >>> vsi_path("https://h/B02.tif"), vsi_path("s3://bucket/B02.tif"), vsi_path("/data/B02.tif")
        ('/vsicurl/https://h/B02.tif', '/vsis3/bucket/B02.tif', '/data/B02.tif')
    """
    safety.check_href(href)  # untrusted: no ftp:, /vsi..., inline VRT XML, PG: connection strings
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    for scheme, prefix in (("s3://", "/vsis3/"), ("gs://", "/vsigs/"), ("az://", "/vsiaz/")):
        if href.startswith(scheme):
            return prefix + href[len(scheme) :]
    return href.removeprefix("file://")


def _lonlat_box(target: _Target) -> Polygon:
    west, south, east, north = transform_bounds(target.crs, "EPSG:4326", *target.grid.bounds, densify_pts=21)
    return box(west, south, east, north)


def _resampling(name: str) -> Resampling:
    if name not in _RESAMPLING:
        raise ConfigError(f"resampling={name!r} is unknown; use one of {', '.join(sorted(_RESAMPLING))}")
    return _RESAMPLING[name]
