"""geounet.vectorize.join: the chain-level seam dissolve, against GDAL's polygonize of the whole raster."""

from __future__ import annotations

import numpy as np
import rasterio.features
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from geounet import vectorize
from geounet.vectorize import join
from geounet.vectorize.outline import Outlines


def gdal(array: np.ndarray, nodata: int = 255) -> list[bytes]:
    """The oracle: rasterio.features.shapes (GDAL, 4-connected) of the whole raster, normalized."""
    shapes = rasterio.features.shapes(array, mask=array != nodata, connectivity=4)
    return sorted(shapely.normalize(shapely.geometry.shape(g)).wkb for g, _ in shapes)


def dissolved(array: np.ndarray, block: int) -> list[bytes]:
    """Every block's pieces (final and seam alike) dissolved at once, normalized."""
    items = [
        vectorize.block_polygons(array[w.to_slices()], window=w) for w in vectorize.blocks(array.shape, block)
    ]
    parts = vectorize.dissolve(items)
    assert shapely.is_valid(parts.shapes()).all()
    return sorted(shapely.to_wkb(shapely.normalize(parts.shapes())))


def test_a_group_touching_itself_inside_a_block_gets_a_separate_hole() -> None:
    """Class 1's pieces of the top-right block touch diagonally at (3, 1); merged through the other
    blocks they are one polygon whose hole (the class-2 pixel) touches its shell at that point: a
    chain through the corner must be cut there, or the ring crosses itself (invalid)."""
    array = np.array([[2, 1, 1, 2], [2, 1, 2, 1], [2, 1, 1, 1]], dtype=np.uint8)
    assert dissolved(array, 2) == gdal(array)
    holes = [g for g in shapely.from_wkb(dissolved(array, 2)) if shapely.get_num_interior_rings(g)]
    assert len(holes) == 1 and holes[0].exterior.is_simple


def test_rings_without_a_seam_segment_are_kept_whole() -> None:
    """A hole well inside a block (a ring touching no seam and sharing no vertex) is a loop element."""
    array = np.ones((8, 8), dtype=np.uint8)
    array[2:4, 1:3] = 2  # inside the first block, away from its edges
    assert dissolved(array, 5) == gdal(array)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(2, 48),
    cols=st.integers(2, 48),
    block=st.integers(1, 16),
    n_classes=st.integers(2, 4),
    smooth=st.booleans(),
)
def test_dissolve_equals_gdal_on_regions_spanning_many_blocks(
    seed: int, rows: int, cols: int, block: int, n_classes: int, smooth: bool
) -> None:
    """Smoothed rasters make regions that wind through many blocks (long chains, holes formed only
    after the merge, chains wrapping past their ring's first vertex); noisy ones many diagonal touches."""
    rng = np.random.default_rng(seed)
    array = rng.integers(1, n_classes + 1, (rows, cols)).astype(np.uint8)
    if smooth:
        array = ndimage.median_filter(array, 3)
    array[rng.random((rows, cols)) < 0.05] = 255
    assert dissolved(array, block) == gdal(array)


def test_merge_links_chains_not_vertices() -> None:
    """Work grows with the seams: two pieces with long wiggly outlines meeting on one seam line are
    joined from a handful of chains, and the vertices come out unchanged."""
    y, x = np.mgrid[0:64, 0:64]
    array = np.where((x + 3 * np.sin(y / 2.0)).astype(int) % 7 < 3, 1, 2).astype(np.uint8)
    items = [
        vectorize.block_polygons(array[w.to_slices()], window=w) for w in vectorize.blocks(array.shape, 32)
    ]
    pieces = vectorize.Parts.concat(b.parts for b in items)
    outlines = pieces.geometry
    assert isinstance(outlines, Outlines) and outlines.x.dtype == np.int32  # compact while waiting
    polys = outlines.poly_offsets
    seams = (np.array([0.0, 32.0, 64.0]), np.array([0.0, 32.0, 64.0]))
    on = join._seam_segments(outlines, seams)
    ring_class = np.repeat(pieces.class_id, np.diff(polys))  # neighbours of two classes share vertices
    stops = join._stops(outlines, on, ring_class)
    assert len(stops) < len(outlines.x) / 3
    assert dissolved(array, 32) == gdal(array)


def test_consume_gives_every_item_in_order_and_empties_the_list() -> None:
    items = [1, 2, 3]
    assert list(vectorize.consume(items)) == [1, 2, 3]
    assert items == []
