"""Raster and vector parts of a distributed prediction, and their assembly into the final products.

A parts executor (:meth:`geounet.distributed.RayExecutor.produce`) lets the workers finish every
tile where it was predicted, so no pixel travels to the driver:

- :func:`write_tile` writes, per tile core, a small georeferenced GeoTIFF (band 1 classes,
  band 2 confidence, nodata 255; with ``--outputs ...,probabilities`` a second one, ``.probs.tif``,
  one percent band per class; with ``observations`` a uint16 ``.obs.tif`` of the core's counts
  of clear valid observations), the tile's final polygons (those touching no internal tile
  edge, as GeoParquet) and, last, a marker ``.npz`` holding the tile's *seam pieces* (the
  polygon pieces cut by tile edges, with their edge strips) and who wrote it. Each file is
  written under a hidden temporary name, fsync'd and renamed, and the marker only after the
  others: a tile whose marker exists is complete (:func:`complete`), so a rerun reuses it.
- :func:`assemble` turns the parts into ``classes.tif`` and ``confidence.tif`` (a GDAL VRT of
  the parts converted by GDAL's COG driver with all CPUs, the same color table, category
  names, nodata, description and styles as :class:`geounet.write.CogWriter`) and the polygon
  layer (the parts' final polygons plus the dissolved seam pieces, written with
  :func:`geounet.publish.write_vector_chunks`); ``probabilities.tif`` goes through the driver
  path's own writer (:func:`assemble_probabilities`).

The parts live in ``OUT/.geounet-run/tiles`` (the run directory of :mod:`geounet.resume`, so a
changed job discards them and a published job removes them). Every Ray node must see ``OUT``
(a shared filesystem). No Ray here: :mod:`geounet.distributed` runs these functions in tasks.
"""

from __future__ import annotations

import json
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from geounet import publish, vectorize
from geounet.atomic import fsync_dir, replacing
from geounet.errors import ExecutionError, InputError, WriteError
from geounet.geo import Grid, Window
from geounet.jobs import Job, TileResult
from geounet.merge import NODATA_CONFIDENCE
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.publish.observations import write_observations
from geounet.publish.probabilities import ProbabilityWriter, to_percent
from geounet.resume import RUN_DIR
from geounet.styles import class_tags
from geounet.vectorize.outline import Outlines
from geounet.write import cog_options, color_table, verify_cog, write_sidecars

#: Folder of the parts inside the run directory.
PARTS_DIR = "tiles"

#: Band descriptions, as :func:`geounet.rasters.write_rasters` gives them.
CLASSES_DESCRIPTION = "class id"
CONFIDENCE_DESCRIPTION = "confidence of the winning class (percent)"


@dataclass(frozen=True)
class PartInfo:
    """What a worker reports for one finished tile: small, so the driver stays idle.

    ``node`` is the node that wrote the parts (Ray node id, or any label), ``pid`` its process.
    """

    index: int
    skipped: bool
    node: str
    pid: int


def folder_of(job: Job) -> Path:
    """Where the parts of ``job`` are written (inside its run directory)."""
    return job.out_dir / RUN_DIR / PARTS_DIR


def part_name(index: int, suffix: str) -> str:
    """File name of tile ``index``'s part with ``suffix``.

    Example:
        >>> part_name(12, ".tif")
        't00000012.tif'
    """
    return f"t{index:08d}{suffix}"


def vectors_per_tile(simplify: float | None, grid: Grid) -> bool:
    """Whether polygons can be finished tile by tile with this ``simplify`` tolerance.

    True when simplification keeps the exact pixel outlines (``simplify=0``, or a tolerance
    below sqrt(pixel area / 2); None means half a pixel), the same condition under which
    :func:`geounet.vectorize.iter_polygons` finishes polygons block by block. Larger
    tolerances simplify the whole coverage at once; then the polygons come from the COG.

    Example:
        >>> g = Grid(shape=(4, 4), transform=Affine(10, 0, 0, 0, -10, 0), crs="EPSG:32633")
        >>> vectors_per_tile(None, g), vectors_per_tile(0, g), vectors_per_tile(20.0, g)
        (True, True, False)
    """
    tolerance = 0.5 * min(grid.resolution) if simplify is None else float(simplify)
    return tolerance <= 0 or tolerance**2 < 0.5 * grid.pixel_area


