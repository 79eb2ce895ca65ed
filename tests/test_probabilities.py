"""The per-class probability COG: uint8 0-100 per class band, class names inside the file, valid COG;
written by real runs on request (``--outputs ...,probabilities``): in-process, under Ray, blended."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fixtures_model import assert_real_output, read_bands, save_calibrated
from fixtures_ray import RGB_CLASSES
from rio_cogeo.cogeo import cog_validate

from geounet import jobs, pipeline, planning, predict, read, tiling
from geounet.errors import InputError
from geounet.geo import Grid
from geounet.model import NODATA_CLASS, ClassInfo, ModelSpec
from geounet.publish.probabilities import to_percent, write_probabilities

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # as in the Ray actors: same float sums

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
    with (
        pytest.raises(RuntimeError, match="reader died"),
        ProbabilityWriter(tmp_path / "p.tif", grid, classes=CLASSES) as w,
    ):
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
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"]


# -- real runs ---------------------------------------------------------------------------------------

#: 30 tiles of 192 px (144 px cores) over the 791×718 Landsat scene, with its nodata border.
RUN = jobs.PredictOptions(tile=192, halo=24, batch_size=4, outputs=("classes", "confidence", "probabilities"))


@pytest.fixture(scope="module")
def rgb_model(landsat_rgb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded U-Net whose head is calibrated on the scene: every class wins, no near-ties."""
    return save_calibrated(
        tmp_path_factory.mktemp("m") / "rgb.safetensors",
        read_bands(landsat_rgb),
        bands=("red", "green", "blue"),
        classes=RGB_CLASSES,
        spec=ModelSpec(in_channels=3, n_classes=3, depth=2, width=4),
        seed=3,
    )


