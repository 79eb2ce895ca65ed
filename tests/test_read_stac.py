"""Reading chips from STAC scenes over HTTP (GDAL /vsicurl/ against a range server on loopback)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from fixtures_model import assert_real_output, read_bands, save_calibrated
from fixtures_stac import BRANDENBURG_ID, PAIR_SPLIT, StacAssets

from geounet import read, scenes, search, tiling
from geounet.errors import ConfigError, InputError, ReadError
from geounet.geo import Grid, Window
from geounet.model import ClassInfo, ModelSpec

BRANDENBURG_BBOX = (12.55, 52.46, 12.65, 52.5)
SLOVENIA_BBOX = (14.55, 45.86, 14.57, 45.88)


def jp2(data_dir: Path, band: str) -> Path:
    return data_dir / "s2-brandenburg-20170216" / "IMG_DATA" / f"T33UUU_20170216T102101_{band}.jp2"


def grid_of(path: Path) -> Grid:
    with rasterio.open(path) as ds:
        return Grid.of_dataset(ds)


def local_chip(path: Path, tile: tiling.Tile, bands: list[int]) -> read.Chip:
    with read.open_raster(path) as ds:
        return read.chip(ds, tile, bands=bands)


@pytest.fixture(scope="module")
def brandenburg(stac_api: str) -> search.Scene:
    [scene] = search.scenes(
        stac_api, collections=["sentinel-2-l1c"], bbox=BRANDENBURG_BBOX, bands=["B02", "B03", "B04", "B08"]
    )
    assert scene.id == BRANDENBURG_ID
    return scene


def test_chip_over_http_equals_local_read_bit_for_bit(brandenburg: search.Scene, data_dir: Path) -> None:
    grid = grid_of(jp2(data_dir, "B02"))
    plan = tiling.grid(grid.shape, tile=256, halo=32)
    for index in (0, plan.n_cols + 2, len(plan) - 1):  # corner (padded), interior, opposite corner
        tile = plan[index]
        remote = scenes.chip([brandenburg], tile, grid=grid)
        local = [local_chip(jp2(data_dir, b), tile, [1]) for b in ("B02", "B03", "B04", "B08")]
        assert remote.data.dtype == np.float32 and remote.data.shape == (4, 256, 256)
        np.testing.assert_array_equal(remote.data, np.concatenate([c.data for c in local]))
        np.testing.assert_array_equal(remote.valid, local[0].valid)
        assert remote.tile == tile


def test_multiband_asset_chip_equals_local_read(
    stac_api: str, stac_assets: StacAssets, data_dir: Path
) -> None:
    found = search.scenes(
        stac_api,
        collections=["sentinel-2-l1c"],
        bbox=SLOVENIA_BBOX,
        datetime="2015-09-09",
        bands=["B02", "B04", "B8A"],
    )
    [scene] = found
    src = data_dir / "s2-slovenia-eolearn" / "geotiff" / "reference_scene_2_s2l1c_13band.tif"
    grid = grid_of(src)
    tile = tiling.grid(grid.shape, tile=64, halo=16)[1]
    remote = scenes.chip([scene], tile, grid=grid)
    local = local_chip(src, tile, [2, 4, 9])
    np.testing.assert_array_equal(remote.data, local.data)
    np.testing.assert_array_equal(remote.valid, local.valid)


def test_composite_prefers_least_cloudy_then_newest(stac_api: str, data_dir: Path) -> None:
    found = search.scenes(stac_api, collections=["sentinel-2-l1c"], bbox=SLOVENIA_BBOX, bands=["B02", "B03"])
    assert len(found) == 5
    assert [s.id for s in scenes.order(found)][:3] == [
        "S2_L1C_slovenia_20150909",
        "S2_L1C_slovenia_20150830",
        "S2_L1C_slovenia_20150711",
    ]
    src = data_dir / "s2-slovenia-eolearn" / "geotiff" / "reference_scene_2_s2l1c_13band.tif"  # 2015-09-09
    grid = grid_of(src)
    data, valid = scenes.composite(found, grid.full_window(), grid=grid)
    assert valid.all()
    np.testing.assert_array_equal(data, read.read_window(src, grid.full_window(), bands=[2, 3]))


def test_twenty_and_sixty_metre_bands_resampled_onto_the_ten_metre_grid(
    stac_api: str, data_dir: Path
) -> None:
    [scene] = search.scenes(
        stac_api, collections=["sentinel-2-l1c"], bbox=BRANDENBURG_BBOX, bands=["B02", "B05", "B01", "B11"]
    )
    grid = grid_of(jp2(data_dir, "B02"))
    window = Window(row=120, col=300, height=96, width=120)  # on the 60 m lattice: rows/cols multiples of 6
    data, valid = scenes.composite([scene], window, grid=grid)
    assert data.shape == (4, 96, 120) and valid.all()
    for k, (band, factor) in enumerate((("B05", 2), ("B01", 6), ("B11", 2)), start=1):
        coarse = Window(window.row // factor, window.col // factor, 96 // factor, 120 // factor)
        src = read.read_window(jp2(data_dir, band), coarse)[0].astype("float32")
        np.testing.assert_array_equal(data[k], np.repeat(np.repeat(src, factor, axis=0), factor, axis=1))
    smooth, _ = scenes.composite([scene], window, grid=grid, bands=["B05"], resampling="bilinear")
    b05 = read.read_window(jp2(data_dir, "B05"), Window(59, 149, 50, 62))
    assert b05.min() <= smooth.min() and smooth.max() <= b05.max()
    assert not np.array_equal(smooth[0], data[1])


@pytest.fixture(scope="module")
def zone_pair(stac_api: str) -> list[search.Scene]:
    found = search.scenes(stac_api, collections=["s2-zone-pair"], bands=["B04", "B08"])
    return sorted(found, key=lambda s: s.id)  # east (EPSG:32633) first, then west (EPSG:32632)


def test_region_over_two_utm_zones_is_seamless(zone_pair: list[search.Scene], data_dir: Path) -> None:
    east, west = zone_pair
    assert (east.crs, west.crs) == ("EPSG:32633", "EPSG:32632")
    scene_grid = grid_of(jp2(data_dir, "B04"))
    # the region: a 400-column strip of the original scene's grid (EPSG:32633) across the seam
    strip = Window(0, 560, scene_grid.rows, 400)
    grid = scene_grid.window_grid(strip)
    data, valid = scenes.composite([east, west], grid.full_window(), grid=grid)
    original = np.stack([read.read_window(jp2(data_dir, b), strip)[0] for b in ("B04", "B08")]).astype(
        "float32"
    )
    west_stop, east_start = (c - strip.col for c in PAIR_SPLIT)
    # no gap: every pixel is covered (but the first/last row, at the scene's outer edge, where
    # nearest-neighbour reprojection into zone 32 and back may drop a half-covered pixel)
    assert valid[1:-1].all()
    assert valid[:, east_start:].all()  # the east scene's own pixels, edge rows included
    # no double count: the east scene wins the overlap and gives its own values exactly
    np.testing.assert_array_equal(data[:, :, east_start:], original[:, :, east_start:])
    # the western part comes from the zone-32 scene, warped back: the same ground, the same values mostly
    part = (slice(None), slice(1, -1), slice(0, east_start))
    assert np.mean(data[part] == original[part]) > 0.5
    assert np.corrcoef(data[part].ravel(), original[part].ravel())[0, 1] > 0.9
    # west first (equal cloud cover and date: input order decides): the overlap holds the west
    # scene's reprojected pixels, not a mix or a sum
    swapped, _ = scenes.composite([west, east], grid.full_window(), grid=grid)
    only_west, west_valid = scenes.composite([west], grid.full_window(), grid=grid)
    overlap = (slice(None), slice(1, -1), slice(east_start, west_stop - 1))  # 1 px margin, as above
    assert west_valid[overlap[1:]].all()
    np.testing.assert_array_equal(swapped[overlap], only_west[overlap])
    assert not np.array_equal(swapped[overlap], data[overlap])
    # tiles straddling the seam equal the whole-region composite (no seam from tiling)
    plan = tiling.grid(grid.shape, tile=192, halo=32)
    for tile in plan.intersecting(Window(0, east_start - 8, grid.rows, 80)):
        chip = scenes.chip([east, west], tile, grid=grid)
        rows, cols = tile.core_in_read.to_slices()
        whole_rows, whole_cols = tile.core.to_slices()
        ok = valid[whole_rows, whole_cols]
        np.testing.assert_array_equal(chip.valid[rows, cols], ok)
        np.testing.assert_array_equal(chip.data[:, rows, cols][:, ok], data[:, whole_rows, whole_cols][:, ok])


def test_missing_asset_is_a_read_error_naming_scene_and_href(
    brandenburg: search.Scene, stac_assets: StacAssets, data_dir: Path
) -> None:
    href = f"{stac_assets.url}/s2-brandenburg/missing/B02.tif"
    broken = dataclasses.replace(
        brandenburg, bands=(dataclasses.replace(brandenburg.bands[0], href=href), *brandenburg.bands[1:])
    )
    grid = grid_of(jp2(data_dir, "B02"))
    with pytest.raises(ReadError, match=rf"scene '{BRANDENBURG_ID}': asset {href} cannot be read"):
        scenes.chip([broken], tiling.grid(grid.shape, tile=128, halo=16)[0], grid=grid)


def test_truncated_cog_is_a_read_error_and_other_scenes_finish(
    zone_pair: list[search.Scene], stac_assets: StacAssets, data_dir: Path
) -> None:
    east = zone_pair[0]
    whole = stac_assets.local[east.id]["B04"].read_bytes()
    target = stac_assets.root / "broken" / "B04_truncated.tif"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(whole[: len(whole) // 2])
    href = stac_assets.href(target)
    broken = dataclasses.replace(
        east, id="truncated", bands=(dataclasses.replace(east.bands[0], href=href), east.bands[1])
    )
    grid = grid_of(jp2(data_dir, "B04"))
    window = Window(grid.rows - 64, grid.cols - 128, 64, 128)  # the end of the file is gone
    with pytest.raises(ReadError, match=rf"scene 'truncated': asset {href} cannot be read"):
        scenes.composite([broken], window, grid=grid)
    failures: list[ReadError] = []
    data, valid = scenes.composite([broken, east], window, grid=grid, failures=failures)
    assert [str(f).split(":")[0] for f in failures] == ["scene 'truncated'"]
    expected, expected_valid = scenes.composite([east], window, grid=grid)
    np.testing.assert_array_equal(data, expected)
    assert valid.all() and expected_valid.all()


def test_scale_offset_and_argument_errors(brandenburg: search.Scene, data_dir: Path) -> None:
    grid = grid_of(jp2(data_dir, "B02"))
    window = Window(0, 0, 8, 8)
    raw, _ = scenes.composite([brandenburg], window, grid=grid, bands=["B02"])
    scaled, _ = scenes.composite([brandenburg], window, grid=grid, bands=["B02"], apply_scale=True)
    np.testing.assert_allclose(scaled, raw * np.float32(0.0001))
    with pytest.raises(ConfigError, match="resampling='cubicc'"):
        scenes.composite([brandenburg], window, grid=grid, resampling="cubicc")
    with pytest.raises(InputError, match="not B99"):
        scenes.composite([brandenburg], window, grid=grid, bands=["B99"])
    with pytest.raises(InputError, match="no CRS"):
        scenes.composite([brandenburg], window, grid=Grid(shape=(8, 8)))


def test_scene_outside_the_window_is_not_read(
    brandenburg: search.Scene, stac_api: str, data_dir: Path
) -> None:
    [slovenia] = search.scenes(
        stac_api, collections=["sentinel-2-l1c"], bbox=SLOVENIA_BBOX, datetime="2015-09-09"
    )
    far = dataclasses.replace(
        slovenia, bands=tuple(dataclasses.replace(b, href="http://127.0.0.1:9/x.tif") for b in slovenia.bands)
    )
    grid = grid_of(jp2(data_dir, "B02"))
    _, valid = scenes.composite([far, brandenburg], Window(0, 0, 16, 16), grid=grid, bands=["B02"])
    assert valid.all()  # the unreachable Slovenian scene lies elsewhere: skipped by footprint, never opened


def test_native_grid_is_the_finest_asset_grid(
    stac_api: str, zone_pair: list[search.Scene], data_dir: Path
) -> None:
    [scene] = search.scenes(
        stac_api, collections=["sentinel-2-l1c"], bbox=BRANDENBURG_BBOX, bands=["B05", "B02", "B01"]
    )
    assert scenes.native_grid([scene]) == grid_of(jp2(data_dir, "B02"))
    with pytest.raises(InputError, match=r"different grids.*give a target resolution"):
        scenes.native_grid(zone_pair)


def test_predict_from_a_stac_search_equals_predict_on_the_local_file(
    stac_api: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import geopandas

    from geounet.cli import main

    src = data_dir / "s2-slovenia-eolearn" / "geotiff" / "reference_scene_2_s2l1c_13band.tif"  # 2015-09-09
    # a seeded U-Net whose head is calibrated on the scene: all three classes occur, no near-ties
    bundle = save_calibrated(
        tmp_path / "s2.safetensors",
        read_bands(src, (2, 3, 4, 8)),
        bands=("B02", "B03", "B04", "B08"),
        classes=(
            ClassInfo(0, "other", "#cccccc"),
            ClassInfo(1, "forest", "#33a02c"),
            ClassInfo(2, "grass", "#b2df8a"),
        ),
        spec=ModelSpec(in_channels=4, n_classes=3, depth=2, width=8),
        seed=3,
    )
    common = [
        "--model",
        str(bundle),
        "--executor",
        "local",
        "--device",
        "cpu",
        "--tile",
        "64",
        "--halo",
        "16",
    ]
    capsys.readouterr()

    def outputs(args: list[str]) -> dict[str, Path]:
        main(["predict", *args, *common])
        return {line.split()[0]: Path(line.split()[1]) for line in capsys.readouterr().out.splitlines()}

    local = outputs([str(src), "--out", str(tmp_path / "local")])
    # three clear and two cloudy dates cover the patch; --max-cloud drops the cloudy ones and the
    # clear scene of `src` is the newest clear one, so it wins every pixel of the composite
    remote = outputs(["--stac", stac_api, "--collection", "sentinel-2-l1c", "--bbox", ",".join(map(str, SLOVENIA_BBOX)),
                      "--datetime", "2015-07-01/2015-09-30", "--max-cloud", "10", "--out", str(tmp_path / "stac")])  # fmt: skip
    assert set(remote) == set(local) and {"classes", "confidence", "polygons"} <= set(local)
    with rasterio.open(local["classes"]) as a:
        assert_real_output(a.read(1), 3)
    for name in ("classes", "confidence"):
        with rasterio.open(local[name]) as a, rasterio.open(remote[name]) as b:
            assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
            np.testing.assert_array_equal(a.read(), b.read())
    a, b = (geopandas.read_file(p, layer="polygons") for p in (local["polygons"], remote["polygons"]))
    assert len(a) == len(b) > 0
    assert a.geometry.normalize().to_wkt().tolist() == b.geometry.normalize().to_wkt().tolist()
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))


def test_stac_job_plans_native_and_mosaic_grids(
    stac_api: str, stac_assets: StacAssets, tmp_path: Path
) -> None:
    from geounet import jobs
    from geounet.cli import main
    from geounet.cli.search import stac_job
    from geounet.errors import ConfigError as CE

    bundle = tmp_path / "m.safetensors"
    main(["model", "init", "--bands", "B04,B08", "--classes", "a,b", "--depth", "2", "--width", "4",
          "--out", str(bundle)])  # fmt: skip
    options = jobs.PredictOptions(device="cpu", tile=64, halo=16)
    query: dict[str, Any] = dict(stac=stac_api, collections=("s2-zone-pair",), bbox="12.58,52.46,12.64,52.48", aoi=None,
                 datetime_=None, max_cloud=None, limit=None, sortby=(), cql2=None)  # fmt: skip
    common: dict[str, Any] = dict(model_path=str(bundle), out_dir=str(tmp_path / "o"), options=options)
    mosaic = stac_job(None, resolution=20.0, crs=None, **common, **query)
    assert mosaic.grid.crs == "EPSG:32633" and mosaic.grid.resolution == (20.0, 20.0)
    assert len(mosaic.scenes) == 2 and mosaic.aoi is not None
    assert mosaic.grid.bounds[0] <= mosaic.aoi.bounds[0] and mosaic.grid.bounds[3] >= mosaic.aoi.bounds[3]
    with pytest.raises(InputError, match="different grids"):
        stac_job(None, resolution=None, crs=None, **common, **query)
    with pytest.raises(CE, match="--crs EPSG:3035 needs --resolution"):
        stac_job(None, resolution=None, crs="EPSG:3035", **common, **query)
    item = next(stac_assets.catalog.parent.rglob(f"{BRANDENBURG_ID}_east.json"))
    single = stac_job(str(item), resolution=None, crs=None, **common, **dict(query, stac=None))
    assert [s.id for s in single.scenes] == [f"{BRANDENBURG_ID}_east"]
    assert single.grid.crs == "EPSG:32633" and single.grid.shape == (768, 1536 - PAIR_SPLIT[1])
