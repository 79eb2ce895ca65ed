"""Sentinel-2 harmonization: a baseline-04.00 item reaches the model as the 2017 L1C scene does.

The 2022+ products are made from the real 2017 Brandenburg scene the way ESA's baseline 04.00
encodes the same reflectance (``DN + 1000``, nodata 0 kept), served as COGs on loopback and
described twice: Earth Search style (``raster:bands`` ``offset: -0.1``) and Planetary
Computer style (only ``s2:processing_baseline``). The arrays compared are those the
production predictor hands to the network (its ``predict`` input, after normalization).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from fixtures_stac import BRANDENBURG_ID, StacAssets, write_cog

from geounet import harmonize, jobs, model, planning, predict, scenes, search
from geounet.errors import ConfigError
from geounet.geo import Window
from geounet.model import ClassInfo, ModelSpec, Normalization, networks

BANDS = ["B02", "B03", "B04", "B08"]
BRANDENBURG_BBOX = (12.55, 52.46, 12.65, 52.5)
CLASSES = [ClassInfo(0, "other", "#cccccc"), ClassInfo(1, "forest", "#33a02c")]


@pytest.fixture(scope="module")
def baseline_0400(stac_assets: StacAssets) -> dict[str, dict[str, Any]]:
    """Item dicts of the 2017 scene re-encoded as baseline 04.00: Earth Search and PC style."""
    old = stac_assets.items[BRANDENBURG_ID]
    items: dict[str, dict[str, Any]] = {}
    hrefs = {}
    for band in BANDS:
        with rasterio.open(stac_assets.local[BRANDENBURG_ID][band]) as src:
            dn = src.read(1)
            profile = src.profile
        shifted = np.where(dn == 0, 0, dn.astype(np.uint32) + 1000).astype(np.uint16)  # ESA: DN + 1000
        path = write_cog(shifted, profile, stac_assets.root / "s2-baseline-0400" / f"{band}.tif")
        hrefs[band] = stac_assets.href(path)
    for style in ("earth-search", "planetary-computer"):
        item = copy.deepcopy(old)
        item["id"] = f"{BRANDENBURG_ID}_N0400_{style}"
        item["properties"]["s2:processing_baseline"] = "04.00"
        for key in list(item["assets"]):
            if key not in BANDS:
                del item["assets"][key]
                continue
            asset = item["assets"][key]
            asset["href"] = hrefs[key]
            raster = asset["raster:bands"][0]
            if style == "earth-search":
                raster["offset"] = -0.1  # -1000 DN at scale 1e-4
            else:
                raster.pop("offset", None)
                raster.pop("scale", None)  # PC lists neither: the baseline alone says it
        items[style] = item
    return items


def handed_to_model(found: list[search.Scene], bundle_path: Path, tmp_path: Path) -> list[np.ndarray]:
    """The batches the production predictor passes to the network for every tile of ``found``."""
    options = jobs.PredictOptions(tile=128, halo=16, device="cpu")
    job = planning.plan_scenes(found, model=bundle_path, out_dir=tmp_path, options=options)
    predictor = predict.TilePredictor(job, device="cpu")
    seen: list[np.ndarray] = []
    real = predictor.predictor.predict

    def recording(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return real(batch)

    predictor.predictor.predict = recording  # type: ignore[method-assign,assignment]
    tiles = [job.plan[i] for i in (0, 5, len(job.plan) - 1)]
    predictor(tiles, predict.read_chips(job, tiles))
    return seen


def bundle_file(tmp_path: Path, name: str, provenance: dict[str, Any], scale: float = 1.0) -> Path:
    norm = Normalization(mean=(1200.0,) * 4, std=(600.0,) * 4, scale=scale)
    bundle = networks.init_bundle(
        bands=BANDS, classes=CLASSES, spec=ModelSpec(in_channels=4, n_classes=2, depth=2, width=4),
        normalization=norm, tile=128, halo=16, provenance=provenance,
    )  # fmt: skip
    return model.save(bundle, tmp_path / f"{name}.safetensors")


@pytest.mark.parametrize(
    ("convention", "scale"),
    [
        ({}, 1.0),  # no record: raw DN of pre-2022 products, what a 2017-trained bundle saw
        ({"input_convention": {"value_scaling": [{"type": "scale", "value": 0.0001}]}}, 1.0),
        ({"input_convention": {"value_scaling": [{"type": "identity"}]}}, 10000.0),  # reflectance
    ],
    ids=["legacy-dn", "mlm-scale", "mlm-reflectance"],
)
@pytest.mark.parametrize("style", ["earth-search", "planetary-computer"])
def test_baseline_0400_item_gives_the_model_the_2017_reflectance(
    stac_api: str,
    baseline_0400: dict[str, dict[str, Any]],
    tmp_path: Path,
    convention: dict[str, Any],
    scale: float,
    style: str,
) -> None:
    [old] = search.scenes(stac_api, collections=["sentinel-2-l1c"], bbox=BRANDENBURG_BBOX, bands=BANDS)
    new = search.from_item(baseline_0400[style], bands=BANDS)
    assert new.processing_baseline == "04.00" and old.processing_baseline is None
    path = bundle_file(tmp_path, "b", convention, scale=scale)
    expected = handed_to_model([old], path, tmp_path / "old")
    got = handed_to_model([new], path, tmp_path / "new")
    assert len(got) == len(expected) == 1 and got[0].shape == expected[0].shape
    assert np.isfinite(got[0]).all() and got[0].std() > 0.1  # real imagery, not a constant
    np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=1e-5)


def test_without_harmonization_the_2022_scene_is_1000_dn_brighter(
    stac_api: str, baseline_0400: dict[str, dict[str, Any]]
) -> None:
    """What the test above guards against: raw reads differ by exactly the offset on valid pixels."""
    [old] = search.scenes(stac_api, collections=["sentinel-2-l1c"], bbox=BRANDENBURG_BBOX, bands=BANDS)
    new = search.from_item(baseline_0400["earth-search"], bands=BANDS)
    grid = scenes.native_grid([old])  # shared: the 2022 files hold the 2017 pixels
    win = Window(300, 300, 64, 64)
    raw_old, valid = scenes.composite([old], win, grid=grid)
    raw_new, _ = scenes.composite([new], win, grid=grid)
    assert valid.all()
    np.testing.assert_array_equal(raw_new - raw_old, np.full_like(raw_old, 1000.0))
    harmonized, _ = scenes.composite(harmonize.for_bundle([new], {}), win, grid=grid)
    np.testing.assert_array_equal(harmonized, raw_old)


def test_offset_already_applied_or_older_baselines_are_left_alone() -> None:
    from shapely.geometry import Point

    band = search.Band("B04", "x.tif", scale=1e-4)
    base = search.Scene("s", None, None, Point(0, 0), (band,))
    cases = {
        None: (1.0, 0.0),
        "02.04": (1.0, 0.0),
        "03.01": (1.0, 0.0),
        "04.00": (1.0, -1000.0),
        "05.09": (1.0, -1000.0),
    }
    for baseline, expected in cases.items():
        scene = dataclasses.replace(base, processing_baseline=baseline)
        assert harmonize.linear(band, scene, harmonize.Convention(), 0) == pytest.approx(expected)
    applied = dataclasses.replace(base, processing_baseline="05.09", offset_applied=True)  # Earth Search flag
    assert harmonize.linear(band, applied, harmonize.Convention(), 0) == (1.0, 0.0)
    once = harmonize.for_bundle([dataclasses.replace(base, processing_baseline="05.09")], {})
    assert harmonize.for_bundle(once, {}) == once and once[0].scaled and once[0].harmonized == "dn-pre-04.00"


def test_baseline_from_the_product_id_and_bad_conventions() -> None:
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "S2B_MSIL2A_20230612T101559_N0509_R065_T33UUU_20230612",
        "bbox": [0, 0, 1, 1], "geometry": None, "properties": {"datetime": "2023-06-12T10:15:59Z"}, "links": [],
        "assets": {"red": {"href": "https://h/B04.tif", "eo:bands": [{"name": "B04", "common_name": "red"}]}},
    }  # fmt: skip
    assert search.from_item(item).processing_baseline == "05.09"
    with pytest.raises(ConfigError, match="is not linear"):
        harmonize.Convention.from_provenance({"input_convention": {"value_scaling": [{"type": "clip"}]}})
    with pytest.raises(ConfigError, match="must be"):
        harmonize.Convention.from_provenance({"input_convention": "reflectance"})