@pytest.fixture(scope="module")
def cli_run(landsat_rgb: Path, rgb_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``geounet predict ... --outputs classes,confidence,probabilities``, in-process."""
    from geounet.cli import main

    out = tmp_path_factory.mktemp("cli")
    main(["predict", str(landsat_rgb), "--model", str(rgb_model), "--out", str(out), "--tile", "192",
          "--halo", "24", "--batch-size", "4", "--executor", "local",
          "--outputs", "classes,confidence,probabilities"])  # fmt: skip
    return out


def _check_probabilities(out: Path) -> np.ndarray:
    """The invariants of a run's probabilities.tif against its classes.tif; returns the bands."""
    with rasterio.open(out / "classes.tif") as ds:
        classes, grid = ds.read(1), (ds.crs, ds.transform, ds.shape)
    with rasterio.open(out / "probabilities.tif") as ds:
        assert (ds.crs, ds.transform, ds.shape) == grid
        assert ds.count == len(RGB_CLASSES) and ds.dtypes == ("uint8",) * ds.count and ds.nodata == 255
        assert ds.descriptions == tuple(c.name for c in RGB_CLASSES)
        assert ds.tags()["CLASS_2"] == RGB_CLASSES[2].name
        probs = ds.read()
    assert cog_validate(str(out / "probabilities.tif"))[0]
    assert_real_output(classes, len(RGB_CLASSES))
    nodata = classes == NODATA_CLASS
    assert nodata.any() and (probs[:, nodata] == 255).all()  # the scene's nodata border
    valid = probs[:, ~nodata].astype(np.int64)
    assert valid.max() <= 100
    sums = valid.sum(axis=0)  # 3 shares rounded to whole percent: 100 ± 1
    assert sums.min() >= 99 and sums.max() <= 101
    top2 = np.sort(valid, axis=0)[-2:]
    clear = top2[1] > top2[0]
    assert clear.mean() > 0.95
    ids = np.array([c.id for c in RGB_CLASSES])
    np.testing.assert_array_equal(ids[valid.argmax(axis=0)][clear], classes[~nodata][clear])
    return probs


def test_cli_writes_named_probabilities_that_agree_with_the_classes(cli_run: Path) -> None:
    _check_probabilities(cli_run)
    item = json.loads((cli_run / "item.json").read_text())
    bands = item["assets"]["probabilities"]["raster:bands"]
    assert [b["name"] for b in bands] == [c.name for c in RGB_CLASSES]
    assert {(b["data_type"], b["nodata"], b["unit"]) for b in bands} == {("uint8", 255, "%")}
    assert item["assets"]["probabilities"]["href"] == "./probabilities.tif"
    assert not [p.name for p in cli_run.iterdir() if p.name.startswith(".") and p.name != ".geounet.lock"]


def test_ray_writes_the_same_probabilities_as_in_process(
    ray_cluster: object, landsat_rgb: Path, rgb_model: Path, cli_run: Path, tmp_path: Path
) -> None:
    """Crop merge under Ray: probability parts on the workers, assembled by the in-process writer."""
    from geounet.distributed import RayExecutor
    from geounet.pool import RayOptions

    job = planning.plan(
        landsat_rgb, model=rgb_model, out_dir=tmp_path, options=dataclasses.replace(RUN, batch_size=8)
    )
    executor = RayExecutor(RayOptions(actors=1, cpus_per_actor=0.5, ready_timeout_s=120))
    pipeline.run(job, results=executor, progress=False)
    assert executor.stats.assembled_on  # the parts path, not the driver's writer
    for name in ("classes.tif", "probabilities.tif"):
        with rasterio.open(tmp_path / name) as got, rasterio.open(cli_run / name) as want:
            np.testing.assert_array_equal(got.read(), want.read())
            assert got.profile == want.profile and got.descriptions == want.descriptions
            assert got.tags() == want.tags()


def test_blended_probabilities_are_the_blocks_the_classes_come_from(
    landsat_rgb: Path, rgb_model: Path, tmp_path: Path
) -> None:
    job = planning.plan(
        landsat_rgb, model=rgb_model, out_dir=tmp_path, options=dataclasses.replace(RUN, merge="blend")
    )
    pipeline.run(job, progress=False)
    _check_probabilities(tmp_path)


def test_whole_tile_and_streamed_passes_keep_the_same_core_probabilities(
    landsat_rgb: Path, rgb_model: Path, tmp_path: Path
) -> None:
    job = planning.plan(landsat_rgb, model=rgb_model, out_dir=tmp_path, options=RUN)
    tiles = [job.plan[i] for i in (0, 7, 14)]
    chips = predict.read_chips(job, tiles)
    got = {}
    for stream in (False, True):
        streamed = dataclasses.replace(job, options=dataclasses.replace(RUN, stream=stream))
        got[stream] = predict.TilePredictor(streamed, device="cpu")(tiles, chips)
    for whole, strips in zip(got[False], got[True], strict=True):
        assert whole.probs is not None and strips.probs is not None
        assert whole.probs.dtype == strips.probs.dtype == np.float16
        assert whole.probs.shape == (len(RGB_CLASSES), *whole.tile.core.shape)
        np.testing.assert_allclose(whole.probs, strips.probs, atol=2e-3)
        np.testing.assert_array_equal(whole.classes, strips.classes)


def test_probabilities_only_on_request_and_never_from_a_failed_run(
    landsat_rgb: Path, rgb_model: Path, cli_run: Path, tmp_path: Path
) -> None:
    """A failed run leaves no probabilities.tif; its rerun resumes the cached tiles (their probabilities
    with them) and writes what an uninterrupted run writes. A cache without them is not reused."""
    from geounet.resume import fingerprint_of

    plain = planning.plan(
        landsat_rgb,
        model=rgb_model,
        out_dir=tmp_path / "plain",
        options=dataclasses.replace(RUN, outputs=("classes",)),
    )
    kept = predict.TilePredictor(plain, device="cpu")(
        list(plain.plan)[:4], predict.read_chips(plain, list(plain.plan)[:4])
    )
    assert all(r.probs is None for r in kept)  # nothing extra kept per tile when not asked
    written = pipeline.run(plain, progress=False)
    assert "probabilities" not in written and not (tmp_path / "plain" / "probabilities.tif").exists()

    def dies_halfway(job: jobs.Job, *, tiles: object = None) -> Iterator[jobs.TileResult]:
        for i, res in enumerate(predict.local_results(job, tiles=tiles)):  # type: ignore[arg-type]
            if i == 10:
                raise RuntimeError("worker lost")
            yield res

    failed = planning.plan(landsat_rgb, model=rgb_model, out_dir=tmp_path / "failed", options=RUN)
    with pytest.raises(RuntimeError, match="worker lost"):
        pipeline.run(failed, results=dies_halfway, progress=False)
    left = sorted(p.name for p in (tmp_path / "failed").iterdir())
    assert not [n for n in left if "probabilities" in n or n.endswith(".tif")], left
    pipeline.run(failed, progress=False)
    assert json.loads((tmp_path / "failed" / "run.json").read_text())["counts"]["reused"] == 10
    with (
        rasterio.open(tmp_path / "failed" / "probabilities.tif") as got,
        rasterio.open(cli_run / "probabilities.tif") as want,
    ):
        np.testing.assert_array_equal(got.read(), want.read())
    asked = dataclasses.replace(plain, options=RUN)
    assert fingerprint_of(asked) != fingerprint_of(plain)
    with_polygons = dataclasses.replace(
        plain, options=dataclasses.replace(plain.options, outputs=("classes", "polygons"))
    )
    assert fingerprint_of(with_polygons) == fingerprint_of(plain)  # only what a cached tile holds counts
