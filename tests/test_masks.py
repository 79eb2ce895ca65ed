"""Per-pixel cloud masks in composites, over the five real Slovenia dates (two cloudy, three clear).

Each Slovenia item carries eo-learn's own cloud mask (``CLM``) and s2cloudless cloud
probability (``CLP``) of its date as COG assets (see ``fixtures_stac``). 2015-07-31 and
2015-08-20 are cloudy in CLM everywhere; s2cloudless sees ~2 % of 2015-07-31 clear.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geounet import api, config, masks, model, read, scenes, search, tiling
from geounet.errors import ConfigError
from geounet.geo import Grid
from geounet.model import ClassInfo, ModelSpec, networks

SLOVENIA_BBOX = (14.55, 45.86, 14.57, 45.88)
GEOTIFF = "s2-slovenia-eolearn/geotiff"
INDEX = {"20150820": 0, "20150731": 1, "20150909": 2, "20150830": 3, "20150711": 4}  # reference scene index
BANDS = ["B02", "B03", "B04", "B08"]


@pytest.fixture(scope="module")
def slovenia(stac_api: str) -> dict[str, search.Scene]:
    found = search.scenes(stac_api, collections=["sentinel-2-l1c"], bbox=SLOVENIA_BBOX, bands=BANDS)
    by_date = {s.id.rsplit("_", 1)[1]: s for s in found}
    assert set(by_date) == set(INDEX)
    assert all({m.name for m in s.masks} == {"cloud_mask", "cloud_probability"} for s in found)
    return by_date


def local(data_dir: Path, date: str) -> Path:
    return data_dir / GEOTIFF / f"reference_scene_{INDEX[date]}_s2l1c_13band.tif"


def grid_of(path: Path) -> Grid:
    with rasterio.open(path) as ds:
        return Grid.of_dataset(ds)


def without_cloud_cover(scene: search.Scene) -> search.Scene:
    """As a catalog without ``eo:cloud_cover`` lists it: then the newest scene comes first."""
    return dataclasses.replace(scene, cloud_cover=None)


def test_masked_pixels_never_contribute_and_clear_scene_prediction_is_kept(
    slovenia: dict[str, search.Scene], data_dir: Path, tmp_path: Path
) -> None:
    bundle = model.save(
        networks.init_bundle(
            bands=BANDS, classes=[ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ffffff"), ClassInfo(2, "c", "#ff0000")],
            spec=ModelSpec(in_channels=4, n_classes=3, depth=2, width=8), seed=5, tile=64, halo=16,
        ),
        tmp_path / "m.safetensors",
    )  # fmt: skip
    clear = local(data_dir, "20150711")
    grid = grid_of(clear)
    # the cloudy 07-31 is newer, so it comes first: only its mask keeps it out
    cloudy_first = [without_cloud_cover(slovenia["20150731"]), without_cloud_cover(slovenia["20150711"])]
    data, valid = scenes.composite(cloudy_first, grid.full_window(), grid=grid)
    expected = read.read_window(clear, grid.full_window(), bands=[2, 3, 4, 8])
    assert valid.all()
    np.testing.assert_array_equal(data, expected)
    unmasked, _ = scenes.composite(cloudy_first, grid.full_window(), grid=grid, mask_rule=None)
    assert not np.array_equal(unmasked, expected)  # what the masks prevent: clouds classified as land
    options: dict[str, Any] = {"executor": "local", "device": "cpu", "tile": 64, "halo": 16}
    want = api.predict(clear, bundle, **options)
    for method, found in {
        "first": cloudy_first,
        "median": [slovenia[d] for d in ("20150820", "20150731", "20150830")],
    }.items():
        truth = want if method == "first" else api.predict(local(data_dir, "20150830"), bundle, **options)
        got = api.predict(found, bundle, grid=grid, composite=method, **options)
        np.testing.assert_array_equal(got.classes.values, truth.classes.values)
        np.testing.assert_array_equal(got.confidence.values, truth.confidence.values)


def test_cloud_probability_masks_per_pixel_and_counts_valid_observations(
    slovenia: dict[str, search.Scene], data_dir: Path
) -> None:
    def probability_only(scene: search.Scene) -> search.Scene:
        return dataclasses.replace(
            without_cloud_cover(scene), masks=tuple(m for m in scene.masks if m.name == "cloud_probability")
        )

    grid = grid_of(local(data_dir, "20150731"))
    window = grid.full_window()
    patchy, clear = probability_only(slovenia["20150731"]), probability_only(slovenia["20150711"])
    clp = np.load(data_dir / "s2-slovenia-eolearn/original/TestEOPatch/data/CLP.npy")[1, ..., 0]
    seen = clp <= 0.4  # s2cloudless' default threshold: the default rule's 40 %
    assert 0 < seen.mean() < 0.05
    data, valid, count = scenes.mosaic([patchy, clear], window, grid=grid, counts=True)
    a = read.read_window(local(data_dir, "20150731"), window, bands=[2, 3, 4, 8])
    b = read.read_window(local(data_dir, "20150711"), window, bands=[2, 3, 4, 8])
    assert valid.all() and count is not None
    np.testing.assert_array_equal(data[:, seen], a[:, seen])
    np.testing.assert_array_equal(data[:, ~seen], b[:, ~seen])  # cloudy pixels of 07-31 never contribute
    np.testing.assert_array_equal(count, seen.astype(np.uint16) + 1)
    median, _, _ = scenes.mosaic([patchy, clear], window, grid=grid, method="median", counts=True)
    np.testing.assert_allclose(median[:, seen], (a[:, seen] + b[:, seen]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(median[:, ~seen], b[:, ~seen])
    seen_per_tile: list[np.ndarray] = []
    for tile in tiling.grid(grid.shape, tile=64, halo=16):
        scenes.chip([patchy, clear], tile, grid=grid, observations=seen_per_tile)
        np.testing.assert_array_equal(seen_per_tile[-1], count[tile.core.to_slices()])
    strict = masks.MaskRule(max_cloud_probability=0.0)
    _, _, none_seen = scenes.mosaic([patchy], window, grid=grid, mask_rule=strict, counts=True)
    assert none_seen is not None and not none_seen.any()


def test_the_run_configs_mosaic_masks_ride_on_the_scenes(
    slovenia: dict[str, search.Scene], data_dir: Path, tmp_path: Path
) -> None:
    """``mosaic.masks`` of a region config reaches the reader through the scenes (no pipeline argument)."""
    from workflows.region_landcover import with_masks

    def cfg(**masks_section: object) -> config.RunConfig:
        return config.RunConfig.model_validate(
            {"name": "t", "aoi": {"bbox": list(SLOVENIA_BBOX)}, "model": "m.safetensors",
             "outputs": {"dir": "out"}, "mosaic": {"masks": masks_section}}
        )  # fmt: skip

    grid = grid_of(local(data_dir, "20150731"))
    window = grid.full_window()
    patchy = slovenia["20150731"]
    only_probability = dataclasses.replace(
        patchy, masks=tuple(m for m in patchy.masks if m.name == "cloud_probability")
    )
    strict = with_masks([only_probability], cfg(max_cloud_probability=0))
    assert strict[0].mask_rule == masks.MaskRule(max_cloud_probability=0.0)
    _, _, seen = scenes.mosaic(strict, window, grid=grid, counts=True)  # the call's default rule says 40 %
    assert seen is not None and not seen.any()
    ignored = with_masks([patchy], cfg(enabled=False))
    assert ignored[0].masks == () and ignored[0].mask_rule is None
    _, valid, count = scenes.mosaic(ignored, window, grid=grid, counts=True)
    assert valid.all() and count is not None and (count == 1).all()  # the cloudy date counts everywhere
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg().model_dump(mode="json")))
    with pytest.raises(
        ConfigError, match=r"mosaic\.masks\.qa_pixel_bits\.0=16: Input should be less than or equal to 15"
    ):
        config.load_run_config(path, overrides={"mosaic.masks.qa_pixel_bits": [16]})
    with pytest.raises(ConfigError, match=r"mosaic\.composite='mean'"):
        config.load_run_config(path, overrides={"mosaic.composite": "mean"})


def test_bad_rules_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="composite='mean' is unknown; use one of first, median"):
        masks.check_method("mean")
    with pytest.raises(ConfigError, match="max_cloud_probability=140"):
        masks.MaskRule(max_cloud_probability=140)
    with pytest.raises(ConfigError, match="mask kind 'snow'"):
        masks.clear("snow", np.zeros(2), masks.MaskRule())


@given(
    arrays(np.float32, (4, 1, 3, 3), elements=st.floats(-1e3, 1e3, width=32)),
    arrays(bool, (4, 3, 3)),
    st.sampled_from(masks.METHODS),
)
def test_composite_takes_only_usable_observations(stack: np.ndarray, usable: np.ndarray, method: str) -> None:
    data, valid = masks.composite(list(stack), list(usable), method=method)
    np.testing.assert_array_equal(valid, usable.any(axis=0))
    assert (data[:, ~valid] == 0).all()
    for r, c in zip(*np.nonzero(valid), strict=True):
        seen = stack[usable[:, r, c], 0, r, c]
        if method == "first":
            assert data[0, r, c] == seen[0]
        else:
            assert data[0, r, c] == pytest.approx(float(np.median(seen)), rel=1e-6, abs=1e-6)
    np.testing.assert_array_equal(masks.count(list(usable)), usable.sum(axis=0))
