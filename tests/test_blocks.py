"""geounet.blocks: polygons of tile cores vectorized while the model runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine

from geounet import blocks, vectorize
from geounet.geo import Grid, Window
from geounet.model import NODATA_CLASS, ClassInfo

CLASSES = (
    ClassInfo(0, "water", "#0000ff"),
    ClassInfo(1, "field", "#ffff00"),
    ClassInfo(2, "wood", "#00aa00"),
)
#: The Landsat 7 RGB scene's transform (pixel sizes no binary fraction holds).
ODD = Affine(300.0379266750948, 0, 101985.0, 0, -300.041782729805, 2826915.0)


def _rows(frame) -> list[tuple]:
    geoms = shapely.to_wkb(shapely.normalize(np.asarray(frame.geometry.values, dtype=object)))
    return sorted(zip(frame.class_id, frame.mean_confidence, geoms, strict=True))


@pytest.mark.parametrize("block", [5, 7, 1024])
def test_cores_cut_into_blocks_give_the_whole_raster_polygons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Cores larger than BLOCK are vectorized block by block (bounded memory): same layer, bit for bit."""
    monkeypatch.setattr(blocks, "BLOCK", block)
    rng = np.random.default_rng(4)
    classes = rng.integers(0, 3, (30, 26)).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.1] = NODATA_CLASS
    confidence = rng.integers(30, 101, classes.shape).astype(np.uint8)
    grid = Grid(shape=classes.shape, transform=ODD, crs="EPSG:32618")
    path = tmp_path / "polygons.gpkg"
    with blocks.BlockPolygons(
        path, grid=grid, classes=CLASSES, fmt="gpkg", simplify=None, min_area=0.0
    ) as bp:
        for r in range(0, 30, 12):
            for c in range(0, 26, 13):
                w = Window(r, c, min(12, 30 - r), min(13, 26 - c))
                bp.add(w, classes[w.to_slices()], confidence[w.to_slices()])
    got = pyogrio.read_dataframe(path)
    want = vectorize.from_array(
        classes, grid=grid, classes=CLASSES, confidence=confidence, confidence_nodata=NODATA_CLASS
    )
    assert bp.polygons == len(got) == len(want) > 50
    assert _rows(got) == _rows(want)