#: The marker's suffix. Format 2 keeps the seam outlines as plain vertex arrays (format 1, ``.npz``,
#: held WKB): a tile whose marker is of an older format is not complete, so a rerun redoes it.
MARKER = ".seams2.npz"


def complete(folder: Path, indexes: Iterable[int]) -> set[int]:
    """The tiles among ``indexes`` whose parts are complete (their marker exists)."""
    if not folder.is_dir():
        return set()
    names = set(os.listdir(folder))
    return {i for i in indexes if part_name(i, MARKER) in names}


# -- the workers' side -----------------------------------------------------------------------------


def write_tiles(
    job: Job,
    results: Iterable[TileResult],
    *,
    classes: Sequence[ClassInfo],
    node: str,
    vectors: bool = True,
) -> list[PartInfo]:
    """:func:`write_tile` for each result (crop merge: classes and confidence of the core)."""
    folder = folder_of(job)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_tile(job, res, classes=classes, folder=folder, node=node, vectors=vectors) for res in results
    ]


def write_tile(
    job: Job,
    result: TileResult,
    *,
    classes: Sequence[ClassInfo],
    folder: Path,
    node: str,
    vectors: bool = True,
) -> PartInfo:
    """Write one tile's raster part, final polygons and seam marker (the marker last).

    Raises:
        WriteError: when a part cannot be written (the message names the file).
    """
    tile = result.tile
    info = PartInfo(index=tile.index, skipped=result.skipped, node=node, pid=os.getpid())
    seam: vectorize.BlockParts | None = None
    try:
        if not result.skipped:
            if result.classes is None or result.confidence is None:
                raise InputError(
                    f"tile {tile.index} has no classes/confidence (merge=blend?); parts need --merge crop"
                )
            _write_raster(folder / part_name(tile.index, ".tif"), job.grid, tile.core, result)
            if result.probs is not None:  # --outputs ...,probabilities
                _write_probabilities(
                    folder / part_name(tile.index, ".probs.tif"), job.grid, tile.core, result
                )
            if result.observations is not None:  # --outputs ...,observations
                obs = result.observations[None].astype(np.uint16)
                _write_part(folder / part_name(tile.index, ".obs.tif"), job.grid, tile.core, obs, nodata=None)
            if vectors:
                seam = _write_polygons(folder / part_name(tile.index, ".parquet"), job, result, classes)
        _write_marker(folder / part_name(tile.index, MARKER), seam, info)
    except OSError as exc:
        raise WriteError(
            f"cannot write the parts of tile {tile.index} in {folder} ({exc}); free disk space, check that "
            "--out is writable from every Ray node, or rerun with --executor local"
        ) from exc
    return info


def _write_raster(path: Path, grid: Grid, core: Window, result: TileResult) -> None:
    """Classes (band 1) and confidence (band 2) of one core as a georeferenced GeoTIFF."""
    assert result.classes is not None and result.confidence is not None
    _write_part(path, grid, core, np.stack([result.classes, result.confidence]).astype(np.uint8))


def _write_probabilities(path: Path, grid: Grid, core: Window, result: TileResult) -> None:
    """The core's probabilities as percent (one band per class, 255 where the class is nodata)."""
    assert result.probs is not None and result.classes is not None
    _write_part(path, grid, core, to_percent(result.probs, result.classes != NODATA_CLASS))


