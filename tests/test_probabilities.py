"""The per-class probability COG: uint8 0-100 per class band, class names inside the file, valid COG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from geounet import read, tiling
from geounet.errors import InputError
from geounet.geo import Grid
from geounet.model import ClassInfo
from geounet.publish.probabilities import to_percent, write_probabilities

CLASSES = [
    ClassInfo(0, "water", "#1f78b4"),
    ClassInfo(1, "forest", "#33a02c"),
    ClassInfo(2, "field", "#ffff99"),
]


def test_probability_cog_has_one_named_percent_band_per_class(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "s2-brandenburg-20170216" / "IMG_DATA" / "T33UUU_20170216T102101_B02.jp2"
    with rasterio.open(src) as ds:
        grid = Grid.of_dataset(ds)
    bands = [src.with_name(src.name.replace("B02", b)) for b in ("B02", "B03", "B04")]
    stack = np.stack([read.read_window(b, grid.full_window(), bands=[1])[0] for b in bands])
    probs = stack / np.maximum(stack.sum(axis=0, keepdims=True), 1)  # real imagery as class shares
    valid = stack.min(axis=0) > 0
    plan = tiling.grid(grid.shape, tile=512, halo=0)
    blocks = ((t.core, probs[(slice(None), *t.core.to_slices())], valid[t.core.to_slices()]) for t in plan)
    path = write_probabilities(tmp_path / "probabilities.tif", blocks, grid=grid, classes=CLASSES)
    assert grid.cols > 1024 and cog_validate(str(path))[0]
    with rasterio.open(path) as ds:
        assert ds.count == 3 and ds.dtypes == ("uint8",) * 3 and ds.nodata == 255
        assert ds.descriptions == ("water", "forest", "field")
        assert ds.tags()["CLASS_1"] == "forest"
        assert (ds.crs, ds.transform) == (rasterio.crs.CRS.from_user_input(grid.crs), grid.transform)
        got = ds.read()
    np.testing.assert_array_equal(got, to_percent(probs, valid))
    assert got[:, valid].max() <= 100 and (got[:, ~valid] == 255).all()
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_block_that_does_not_fit_is_an_input_error(tmp_path: Path) -> None:
    from geounet.geo import Grid, Window

    grid = Grid(shape=(8, 8))
    with pytest.raises(InputError, match="do not fit 3 classes"):
        write_probabilities(tmp_path / "p.tif", [(Window(0, 0, 8, 8), np.zeros((2, 8, 8)), None)], grid=grid,
                            classes=CLASSES)  # fmt: skip
    assert not (tmp_path / "p.tif").exists()


def test_the_incremental_writer_leaves_nothing_when_the_loop_fails(tmp_path: Path) -> None:
    """``ProbabilityWriter`` (the pipeline's form): the COG appears only when the loop finished."""
    from geounet.geo import Window
    from geounet.publish.probabilities import ProbabilityWriter

    grid = Grid(shape=(32, 32))
    probs = np.stack([np.full((16, 32), 0.25), np.full((16, 32), 0.5), np.full((16, 32), 0.25)])
    with pytest.raises(RuntimeError, match="reader died"), ProbabilityWriter(tmp_path / "p.tif", grid, classes=CLASSES) as w:
        w.write(Window(0, 0, 16, 32), probs)
        raise RuntimeError("reader died")
    assert list(tmp_path.iterdir()) == []
    with ProbabilityWriter(tmp_path / "p.tif", grid, classes=CLASSES) as w:
        w.write(Window(0, 0, 16, 32), probs)
    with rasterio.open(tmp_path / "p.tif") as ds:
        got = ds.read()
    assert (got[:, :16] == np.array([25, 50, 25])[:, None, None]).all() and (got[:, 16:] == 255).all()
    assert [p.name for p in tmp_path.iterdir()] == ["p.tif"]


def test_probability_and_observation_assets_validate_against_the_published_schemas(
    data_dir: Path, tmp_path: Path, stac_schemas: dict[str, dict]
) -> None:
    """The output Item lists probabilities.tif (one raster band per class) and observations.tif;
    it validates offline against every extension it declares (the schemas pystac's packages ship)."""
    from geounet import publish
    from geounet.geo import Window
    from geounet.publish.observations import write_observations
    from geounet.write import CogWriter

    src = data_dir / "s2-brandenburg-20170216" / "IMG_DATA" / "T33UUU_20170216T102101_B02.jp2"
    with rasterio.open(src) as ds:
        grid = Grid.of_dataset(ds).window_grid(Window(0, 0, 64, 64))
    core = Window(0, 0, 64, 64)
    with CogWriter(tmp_path / "classes.tif", grid, dtype="uint8", nodata=255, classes=CLASSES) as w:
        w.write(core, np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 3)
    probs = np.full((3, 64, 64), 1 / 3)
    write_probabilities(tmp_path / "probabilities.tif", [(core, probs, None)], grid=grid, classes=CLASSES)
    write_observations(tmp_path / "observations.tif", [(core, np.full((64, 64), 2))], grid=grid)
    assets = {name: tmp_path / f"{name}.tif" for name in ("classes", "probabilities", "observations")}
    item = publish.stac_item(
        assets["classes"], classes=CLASSES, assets=assets, item_id="t", when="2017-02-16T10:21:01Z"
    )
    used = publish.validate_item(item, schemas=stac_schemas, offline=True)
    assert set(item.stac_extensions) <= set(used)
    bands = item.assets["probabilities"].extra_fields["raster:bands"]
    assert [b["name"] for b in bands] == [c.name for c in CLASSES]
    assert {(b["data_type"], b["nodata"], b["unit"]) for b in bands} == {("uint8", 255, "%")}
    [count] = item.assets["observations"].extra_fields["raster:bands"]
    assert count["data_type"] == "uint16" and "nodata" not in count
    assert item.assets["observations"].roles == ["data", "quality"]
    assert item.assets["probabilities"].extra_fields["file:size"] == assets["probabilities"].stat().st_size


def test_unwritten_pixels_stay_nodata_when_the_block_cache_is_smaller_than_a_block(tmp_path: Path) -> None:
    """GDAL flushes a pixel-interleaved block band by band when its cache is full and reloads the
    other bands' unwritten pixels as 0; the scratch file is band-interleaved so they stay 255.
    (A tiny ``GDAL_CACHEMAX`` in a fresh process: the state an earlier run of the suite leaves.)"""
    script = (
        "import sys, numpy as np, rasterio\n"
        "from pathlib import Path\n"
        "from geounet.geo import Grid, Window\n"
        "from geounet.model import ClassInfo\n"
        "from geounet.publish.probabilities import ProbabilityWriter\n"
        "classes = [ClassInfo(i, n, c) for i, (n, c) in enumerate([('a', '#ff0000'), ('b', '#00ff00'), ('c', '#0000ff')])]\n"
        "p = Path(sys.argv[1]) / 'p.tif'\n"
        "with ProbabilityWriter(p, Grid(shape=(32, 32)), classes=classes) as w:\n"
        "    w.write(Window(0, 0, 16, 32), np.full((3, 16, 32), 0.5))\n"
        "with rasterio.open(p) as ds:\n"
        "    got = ds.read()\n"
        "print(int((got[:, :16] == 50).all()), int((got[:, 16:] == 255).all()))\n"
    )
    env = {**os.environ, "GDAL_CACHEMAX": "200000"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"]
