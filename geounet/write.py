"""Cloud-Optimized GeoTIFF writer: tile cores in, one finished COG (plus QGIS/GDAL sidecars) out.

:class:`CogWriter` takes the prediction window by window (any order, any window sizes)
into a tiled, sparse scratch GeoTIFF beside the target, so the whole raster is never in
memory. On a clean exit it converts the scratch file with GDAL's COG driver (which
streams: it builds overviews block by block) and renames the result onto ``path``; an
exception inside the ``with`` block, or :meth:`CogWriter.abort`, removes everything and
leaves no ``path``. Pixels never written read as ``nodata`` (sparse blocks), which is
how skipped tiles become nodata.

Beside a class raster it writes:

- a GDAL color table inside the COG (the classes' colors; other values black, 255 the
  nodata value);
- ``<name>.tif.aux.xml``: GDAL's PAM sidecar with the class names as category names
  (``gdalinfo`` lists them; TIFF has no tag for them, so GDAL itself keeps them there);
- ``<name>.qml``: a QGIS style that QGIS loads by default with the layer: a paletted
  renderer listing only the model's classes with their names (without it QGIS lists all
  256 entries of the TIFF color table).

Beside a continuous raster (confidence) the ``.qml`` is a pseudo-color gradient.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RioWindow

from geounet import styles
from geounet.atomic import temp_path, write_text
from geounet.errors import ConfigError, InputError, WriteError, first_line
from geounet.geo import Grid, Window
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.styles import gradient_qml, paletted_qml

#: Overview resampling methods GDAL's COG driver accepts (lower-case names).
RESAMPLING = ("nearest", "mode", "average", "bilinear", "cubic", "cubicspline", "lanczos", "rms")

#: Colors of the confidence gradient (low → high): red, yellow, green.


class CogWriter:
    """Write a single-band raster window by window; finish it as a Cloud-Optimized GeoTIFF.

    Args:
        path: the final ``.tif``; it appears only when the raster is complete.
        grid: shape, transform and CRS of the output (``crs=None``: a plain photo, written
            without georeferencing).
        dtype: numpy/GDAL data type name, e.g. ``"uint8"`` or ``"float32"``.
        nodata: the nodata value (also the value of never-written pixels), or None.
        classes: for class rasters: the classes, written as color table, category names
            and QGIS paletted style. None for continuous rasters (gradient style).
        resampling: overview resampling, ``"mode"`` for classes, ``"average"`` for scores.
        block: internal tile size of the COG (px).
        description: band description (shown by ``gdalinfo`` and QGIS).
        value_range: (min, max) of the QGIS gradient for continuous rasters; default
            (0, 1) for floats, (0, 100) for integers (confidence in percent).
        compress: ``"deflate"`` (default, read everywhere) or ``"zstd"``.
        num_threads: GDAL threads for compression and overviews.

    Example (``grid`` and ``tiles`` from the caller)::

        with CogWriter(out / "classes.tif", grid, dtype="uint8", nodata=255, classes=classes) as w:
            for tile, array in predictions:
                w.write(tile.core, array)

    Not thread-safe: call :meth:`write` from one thread.
    """

    def __init__(
        self,
        path: Path,
        grid: Grid,
        *,
        dtype: str,
        nodata: float | int | None,
        classes: Sequence[ClassInfo] | None = None,
        resampling: str = "mode",
        block: int = 512,
        description: str | None = None,
        value_range: tuple[float, float] | None = None,
        compress: str = "deflate",
        num_threads: int | str = "ALL_CPUS",
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.dtype = np.dtype(dtype)
        self.nodata = nodata
        self.classes = tuple(classes) if classes is not None else None
        self.resampling = _check_resampling(resampling)
        if block <= 0 or block % 16:
            raise ConfigError(f"block={block} must be a positive multiple of 16; use e.g. 512")
        self.block = block
        self.description = description
        self.value_range = value_range
        if compress.lower() not in ("deflate", "zstd"):
            raise ConfigError(f"compress={compress!r} is not supported; use 'deflate' or 'zstd'")
        self.compress = compress.upper()
        self.num_threads = str(num_threads)
        if self.classes is not None:
            _check_classes(self.classes, self.dtype)
        self._scratch = temp_path(self.path, ".parts.tif")
        self._ds: Any = None
        self._done = False
        self._written = False  # the scratch file is closed (finish_writing)

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> CogWriter:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- API -------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the scratch file (called by ``with``)."""
        if not self.path.parent.is_dir():
            raise WriteError(f"output folder {self.path.parent} does not exist; create it first")
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": self.grid.cols,
            "height": self.grid.rows,
            "count": 1,
            "dtype": self.dtype.name,
            "nodata": self.nodata,
            "tiled": True,
            "blockxsize": self.block,
            "blockysize": self.block,
            "sparse_ok": True,
            "compress": "zstd",
            "zstd_level": 1,
            "bigtiff": "if_safer",
        }
        if self.grid.crs is not None or self.grid.transform != Affine.identity():
            profile["transform"] = self.grid.transform
        if self.grid.crs is not None:
            profile["crs"] = self.grid.crs
        if self.classes is not None:
            profile["photometric"] = "palette"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # photos: no CRS on purpose
                self._ds = rasterio.open(self._scratch, "w", **profile)
            # The color table must be set before any pixel is written (TIFF photometric tag).
            if self.classes is not None:
                self._ds.write_colormap(1, color_table(self.classes))
        except rasterio.errors.RasterioError as exc:
            with contextlib.suppress(OSError):  # cleaning up a name the OS refused must not hide why
                self.abort()
            raise WriteError(
                f"cannot create {self._scratch}: {exc}; check disk space and permissions"
            ) from exc

    def write(self, window: Window, array: np.ndarray) -> None:
        """Write a (height, width) array at ``window`` of the grid (window inside the grid)."""
        if self._ds is None:
            raise WriteError(f"{self.path}: write() outside the with-block; use `with CogWriter(...) as w`")
        if array.shape != window.shape:
            raise InputError(
                f"array shape {array.shape} != window shape {window.shape} for {self.path.name}; "
                "crop the prediction to the tile core"
            )
        if window.clip(*self.grid.shape) != window:
            raise InputError(f"{window} reaches outside the grid {self.grid.shape}; write only core windows")
        rio_window = RioWindow(window.col, window.row, window.width, window.height)
        self._ds.write(np.asarray(array, dtype=self.dtype), 1, window=rio_window)

    def finish_writing(self) -> None:
        """Close the scratch file after the last :meth:`write` (the COG is built on :meth:`close`).

        That writes GDAL's cached blocks of it and lets the cache go: a 6000² class raster is
        36 MB that would otherwise stay in memory while a run dissolves its polygons' seams.
        """
        if self._ds is None:
            return
        try:
            self._finish_scratch()
        except BaseException:
            self.abort()
            raise
        self._written = True

    def close(self) -> None:
        """Finish: build the COG and its sidecars, rename onto ``path``; cleans up on failure."""
        if self._done:
            return
        try:
            if not self._written:
                self._finish_scratch()  # raises when nothing was opened
            self._build()
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Drop everything written so far; ``path`` is left as it was (absent for a new file)."""
        if self._ds is not None:
            with contextlib.suppress(Exception):
                self._ds.close()
            self._ds = None
        for p in (self._scratch, _aux(self._scratch)):
            p.unlink(missing_ok=True)
        self._done = True

    # -- internals -------------------------------------------------------------------------

    def _finish_scratch(self) -> None:
        ds, self._ds = self._ds, None
        if ds is None:
            raise WriteError(f"{self.path}: nothing was opened; use `with CogWriter(...) as w`")
        try:
            if self.description:
                ds.set_band_description(1, self.description)
            if self.classes is not None:  # class names inside the TIFF too, not only in the .aux.xml
                ds.update_tags(1, **styles.class_tags(self.classes))
        finally:
            ds.close()

    def _build(self) -> None:
        tmp = temp_path(self.path, ".tif")
        options = cog_options(
            dtype=self.dtype.name,
            resampling=self.resampling,
            block=self.block,
            compress=self.compress,
            num_threads=self.num_threads,
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                rasterio.shutil.copy(self._scratch, tmp, driver="COG", **options)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                verify_cog(tmp, self.path)
            # Sidecars first, the raster last: once `path` exists, everything is complete.
            write_sidecars(self.path, classes=self.classes, value_range=self._value_range())
            os.replace(tmp, self.path)
        except WriteError:
            raise
        except (rasterio.errors.RasterioError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise WriteError(
                f"cannot write COG {self.path}: {exc}; check disk space and permissions"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
            _aux(tmp).unlink(missing_ok=True)
            self._scratch.unlink(missing_ok=True)
            _aux(self._scratch).unlink(missing_ok=True)

    def _value_range(self) -> tuple[float, float]:
        if self.value_range is not None:
            return self.value_range
        return (0.0, 1.0) if self.dtype.kind == "f" else (0.0, 100.0)


def cog_options(
    *,
    dtype: str,
    resampling: str,
    block: int = 512,
    compress: str = "deflate",
    num_threads: int | str = "ALL_CPUS",
) -> dict[str, str]:
    """Creation options of GDAL's COG driver for every COG geounet writes (one place for both
    :class:`CogWriter` and the Ray parts assembly, :func:`geounet.parts.build_cog`).

    Example:
        >>> cog_options(dtype="uint8", resampling="mode")["PREDICTOR"], cog_options(dtype="float32", resampling="average")["PREDICTOR"]
        ('2', '3')
    """
    return {
        "BLOCKSIZE": str(block),
        "COMPRESS": compress.upper(),
        "PREDICTOR": "3" if np.dtype(dtype).kind == "f" else "2",
        "OVERVIEW_RESAMPLING": resampling.upper(),
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": str(num_threads),
    }


def write_sidecars(
    path: Path, *, classes: Sequence[ClassInfo] | None, value_range: tuple[float, float]
) -> None:
    """The sidecars of a COG at ``path``: category names (``.aux.xml``) and a paletted QGIS style
    for classes; a gradient style over ``value_range`` (and no ``.aux.xml``) for a continuous raster."""
    aux, qml = _aux(path), path.with_suffix(".qml")
    if classes is not None:
        write_text(aux, category_aux_xml(classes))
        write_text(qml, paletted_qml(classes))
    else:
        aux.unlink(missing_ok=True)
        write_text(qml, gradient_qml(value_range))


def verify_cog(tmp: Path, path: Path) -> None:
    """Read every block of ``tmp`` back, overviews too: GDAL reports some write failures (a full
    disk while building the COG) only as log lines and leaves a truncated file behind."""
    with rasterio.open(tmp) as ds:
        levels: list[int | None] = [None, *range(len(ds.overviews(1)))]
    try:
        for level in levels:
            with rasterio.open(tmp, **({} if level is None else {"overview_level": level})) as ds:
                for _, window in ds.block_windows(1):
                    ds.read(1, window=window)
    except rasterio.errors.RasterioError as exc:
        raise WriteError(
            f"COG {path} came out incomplete ({first_line(exc)}); "
            "the disk is probably full: free space and rerun"
        ) from exc


def write_array(path: Path, array: np.ndarray, grid: Grid, **options: Any) -> Path:
    """Write a whole in-memory 2-D array as a COG (small rasters, tests); options as :class:`CogWriter`.

    ``dtype`` defaults to the array's and ``nodata`` to None.
    """
    options.setdefault("dtype", array.dtype.name)
    options.setdefault("nodata", None)
    with CogWriter(path, grid, **options) as w:
        w.write(grid.full_window(), array)
    return path


# -- styles and sidecars ------------------------------------------------------------------


def color_table(classes: Sequence[ClassInfo]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL color table: the classes' colors, every other value of 0..255 transparent black.

    Example:
        >>> ct = color_table([ClassInfo(1, "water", "#1f78b4")])
        >>> ct[1], ct[0], ct[255], len(ct)
        ((31, 120, 180, 255), (0, 0, 0, 0), (0, 0, 0, 0), 256)
    """
    table = {v: (0, 0, 0, 0) for v in range(256)}
    for c in classes:
        table[c.id] = (*c.rgb, 255)
    return table


