"""``observations.tif``: the per-pixel count of clear valid observations, as a COG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from geounet import tiling
from geounet.errors import InputError
from geounet.geo import Grid, Window
from geounet.publish.observations import DESCRIPTION, write_observations


def test_counts_are_written_per_block_with_zero_elsewhere(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "s2-brandenburg-20170216" / "IMG_DATA" / "T33UUU_20170216T102101_B02.jp2"
    with rasterio.open(src) as ds:
        grid = Grid.of_dataset(ds).window_grid(Window(0, 0, 1100, 1300))
    counts = np.random.default_rng(0).integers(0, 6, grid.shape, dtype=np.uint16)
    plan = list(tiling.grid(grid.shape, tile=512, halo=0))
    written = plan[:-1]  # the last block is never observed: it stays 0
    blocks = ((t.core, counts[t.core.to_slices()]) for t in written)
    path = write_observations(tmp_path / "observations.tif", blocks, grid=grid)
    assert cog_validate(str(path))[0]
    with rasterio.open(path) as ds:
        assert ds.dtypes == ("uint16",) and ds.nodata is None and ds.descriptions == (DESCRIPTION,)
        assert (ds.crs, ds.transform) == (rasterio.crs.CRS.from_user_input(grid.crs), grid.transform)
        got = ds.read(1)
    expected = counts.copy()
    expected[plan[-1].core.to_slices()] = 0
    np.testing.assert_array_equal(got, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "observations.qml",
        "observations.tif",
    ]  # + QGIS style


def test_a_count_block_that_does_not_fit_is_an_input_error(tmp_path: Path) -> None:
    grid = Grid(shape=(8, 8))
    with pytest.raises(InputError, match="do not fit"):
        write_observations(tmp_path / "o.tif", [(Window(0, 0, 8, 8), np.zeros((4, 8)))], grid=grid)
    with pytest.raises(InputError, match=r"outside 0\.\.65535"):
        write_observations(tmp_path / "o.tif", [(Window(0, 0, 2, 2), np.full((2, 2), -1))], grid=grid)
    assert list(tmp_path.iterdir()) == []
