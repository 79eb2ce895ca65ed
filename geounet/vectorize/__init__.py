"""Class raster → polygons, block by block, with the polygons cut by block edges dissolved.

The work splits in steps so that a worker can vectorize a block where it is produced and
only the pieces along block edges (*seams*) meet in one place:

1. :mod:`~geounet.vectorize.outline` traces the outlines of a block's 4-connected regions
   of equal class (nodata excluded) with whole-array operations: the same vertices as
   GDAL's polygonize, faster than ``rasterio.features.shapes`` alone.
2. :mod:`~geounet.vectorize.parts`: :func:`block_polygons` gives a block's pieces in
   **pixel coordinates of the whole grid** (small integers, exact in floating point, so
   the edges two blocks share coincide exactly), each with its pixel count and confidence
   sum; :func:`split_seams` separates the pieces touching an internal block edge;
   :func:`dissolve` joins the seam pieces of one class that share an edge (not just a
   corner: 4-connectivity) into one polygon, so a field spanning four blocks is one feature.
3. :mod:`~geounet.vectorize.frame`: :func:`to_frame` maps pixel to map coordinates with
   the grid's affine transform, simplifies as a coverage when asked, drops polygons under
   ``min_area`` and computes the attributes. :func:`vectorize_block` does all of this for
   one in-memory block (its final polygons as a frame, its seam pieces apart) and
   :func:`dissolve_seams` for the seam pieces of all blocks.
4. :mod:`~geounet.vectorize.source`: :func:`polygons` over a class raster file (the only
   I/O: windowed reads of the raster and the optional confidence raster), :func:`from_array`
   on an in-memory array, :func:`iter_polygons` in chunks, block by block, keeping only the
   seam pieces until the end, so memory stays flat. These three load on first use (rasterio
   with them), so importing the package and its pure modules loads no raster I/O stack.

Example:
    >>> import numpy as np
    >>> from geounet.geo import Grid
    >>> from geounet.model import ClassInfo
    >>> a = np.array([[1, 1, 2], [1, 2, 2], [255, 2, 1]], dtype=np.uint8)
    >>> classes = [ClassInfo(1, "field", "#ffff00"), ClassInfo(2, "forest", "#00aa00")]
    >>> from geounet.vectorize import from_array  # (loads the raster reader on first use)
    >>> gdf = from_array(a, grid=Grid(shape=a.shape), classes=classes, block=2, simplify=0)
    >>> sorted(zip(gdf.class_name, gdf.area_m2))
    [('field', 1.0), ('field', 3.0), ('forest', 4.0)]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geounet.geo import Grid, Window
from geounet.vectorize.frame import COLUMNS, PHOTO_TRANSFORM, dissolve_seams, to_frame, vectorize_block
from geounet.vectorize.parts import BlockParts, Parts, block_polygons, blocks, consume, dissolve, split_seams

if TYPE_CHECKING:
    from geounet.vectorize.source import from_array, iter_polygons, polygons

#: The file-facing API of :mod:`~geounet.vectorize.source`, the one module here that reads
#: rasters (rasterio): loaded on first use, so ``import geounet.vectorize`` stays pure.
_SOURCE = ("from_array", "iter_polygons", "polygons")


def __getattr__(name: str) -> Any:
    if name in _SOURCE:
        from geounet.vectorize import source

        return getattr(source, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COLUMNS",
    "PHOTO_TRANSFORM",
    "BlockParts",
    "Grid",
    "Parts",
    "Window",
    "block_polygons",
    "blocks",
    "consume",
    "dissolve",
    "dissolve_seams",
    "from_array",
    "iter_polygons",
    "polygons",
    "split_seams",
    "to_frame",
    "vectorize_block",
]
