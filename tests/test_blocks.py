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


def _layer(
    tmp_path: Path, classes: np.ndarray, confidence: np.ndarray, grid: Grid, done_at: int | None
) -> Path:
    """The polygon layer of ``classes`` in 12 x 13 cores; the model says it is done before core ``done_at``."""
    path = tmp_path / f"polygons-{done_at}.gpkg"
    with blocks.BlockPolygons(
        path, grid=grid, classes=CLASSES, fmt="gpkg", simplify=None, min_area=0.0
    ) as bp:
        k = 0
        for r in range(0, classes.shape[0], 12):
            for c in range(0, classes.shape[1], 13):
                if k == done_at:
                    bp.model_done()  # the cores from here on are vectorized TAIL_WORKERS blocks at a time
                w = Window(r, c, min(12, classes.shape[0] - r), min(13, classes.shape[1] - c))
                bp.add(w, classes[w.to_slices()], confidence[w.to_slices()])
                k += 1
    assert bp.polygons == len(pyogrio.read_dataframe(path))
    return path


@pytest.mark.parametrize("block", [5, 7, 1024])
def test_cores_cut_into_blocks_give_the_whole_raster_polygons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Cores larger than BLOCK are vectorized block by block (bounded memory): same layer, bit for bit.

    Blocks vectorized two at a time once the model is done give the same file, row for row.
    """
    monkeypatch.setattr(blocks, "BLOCK", block)
    rng = np.random.default_rng(4)
    classes = rng.integers(0, 3, (30, 26)).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.1] = NODATA_CLASS
    confidence = rng.integers(30, 101, classes.shape).astype(np.uint8)
    grid = Grid(shape=classes.shape, transform=ODD, crs="EPSG:32618")
    got = pyogrio.read_dataframe(_layer(tmp_path, classes, confidence, grid, done_at=None))
    want = vectorize.from_array(
        classes, grid=grid, classes=CLASSES, confidence=confidence, confidence_nodata=NODATA_CLASS
    )
    assert len(got) == len(want) > 50
    assert _rows(got) == _rows(want)
    for done_at in (0, 3):
        tail = pyogrio.read_dataframe(_layer(tmp_path, classes, confidence, grid, done_at=done_at))
        assert tail.drop(columns="geometry").equals(got.drop(columns="geometry"))
        assert list(shapely.to_wkb(tail.geometry.values)) == list(shapely.to_wkb(got.geometry.values))
