"""Polygons from class rasters: seam dissolve, counts, areas, holes, simplification, attributes.

Inputs are real-data stand-ins for a model output (see ``tests/fixtures_qgis.py``).
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from geounet import vectorize
from geounet.errors import ConfigError, InputError, InputNotFoundError
from geounet.geo import Grid, Window
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.write import write_array

FOUR = ndimage.generate_binary_structure(2, 1)
UTM = Affine(10, 0, 330000.5, 0, -10, 5822040.0)  # not on whole metres: exercises the affine
CLASSES = [
    ClassInfo(0, "water", "#0000ff"),
    ClassInfo(1, "field", "#ffff00"),
    ClassInfo(2, "forest", "#00aa00"),
]


def components(array: np.ndarray) -> dict[int, int]:
    """4-connected component count per class (nodata excluded)."""
    return {
        int(v): ndimage.label(array == v, structure=FOUR)[1] for v in np.unique(array) if v != NODATA_CLASS
    }


def pixel_area_per_class(array: np.ndarray, grid: Grid) -> dict[int, float]:
    values, counts = np.unique(array[array != NODATA_CLASS], return_counts=True)
    return {int(v): float(n) * grid.pixel_area for v, n in zip(values, counts, strict=True)}


def crop(raster, rows: slice, cols: slice) -> tuple[np.ndarray, Grid]:
    window = Window(rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start)
    return raster.array[rows, cols], raster.grid.window_grid(window)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=st.integers(min_value=16, max_value=256), seed=st.integers(0, 2**16))
def test_feature_count_is_connected_components_for_any_block_size(ndvi_classes, block, seed) -> None:
    array, grid = crop(ndvi_classes, slice(200, 328), slice(700, 900))
    windows = list(vectorize.blocks(grid.shape, block))
    random.Random(seed).shuffle(windows)  # workers finish in any order
    parts = vectorize.dissolve(vectorize.block_polygons(array[w.to_slices()], window=w) for w in windows)
    expected = components(array)
    got = np.bincount(parts.class_id, minlength=4)
    assert {k: int(got[k]) for k in expected} == expected
    # Exact pixel outlines: each polygon's area is its pixel count, in pixel units.
    np.testing.assert_array_equal(shapely.area(parts.shapes()), parts.pixels)
    assert shapely.is_valid(parts.shapes()).all()


def test_real_region_spanning_many_blocks_is_one_feature(landuse) -> None:
    lab, n = ndimage.label(landuse.array == 1, structure=FOUR)  # forest
    sizes = np.bincount(lab.ravel())[1:]
    biggest = int(np.argmax(sizes)) + 1
    rows, cols = np.nonzero(lab == biggest)
    block = 64
    assert len({(r // block, c // block) for r, c in zip(rows, cols, strict=True)}) > 4
    gdf = vectorize.from_array(
        landuse.array, grid=landuse.grid, classes=landuse.classes, block=block, simplify=0
    )
    forest = gdf[gdf.class_id == 1]
    assert len(forest) == n
    assert forest.area_m2.max() == pytest.approx(sizes.max() * landuse.grid.pixel_area)


def test_holes_are_kept(landuse) -> None:
    gdf = vectorize.from_array(
        landuse.array, grid=landuse.grid, classes=landuse.classes, block=256, simplify=0
    )
    holes = shapely.get_num_interior_rings(gdf.geometry.values)
    assert holes.sum() > 0
    # Area with holes subtracted equals the class's pixels: holes are not filled.
    for cid, area in pixel_area_per_class(landuse.array, landuse.grid).items():
        assert gdf[gdf.class_id == cid].area_m2.sum() == pytest.approx(area, rel=1e-12)


@pytest.mark.parametrize("simplify", [None, 0.0, 10.0])
def test_file_polygons_area_valid_crs_and_confidence(tmp_path: Path, landuse, simplify) -> None:
    classes_tif = write_array(
        tmp_path / "classes.tif", landuse.array, landuse.grid, nodata=255, classes=landuse.classes
    )
    conf_tif = write_array(tmp_path / "confidence.tif", landuse.confidence, landuse.grid, nodata=255)
    gdf = vectorize.polygons(
        classes_tif, classes=landuse.classes, confidence_path=conf_tif, block=300, simplify=simplify
    )
    assert list(gdf.columns) == list(vectorize.COLUMNS)
    with rasterio.open(classes_tif) as src:
        assert gdf.crs == src.crs
    assert gdf.geometry.is_valid.all()
    assert len(gdf) == sum(components(landuse.array).values())
    for cid, area in pixel_area_per_class(landuse.array, landuse.grid).items():
        mine = gdf[gdf.class_id == cid]
        assert mine.area_m2.sum() == pytest.approx(area, rel=0.005), mine.class_name.iloc[0]
        assert (mine.class_name == landuse.classes[cid].name).all()
    # Simplified as a coverage: neighbours neither overlap nor open gaps between them.
    assert gdf.geometry.union_all().area == pytest.approx(gdf.area_m2.sum(), rel=1e-9)
    # mean_confidence of the largest polygon = mean of the confidence under its pixels.
    big = gdf.iloc[int(np.argmax(gdf.area_m2))]
    lab, _ = ndimage.label(landuse.array == big.class_id, structure=FOUR)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    region = lab == int(np.argmax(sizes))
    assert big.mean_confidence == pytest.approx(landuse.confidence[region].mean())
    assert big.perimeter_m > 0


def test_simplify_reduces_vertices_and_zero_keeps_pixels(landuse) -> None:
    args = {"grid": landuse.grid, "classes": landuse.classes, "block": 512}
    exact = vectorize.from_array(landuse.array, simplify=0, **args)
    smooth = vectorize.from_array(landuse.array, simplify=15.0, **args)
    n_exact = shapely.get_num_coordinates(exact.geometry.values).sum()
    n_smooth = shapely.get_num_coordinates(smooth.geometry.values).sum()
    assert n_smooth < 0.8 * n_exact
    assert "mean_confidence" not in exact.columns


def test_min_area_drops_small_polygons(landuse) -> None:
    args = {"grid": landuse.grid, "classes": landuse.classes, "simplify": 0}
    everything = vectorize.from_array(landuse.array, **args)
    big = vectorize.from_array(landuse.array, min_area=5000.0, **args)
    assert (big.area_m2 >= 5000.0).all()
    assert len(big) == int((everything.area_m2 >= 5000.0).sum()) < len(everything)


def test_photo_without_crs_in_pixel_units(data_dir: Path, tmp_path: Path) -> None:
    """A real non-georeferenced mask (UAV75 crack labels): no CRS, pixel units."""
    mask = np.asarray(Image.open(data_dir / "crack-uav75/train_lab/DSC00552.png"))[..., 0]
    array = np.select([mask == 255, mask == 204], [1, 2], 0).astype(np.uint8)
    classes = [
        ClassInfo(0, "background", "#000000"),
        ClassInfo(1, "crack", "#ff0000"),
        ClassInfo(2, "planking", "#ffff00"),
    ]
    path = write_array(tmp_path / "classes.tif", array, Grid(shape=array.shape), nodata=255, classes=classes)
    gdf = vectorize.polygons(path, classes=classes, block=100)
    assert gdf.crs is None
    assert len(gdf) == sum(components(array).values())
    total = gdf.groupby("class_id").area_m2.sum()
    for cid, n in zip(*np.unique(array, return_counts=True), strict=True):
        assert total[cid] == pytest.approx(float(n), rel=0.005)
    assert gdf.geometry.total_bounds.tolist() == [0.0, -512.0, 512.0, 0.0]  # where QGIS draws the photo
    crack = gdf[gdf.class_id == 1].geometry.union_all()
    rows, cols = np.nonzero(array == 1)
    assert crack.contains(shapely.points(cols + 0.5, -(rows + 0.5))).all()


def test_geographic_crs_areas_are_geodesic(landuse) -> None:
    grid = Grid(shape=(2, 2), transform=rasterio.Affine(0.001, 0, 13.0, 0, -0.001, 52.5), crs="EPSG:4326")
    gdf = vectorize.from_array(np.zeros((2, 2), np.uint8), grid=grid, classes=landuse.classes, simplify=0)
    # 0.002° x 0.002° at 52.5° N: about 222 m (N-S) by 136 m (E-W).
    assert gdf.area_m2.iloc[0] == pytest.approx(222.6 * 135.6, rel=0.01)


def test_errors(tmp_path: Path, landuse) -> None:
    with pytest.raises(ConfigError, match="block=0"):
        list(vectorize.blocks((10, 10), 0))
    with pytest.raises(InputError, match="window shape"):
        vectorize.block_polygons(np.zeros((3, 3), np.uint8), window=Window(0, 0, 4, 4))
    with pytest.raises(InputNotFoundError, match="does not exist"):
        vectorize.polygons(tmp_path / "missing.tif", classes=landuse.classes)
    with pytest.raises(ConfigError, match="simplify=-1"):
        vectorize.from_array(landuse.array, grid=landuse.grid, classes=landuse.classes, simplify=-1)


@pytest.mark.parametrize("block", [64, 1024])
def test_polygons_are_rasterio_shapes_in_map_units(tmp_path: Path, landuse, block: int) -> None:
    """The oracle: rasterio.features.shapes on the same raster file (its own transform), 4-connected.

    Every polygon (exact outlines, dissolved across block seams) must be topologically equal to
    one of rasterio's, of the same class, and vice versa: a shift, flip or scale of the
    vertices in map units fails, however the counts and areas come out."""
    from rasterio.features import shapes
    from shapely.geometry import shape as to_shape

    rows, cols = slice(100, 420), slice(0, 380)
    array, grid = crop(landuse, rows, cols)
    path = write_array(tmp_path / "classes.tif", array, grid, nodata=255, classes=landuse.classes)
    with rasterio.open(path) as ds:
        raster, transform = ds.read(1), ds.transform
    expected = [
        (int(v), to_shape(g))
        for g, v in shapes(raster, mask=raster != 255, transform=transform, connectivity=4)
    ]
    gdf = vectorize.polygons(path, classes=landuse.classes, block=block, simplify=0)
    assert len(gdf) == len(expected) > 50
    got = list(gdf.geometry.values)
    tree = shapely.STRtree(got)
    for cid, geom in expected:
        hits = [int(i) for i in tree.query(geom.representative_point(), predicate="within")]
        assert len(hits) == 1, (cid, geom.wkt[:80])
        mine = gdf.iloc[hits[0]]
        assert int(mine.class_id) == cid and shapely.equals(mine.geometry, geom), (cid, geom.wkt[:80])
    assert gdf.area_m2.sum() == pytest.approx(sum(g.area for _, g in expected), rel=1e-12)


@pytest.mark.parametrize(("simplify", "one_chunk"), [(15.0, True), (0.0, False)])
def test_iter_polygons_chunks_hold_the_polygons_of_polygons(
    tmp_path: Path, landuse, simplify: float, one_chunk: bool
) -> None:
    """Coarse simplification needs the whole coverage (one chunk); exact outlines stream per block."""
    array, grid = crop(landuse, slice(0, 300), slice(0, 400))
    path = write_array(tmp_path / "classes.tif", array, grid, nodata=255, classes=landuse.classes)
    whole = vectorize.polygons(path, classes=landuse.classes, block=128, simplify=simplify)
    chunks = list(vectorize.iter_polygons(path, classes=landuse.classes, block=128, simplify=simplify))
    assert (len(chunks) == 1) is one_chunk
    streamed = [g for c in chunks for g in c.geometry.values]
    assert len(streamed) == len(whole) > 20
    key = lambda gs: sorted(shapely.normalize(g).wkb for g in gs)  # noqa: E731
    assert key(streamed) == key(whole.geometry.values)
    if one_chunk:  # simplified as one coverage: fewer vertices than the pixel outlines, no overlaps
        exact = vectorize.polygons(path, classes=landuse.classes, block=128, simplify=0)
        assert (
            shapely.get_num_coordinates(whole.geometry.values).sum()
            < 0.8 * shapely.get_num_coordinates(exact.geometry.values).sum()
        )
        assert chunks[0].geometry.union_all().area == pytest.approx(chunks[0].area_m2.sum(), rel=1e-9)


def canonical(geoms) -> list[bytes]:
    """Polygons as sorted WKB of their normalized form: equal lists = same vertices, any ring start."""
    return sorted(shapely.to_wkb(shapely.normalize(np.asarray(geoms, dtype=object))).tolist())


def by_geometry(frame: pd.DataFrame) -> pd.DataFrame:
    """The table in a canonical row order (by normalized geometry), for comparing chunkings."""
    key = shapely.to_wkb(shapely.normalize(frame.geometry.values))
    return (
        pd.DataFrame(frame.drop(columns="geometry")).assign(wkb=key).sort_values("wkb").reset_index(drop=True)
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 24),
    cols=st.integers(1, 24),
    block=st.integers(1, 9),
    n_classes=st.integers(1, 3),
)
def test_blocks_vectorized_apart_equal_the_whole_raster(
    tmp_path: Path, seed: int, rows: int, cols: int, block: int, n_classes: int
) -> None:
    """vectorize_block per block (any order, seams pickled as a worker returns them) +
    dissolve_seams = connected components, GDAL's polygonize vertices, iter_polygons."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, n_classes, (rows, cols)).astype(np.uint8)
    array[rng.random((rows, cols)) < 0.15] = NODATA_CLASS
    confidence = rng.integers(0, 101, (rows, cols)).astype(np.uint8)
    grid = Grid(shape=(rows, cols), transform=UTM, crs="EPSG:32633")
    windows = list(vectorize.blocks(grid.shape, block))
    random.Random(seed).shuffle(windows)
    frames, seams = [], []
    for w in windows:
        frame, seam = vectorize.vectorize_block(
            array[w.to_slices()], window=w, grid=grid, classes=CLASSES, confidence=confidence[w.to_slices()]
        )
        frames.append(frame)
        seams.append(pickle.loads(pickle.dumps(seam)))
    frames.append(vectorize.dissolve_seams(seams, grid=grid, classes=CLASSES, with_confidence=True))
    got = pd.concat(frames, ignore_index=True)

    assert got.class_id.value_counts().to_dict() == components(array)
    sizes = []
    for v in np.unique(array[array != NODATA_CLASS]):
        lab, _ = ndimage.label(array == v, structure=FOUR)
        sizes += [(int(v), 100.0 * n) for n in np.bincount(lab.ravel())[1:]]
    assert sorted(zip(got.class_id.tolist(), got.area_m2.tolist(), strict=True)) == sorted(sizes)
    gdal = [
        shapely.geometry.shape(g)
        for g, _ in rasterio.features.shapes(
            array, mask=array != NODATA_CLASS, connectivity=4, transform=grid.transform
        )
    ]
    assert canonical(got.geometry.values) == canonical(gdal)
    assert shapely.is_valid(got.geometry.values).all()

    classes_tif = write_array(tmp_path / "classes.tif", array, grid, nodata=255, classes=CLASSES)
    conf_tif = write_array(tmp_path / "confidence.tif", confidence, grid, nodata=255)
    streamed = vectorize.iter_polygons(classes_tif, classes=CLASSES, confidence_path=conf_tif, block=block)
    expected = by_geometry(pd.concat(list(streamed), ignore_index=True))
    pd.testing.assert_frame_equal(by_geometry(got), expected, check_dtype=False)