def _write_part(
    path: Path, grid: Grid, core: Window, bands: np.ndarray, *, nodata: int | None = NODATA_CLASS
) -> None:
    """(bands, rows, cols) of one core as a georeferenced GeoTIFF, fsync'd and renamed.

    ``nodata`` 255 (= NODATA_CONFIDENCE) serves the class, confidence and percent bands."""
    part = grid.window_grid(core)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": core.width,
        "height": core.height,
        "count": len(bands),
        "dtype": bands.dtype.name,
        "nodata": nodata,
        "compress": "zstd",
        "zstd_level": 1,
    }
    if grid.crs is not None or grid.transform != Affine.identity():
        profile["transform"] = part.transform
    if grid.crs is not None:
        profile["crs"] = grid.crs
    with replacing(path, suffix=".tif") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **profile) as ds:
                ds.write(bands)
        _fsync(tmp)


def _write_polygons(
    path: Path, job: Job, result: TileResult, classes: Sequence[ClassInfo]
) -> vectorize.BlockParts:
    """Vectorize the core: final polygons to ``path`` (GeoParquet); the seam pieces are returned."""
    assert result.classes is not None
    piece = vectorize.block_polygons(
        result.classes,
        window=result.tile.core,
        confidence=result.confidence,
        nodata=NODATA_CLASS,
        confidence_nodata=NODATA_CONFIDENCE,
    )
    final, seam = vectorize.split_seams(piece, job.grid.shape)
    frame = _frame(final, job, classes)
    with replacing(path, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)
        _fsync(tmp)
    return seam


def _frame(parts: vectorize.Parts, job: Job, classes: Sequence[ClassInfo]) -> gpd.GeoDataFrame:
    return vectorize.to_frame(
        parts,
        grid=job.grid,
        classes=classes,
        simplify=job.options.simplify,
        min_area=job.options.min_area,
        with_confidence=True,
    )


def _write_marker(path: Path, seam: vectorize.BlockParts | None, info: PartInfo) -> None:
    """The seam pieces (outlines as plain arrays, no pickle) and the part's metadata, durably."""
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(info.__dict__))}
    if seam is not None:
        ragged = seam.parts.geometry
        assert isinstance(ragged, Outlines), "seam pieces keep their outlines (vectorize.block_polygons)"
        w = seam.window
        arrays |= {
            "window": np.array([w.row, w.col, w.height, w.width], dtype=np.int64),
            "class_id": seam.parts.class_id,
            "pixels": seam.parts.pixels,
            "conf_sum": seam.parts.conf_sum,
            "conf_count": seam.parts.conf_count,
            "x": ragged.x,
            "y": ragged.y,
            "ring_offsets": ragged.ring_offsets,
            "poly_offsets": ragged.poly_offsets,
            "top": seam.top,
            "bottom": seam.bottom,
            "left": seam.left,
            "right": seam.right,
        }
    with replacing(path, suffix=".npz", durable=True) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading parts back --------------------------------------------------------------------------


def read_info(folder: Path, index: int) -> PartInfo:
    """The metadata recorded with tile ``index``'s parts."""
    with np.load(folder / part_name(index, MARKER), allow_pickle=False) as npz:
        return PartInfo(**json.loads(str(npz["meta"])))


def read_seams(folder: Path, index: int) -> vectorize.BlockParts | None:
    """Tile ``index``'s seam pieces (None for a skipped tile or one written without polygons)."""
    with np.load(folder / part_name(index, MARKER), allow_pickle=False) as npz:
        if "window" not in npz.files:
            return None
        ragged = Outlines(npz["x"], npz["y"], npz["ring_offsets"], npz["poly_offsets"])
        parts = vectorize.Parts.of(npz["class_id"], npz["pixels"], npz["conf_sum"], npz["conf_count"], ragged)
        return vectorize.BlockParts(
            window=Window(*(int(v) for v in npz["window"])),
            parts=parts,
            top=npz["top"],
            bottom=npz["bottom"],
            left=npz["left"],
            right=npz["right"],
        )


# -- assembly --------------------------------------------------------------------------------------