def category_aux_xml(classes: Sequence[ClassInfo]) -> str:
    """GDAL PAM XML (``.aux.xml``) holding the class names as the band's category names.

    Category names are indexed by pixel value; values without a class get an empty name.

    Example:
        >>> "<Category>water</Category>" in category_aux_xml([ClassInfo(1, "water", "#1f78b4")])
        True
    """
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = {c.id: c.name for c in classes}
    cats = ET.SubElement(band, "CategoryNames")
    for value in range(max(names) + 1):
        ET.SubElement(cats, "Category").text = names.get(value, "")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _aux(path: Path) -> Path:
    return path.with_name(path.name + ".aux.xml")


def _check_resampling(name: str) -> str:
    if name.lower() not in RESAMPLING:
        raise ConfigError(f"resampling={name!r} is unknown; use one of {', '.join(RESAMPLING)}")
    return name.lower()


def _check_classes(classes: Sequence[ClassInfo], dtype: np.dtype[Any]) -> None:
    if dtype != np.uint8:
        raise ConfigError(f"a class raster must be uint8 (GDAL color tables), got dtype={dtype}; use uint8")
    ids = [c.id for c in classes]
    bad = [i for i in ids if not 0 <= i < NODATA_CLASS]
    if bad or len(set(ids)) != len(ids):
        raise ConfigError(
            f"class ids {ids} must be unique and in 0..254 (255 is nodata); fix the model's classes"
        )
