"""Read one tile's chip from a raster: windowed read of the valid part, then mirror padding.

The U-Net overlap-tile strategy feeds the network real context where it exists and a
mirror image of the valid data where it does not (outside the raster, or on nodata).
A chip carries the padded array and a valid mask (False on nodata and outside the
raster), so the merge stage can write nodata where there was no input.

Mirror padding happens in two steps, both pure numpy (:func:`mirror_fill`,
:func:`mirror_pad`): invalid pixels inside the raster take the value of their mirror
image across the nearest valid pixel, then the read window's part outside the raster
is reflected (``numpy.pad(mode="reflect")``) from the filled interior.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window as RioWindow

from geounet.errors import InputError, InputNotFoundError, ReadError, first_line
from geounet.geo import Window
from geounet.tiling import Padding, Tile

#: GDAL settings for cloud-hosted COGs: no directory listing, retries, a sane cache.
GDAL_ENV: dict[str, str | int | float] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": 5,
    "GDAL_HTTP_RETRY_DELAY": 0.5,
    "GDAL_CACHEMAX": 256,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.jp2,.JP2,.png,.jpg,.jpeg,.vrt",
    "VSI_CACHE": "TRUE",
}

#: Added for local files: multi-threaded decoding of the blocks of one read (GTiff/COG, GDAL
#: >= 3.6), so a large tile's window decompresses on every core. Not for HTTP: GDAL's worker
#: threads log through GDAL's default handler, past the log redaction of signed URLs.
LOCAL_ENV: dict[str, str | int | float] = {"GDAL_NUM_THREADS": "ALL_CPUS"}


@dataclass(frozen=True, eq=False)
class Chip:
    """A tile's input: ``data`` float32 (bands, rows, cols) over the tile's read window,
    ``valid`` bool (rows, cols), False where the pixel is nodata or outside the raster;
    ``observations``, when the job writes ``observations.tif``, the core's per-pixel count of
    clear valid observations (uint16) counted while the scenes were composited."""

    tile: Tile
    data: np.ndarray
    valid: np.ndarray
    observations: np.ndarray | None = None

    @property
    def core_valid(self) -> np.ndarray:
        """The valid mask cropped to the tile's core."""
        return self.valid[self.tile.core_in_read.to_slices()]


@contextlib.contextmanager
def open_raster(path: str | Path) -> Iterator[rasterio.io.DatasetReader]:
    """Open a raster with rasterio under :data:`GDAL_ENV`, turning GDAL failures into typed errors.

    Photos without georeferencing (JPG/PNG) open too; their grid has no CRS.
    """
    source = str(path)
    is_remote = "://" in source or source.startswith("/vsi")
    if not is_remote and not Path(source).exists():
        raise InputNotFoundError(f"input raster {source!r} does not exist; check the path")
    env = GDAL_ENV if is_remote else {**GDAL_ENV, **LOCAL_ENV}
    with rasterio.Env(**env), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            ds = rasterio.open(source)
        except RasterioIOError as exc:
            raise InputError(
                f"input raster {source!r} cannot be read by GDAL ({first_line(exc)}); "
                "check that it is a complete GeoTIFF/COG/JPEG2000/PNG/JPEG file"
            ) from exc
        with ds:
            yield ds


def band_indexes(
    ds: rasterio.io.DatasetReader, wanted: Sequence[str], *, explicit: Sequence[int] | None = None
) -> tuple[int, ...]:
    """1-based band indexes of ``ds`` in the model's band order.

    Uses ``explicit`` when given, else band descriptions matching the model's band
    names, else the first bands in order when the counts agree.

    Raises:
        InputError: when the bands cannot be matched; the message lists both sides.
    """
    if explicit:
        bad = [i for i in explicit if not 1 <= i <= ds.count]
        if bad or len(explicit) != len(wanted):
            raise InputError(
                f"--bands {','.join(map(str, explicit))} must name {len(wanted)} band(s) in 1..{ds.count} "
                f"for the model's bands {','.join(wanted)}; fix the band list"
            )
        return tuple(int(i) for i in explicit)
    names = [(d or "").lower() for d in ds.descriptions]
    lowered = [w.lower() for w in wanted]
    if all(w in names for w in lowered):
        return tuple(names.index(w) + 1 for w in lowered)
    if ds.count == len(wanted):
        return tuple(range(1, ds.count + 1))
    raise InputError(
        f"{ds.name!r} has {ds.count} band(s) (descriptions: {', '.join(d or '-' for d in ds.descriptions)}) "
        f"but the model expects {len(wanted)}: {','.join(wanted)}; pass --bands with {len(wanted)} "
        "1-based band numbers in the model's order"
    )