#: The Landsat 7 RGB scene's transform: a pixel size no binary fraction holds, so any change in
#: the order of the floating-point operations that map a vertex shows in its last bits.
ODD = Affine(300.0379266750948, 0, 101985.0, 0, -300.041782729805, 2826915.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), block_a=st.integers(1, 9), block_b=st.integers(1, 9))
def test_vertices_are_bit_identical_whatever_the_blocks(seed: int, block_a: int, block_b: int) -> None:
    """A vertex's map coordinate depends on its place in the grid only, not on the block that traced it
    (the in-process 1024-px blocks and the Ray tile cores must give the same layer, bit for bit)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 2, (17, 19)).astype(np.uint8)
    grid = Grid(shape=array.shape, transform=ODD, crs="EPSG:32618")

    def layer(block: int) -> list[bytes]:
        frames, seams = [], []
        for w in vectorize.blocks(grid.shape, block):
            frame, seam = vectorize.vectorize_block(
                array[w.to_slices()], window=w, grid=grid, classes=CLASSES
            )
            frames.append(frame)
            seams.append(seam)
        frames.append(vectorize.dissolve_seams(seams, grid=grid, classes=CLASSES))
        return canonical(pd.concat(frames, ignore_index=True).geometry.values)

    assert layer(block_a) == layer(block_b)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), dx=st.integers(-5000, 5000), dy=st.integers(-5000, 5000))
def test_north_up_coordinates_equal_the_affine_formula_bit_for_bit(seed: int, dx: int, dy: int) -> None:
    """Outlines.polygons maps north-up grids in place: the same doubles as ``a*x + b*y + c``, ``d*x + e*y + f``."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 3, (9, 11)).astype(np.uint8)
    labels, n = ndimage.label(array == 1)
    outlines = vectorize.outline.trace(labels, n)
    got = outlines.polygons(ODD, offset=(dx, dy))
    x, y = outlines.x + dx, outlines.y + dy
    a, b, c, d, e, f = ODD[:6]
    want = np.column_stack((a * x + b * y + c, d * x + e * y + f))
    coords = shapely.get_coordinates(got)
    assert coords.tobytes() == want.tobytes() and len(got) == n