def assemble(job: Job, *, classes: Sequence[ClassInfo], vectors: bool = True) -> dict[str, Any]:
    """Build ``classes.tif``, ``confidence.tif`` and (with ``vectors``) the polygon layer from the parts.

    Returns the counts of :func:`geounet.rasters.write_rasters` (``tiles``, ``predicted``,
    ``skipped``) plus ``vectors``: the polygon layer's path (as text), when ``vectors``.

    Raises:
        ExecutionError: tiles without parts (``--out`` not shared by every Ray node?).
        InputError: no tile had a valid pixel (nothing is written).
        WriteError: a product cannot be written.
    """
    folder = folder_of(job)
    indexes = range(len(job.plan))
    missing = sorted(set(indexes) - complete(folder, indexes))
    if missing:
        raise ExecutionError(
            f"{len(missing)} of {len(job.plan)} tiles have no parts in {folder} (first: tile {missing[0]}); "
            "--out must be a folder every Ray node sees (a shared filesystem); rerun to resume"
        )
    infos = [read_info(folder, i) for i in indexes]
    predicted = [i.index for i in infos if not i.skipped]
    counts: dict[str, Any] = {
        "tiles": len(job.plan),
        "predicted": len(predicted),
        "skipped": len(job.plan) - len(predicted),
    }
    if not predicted:
        raise InputError(
            f"{job.source!r} has no valid pixel in any of its {counts['tiles']} tiles (all nodata or "
            "outside the AOI); check the input's nodata value, the AOI and the scenes' dates"
        )
    windows = [(folder / part_name(i, ".tif"), job.plan[i].core) for i in predicted]
    build_cog(job.out_dir / "classes.tif", job.grid, windows, band=1, classes=classes)
    build_cog(job.out_dir / "confidence.tif", job.grid, windows, band=2, classes=None)
    if "probabilities" in job.options.outputs:
        assemble_probabilities(job, predicted, classes=classes)
    if "observations" in job.options.outputs:
        blocks = ((job.plan[i].core, _read_part(folder / part_name(i, ".obs.tif"))[0]) for i in predicted)
        write_observations(job.out_dir / "observations.tif", blocks, grid=job.grid)
    if vectors:
        _, ext, _ = publish.VECTOR_FORMATS[job.options.vector_format]
        path = publish.write_vector_chunks(
            polygon_chunks(job, predicted, classes=classes),
            job.out_dir / f"polygons{ext}",
            classes=classes,
            fmt=job.options.vector_format,
        )
        counts["vectors"] = str(path)
    return counts


def assemble_probabilities(job: Job, indexes: Sequence[int], *, classes: Sequence[ClassInfo]) -> Path:
    """``probabilities.tif`` from the tiles' percent parts, through the in-process writer.

    The same :class:`~geounet.publish.probabilities.ProbabilityWriter` as the driver path, fed
    the workers' uint8 parts: the file is byte-for-byte what an in-process run writes.
    """
    folder = folder_of(job)
    with ProbabilityWriter(job.out_dir / "probabilities.tif", job.grid, classes=classes) as writer:
        for i in indexes:
            writer.write_percent(job.plan[i].core, _read_part(folder / part_name(i, ".probs.tif")))
    return job.out_dir / "probabilities.tif"