def chip(ds: rasterio.io.DatasetReader, tile: Tile, *, bands: Sequence[int]) -> Chip:
    """Read ``tile``'s read window from ``ds``: valid part by windowed read, rest mirror-padded.

    The valid mask comes from GDAL's dataset mask (nodata value, alpha band or mask band).
    """
    rows, cols = ds.height, ds.width
    inner = tile.read.clip(rows, cols)
    window = RioWindow(inner.col, inner.row, inner.width, inner.height)
    try:
        data = ds.read(list(bands), window=window, out_dtype="float32")
        valid = ds.dataset_mask(window=window) > 0
    except RasterioIOError as exc:
        raise ReadError(
            f"reading window {inner} of {ds.name!r} failed ({first_line(exc)}); "
            "the file may be truncated or corrupt: re-download or re-export it"
        ) from exc
    if valid.any() and not valid.all():
        data = mirror_fill(data, valid)
    pad = tile.padding
    return Chip(tile=tile, data=mirror_pad(data, pad), valid=_pad_mask(valid, pad))


def array_chip(image: np.ndarray, tile: Tile) -> Chip:
    """The in-memory twin of :func:`chip`: ``tile``'s read window of an image ``(C, H, W)``.

    Every pixel of the image is valid; the part of the window outside it is mirror-padded
    exactly as :func:`chip` pads past the raster's edge.

    Example:
        >>> from geounet.tiling import grid
        >>> c = array_chip(np.arange(16.0).reshape(1, 4, 4), grid((4, 4), tile=4, halo=1)[0])
        >>> c.data.shape, c.valid.sum(), c.data[0, 0].tolist()
        ((1, 4, 4), np.int64(9), [5.0, 4.0, 5.0, 6.0])
    """
    inner = tile.read.clip(image.shape[1], image.shape[2])
    data = np.asarray(image[(slice(None), *inner.to_slices())], dtype=np.float32)
    valid = np.ones(data.shape[1:], dtype=bool)
    return Chip(tile=tile, data=mirror_pad(data, tile.padding), valid=_pad_mask(valid, tile.padding))


def mirror_fill(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid pixels with their mirror image across the nearest valid pixel.

    For invalid pixel p with nearest valid pixel q, the fill is the value at 2q - p when
    that pixel is valid (a reflection across the valid-data edge, like ``np.pad`` reflect
    at a straight edge), else the value at q. ``data`` is (bands, rows, cols).

    Example:
        >>> d = np.array([[[1., 2., 3., 0., 0.]]])
        >>> mirror_fill(d, np.array([[True, True, True, False, False]]))[0, 0].tolist()
        [1.0, 2.0, 3.0, 2.0, 1.0]
    """
    if valid.all() or not valid.any():
        return data
    from scipy import ndimage  # here, not at import: ~0.4 s of every run's start, needed only with gaps

    _, (qr, qc) = ndimage.distance_transform_edt(~valid, return_indices=True)
    pr, pc = np.indices(valid.shape)
    mr = np.clip(2 * qr - pr, 0, valid.shape[0] - 1)
    mc = np.clip(2 * qc - pc, 0, valid.shape[1] - 1)
    use_mirror = valid[mr, mc]
    src_r = np.where(use_mirror, mr, qr)
    src_c = np.where(use_mirror, mc, qc)
    filled = data[:, src_r, src_c]
    return np.where(valid[None], data, filled)


def mirror_pad(data: np.ndarray, pad: Padding) -> np.ndarray:
    """Reflect (bands, rows, cols) ``data`` outward by ``pad`` (numpy "reflect": edge not repeated).

    Example:
        >>> mirror_pad(np.arange(4.0).reshape(1, 1, 4), Padding(0, 0, 2, 1))[0, 0].tolist()
        [2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0]
        >>> mirror_pad(np.arange(4.0).reshape(1, 2, 2), Padding(1, 0, 0, 0))[0].tolist()
        [[2.0, 3.0], [0.0, 1.0], [2.0, 3.0]]
    """
    if not pad.any:
        return data
    # numpy cannot reflect a single row/column: repeat it instead.
    row_mode: Literal["reflect", "edge"] = "reflect" if data.shape[1] > 1 else "edge"
    col_mode: Literal["reflect", "edge"] = "reflect" if data.shape[2] > 1 else "edge"
    out = np.pad(data, ((0, 0), (pad.top, pad.bottom), (0, 0)), mode=row_mode)
    return np.pad(out, ((0, 0), (0, 0), (pad.left, pad.right)), mode=col_mode)


def _pad_mask(valid: np.ndarray, pad: Padding) -> np.ndarray:
    if not pad.any:
        return valid
    return np.pad(valid, ((pad.top, pad.bottom), (pad.left, pad.right)), constant_values=False)


def read_window(path: str | Path, window: Window, *, bands: Sequence[int] | None = None) -> np.ndarray:
    """Plain windowed read (bands, rows, cols) of the part of ``window`` inside the raster."""
    with open_raster(path) as ds:
        inner = window.clip(ds.height, ds.width)
        idx = list(bands) if bands else list(range(1, ds.count + 1))
        return ds.read(idx, window=RioWindow(inner.col, inner.row, inner.width, inner.height))