def test_threads_give_the_same_polygons(tmp_path: Path, landuse) -> None:
    classes_tif = write_array(
        tmp_path / "classes.tif", landuse.array, landuse.grid, nodata=255, classes=landuse.classes
    )
    args = {"classes": landuse.classes, "block": 128}
    one = vectorize.polygons(classes_tif, workers=1, **args)
    two = vectorize.polygons(classes_tif, workers=2, **args)
    pd.testing.assert_frame_equal(by_geometry(one), by_geometry(two))
    with pytest.raises(ConfigError, match="workers=0"):
        vectorize.polygons(classes_tif, workers=0, **args)


def test_block_api_with_coverage_simplification_defers_every_piece(landuse) -> None:
    """A tolerance that needs the whole coverage: no final polygon per block, all at the seam step."""
    array, grid = crop(landuse, slice(0, 200), slice(0, 300))
    frames, seams = [], []
    for w in vectorize.blocks(grid.shape, 100):
        frame, seam = vectorize.vectorize_block(
            array[w.to_slices()], window=w, grid=grid, classes=landuse.classes, simplify=15.0
        )
        frames.append(frame)
        seams.append(seam)
    assert sum(len(f) for f in frames) == 0
    assert list(frames[0].columns) == [c for c in vectorize.COLUMNS if c != "mean_confidence"]
    got = vectorize.dissolve_seams(seams, grid=grid, classes=landuse.classes, simplify=15.0)
    whole = vectorize.from_array(array, grid=grid, classes=landuse.classes, simplify=15.0, block=100)
    pd.testing.assert_frame_equal(by_geometry(got), by_geometry(whole))
    assert len(got) == sum(components(array).values())