def _read_part(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.asarray(src.read())


def polygon_chunks(
    job: Job, indexes: Sequence[int], *, classes: Sequence[ClassInfo]
) -> Iterator[gpd.GeoDataFrame]:
    """The tiles' final polygons, one chunk per tile, then the dissolved seam pieces (always a chunk)."""
    folder = folder_of(job)
    seams = []
    for i in indexes:
        frame = gpd.read_parquet(folder / part_name(i, ".parquet"))
        if len(frame):
            yield frame.set_crs(job.grid.crs, allow_override=True) if job.grid.crs else frame
        seam = read_seams(folder, i)
        if seam is not None:
            seams.append(seam)
    merged = vectorize.dissolve(vectorize.consume(seams))  # the pieces go as they are merged
    yield _frame(merged, job, classes)


def vrt_xml(
    grid: Grid,
    sources: Sequence[tuple[Path, Window]],
    *,
    band: int,
    classes: Sequence[ClassInfo] | None,
    description: str | None = None,
) -> str:
    """A GDAL VRT of one band of the parts laid out on ``grid``; uncovered pixels read as nodata.

    Example:
        >>> xml = vrt_xml(Grid(shape=(4, 6)), [(Path("t1.tif"), Window(0, 2, 4, 4))], band=2, classes=None)
        >>> '<DstRect xOff="2" yOff="0" xSize="4" ySize="4" />' in xml, "<SourceBand>2</SourceBand>" in xml
        (True, True)
    """
    root = ET.Element("VRTDataset", rasterXSize=str(grid.cols), rasterYSize=str(grid.rows))
    if grid.crs is not None:
        wkt = CRS.from_user_input(grid.crs).to_wkt()
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = wkt
    if grid.crs is not None or grid.transform != Affine.identity():
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in grid.transform.to_gdal())
    rb = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
    if description:
        ET.SubElement(rb, "Description").text = description
    ET.SubElement(rb, "NoDataValue").text = str(NODATA_CLASS if classes is not None else NODATA_CONFIDENCE)
    if classes is not None:
        ET.SubElement(rb, "ColorInterp").text = "Palette"
        table = ET.SubElement(rb, "ColorTable")
        for _, rgba in sorted(color_table(classes).items()):
            ET.SubElement(table, "Entry", {f"c{k + 1}": str(v) for k, v in enumerate(rgba)})
        metadata = ET.SubElement(rb, "Metadata")  # the class names inside the TIFF, as CogWriter writes them
        for key, value in class_tags(classes).items():
            ET.SubElement(metadata, "MDI", key=key).text = value
    for path, w in sources:
        src = ET.SubElement(rb, "SimpleSource")
        ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = str(path)
        ET.SubElement(src, "SourceBand").text = str(band)
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w.width), ySize=str(w.height))
        ET.SubElement(
            src, "DstRect", xOff=str(w.col), yOff=str(w.row), xSize=str(w.width), ySize=str(w.height)
        )
    return ET.tostring(root, encoding="unicode")


def build_cog(
    path: Path,
    grid: Grid,
    sources: Sequence[tuple[Path, Window]],
    *,
    band: int,
    classes: Sequence[ClassInfo] | None,
) -> Path:
    """One band of the parts → a COG at ``path`` with sidecars, as :class:`geounet.write.CogWriter` makes it.

    Classes (``classes`` given): mode overviews, color table, category names (``.aux.xml``) and
    a paletted QGIS style; confidence: average overviews and a gradient style (0-100). GDAL's
    COG driver converts the VRT with all CPUs; the result is read back before it is renamed.
    """
    vrt = path.with_name(f".{path.stem}.parts.vrt")
    tmp = path.with_name(f".{path.name}.assembling.tif")
    description = CLASSES_DESCRIPTION if classes is not None else CONFIDENCE_DESCRIPTION
    xml = vrt_xml(grid, sources, band=band, classes=classes, description=description)
    options = cog_options(dtype="uint8", resampling="mode" if classes is not None else "average")
    try:
        vrt.write_text(xml, encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            rasterio.shutil.copy(vrt, tmp, driver="COG", **options)
            verify_cog(tmp, path)
        _fsync(tmp)
        # sidecars first, the raster last, as CogWriter does
        write_sidecars(path, classes=classes, value_range=(0.0, 100.0))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise WriteError(f"cannot write COG {path}: {exc}; check disk space and permissions") from exc
    finally:
        for p in (vrt, tmp, tmp.with_name(tmp.name + ".aux.xml")):
            p.unlink(missing_ok=True)
    return path
