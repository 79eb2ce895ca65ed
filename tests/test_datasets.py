"""Labelled data on the real sets: crack photo/mask pairs, Brandenburg scene + OSM polygons, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geounet import datasets
from geounet.errors import InputError, InputNotFoundError
from geounet.model import NODATA_CLASS

S2 = "s2-brandenburg-20170216"


@pytest.fixture(scope="module")
def scene(data_dir: Path) -> datasets.Labelled:
    img = data_dir / S2 / "IMG_DATA"
    bands = {b: img / f"T33UUU_20170216T102101_{b}.jp2" for b in ("B04", "B11", "B09")}  # 10, 20, 60 m
    item, meta = datasets.load_scene(
        bands,
        labels=data_dir / S2 / "osm_landuse_west.gpkg",
        field="fclass",
        mapping={"forest": 0, "water": 1, "farm": 2},
        scale=1e-4,
    )
    assert meta["shape"] == (768, 1536)
    return item


def test_pairs_map_mask_values_to_classes(data_dir: Path) -> None:
    d = data_dir / "crack-uav75"
    items = datasets.load_pairs(d / "train_img", d / "train_lab", mapping={0: 0, 255: 1, 204: 2}, limit=2)
    assert len(items) == 2
    it = items[0]
    assert it.image.shape == (3, 512, 512) and it.image.dtype == np.uint8
    assert set(np.unique(it.mask)) <= {0, 1, 2} and (it.mask == 1).any()
    # partial mapping: unmapped values (planking) become NODATA_CLASS, not background
    part = datasets.load_pairs(d / "train_img", d / "train_lab", mapping={0: 0, 255: 1}, limit=1)[0]
    assert ((part.mask == NODATA_CLASS) == (it.mask == 2)).all()


def test_pairs_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="not found"):
        datasets.load_pairs(tmp_path / "a", tmp_path / "b", mapping={0: 0})


def test_scene_resamples_to_10m_and_keeps_unlabelled_ignored(scene: datasets.Labelled) -> None:
    assert scene.image.shape == (3, 768, 1536)
    assert 0.0 < scene.image[0].mean() < 1.0  # reflectance after scale
    labelled = scene.mask != NODATA_CLASS
    assert 0.03 < labelled.mean() < 0.5
    assert set(np.unique(scene.mask)) == {0, 1, 2, NODATA_CLASS}
    # the labels cover only the western two thirds of the scene
    assert not labelled[:, 1100:].any()
    # water is dark in SWIR (B11), forest brighter
    water, forest = scene.image[1][scene.mask == 1].mean(), scene.image[1][scene.mask == 0].mean()
    assert water < forest


def test_spatial_split_blocks_are_disjoint_and_cover(scene: datasets.Labelled) -> None:
    tr, va = datasets.spatial_split(scene, block=128, val_fraction=0.25, seed=0)
    lt, lv = tr.mask != NODATA_CLASS, va.mask != NODATA_CLASS
    assert not (lt & lv).any()
    assert ((lt | lv) == (scene.mask != NODATA_CLASS)).all()
    assert 0.1 < lv.sum() / (lt.sum() + lv.sum()) < 0.45
    # every 128-px block belongs wholly to one side
    for r in range(0, 768, 128):
        for c in range(0, 1536, 128):
            assert not (lt[r : r + 128, c : c + 128].any() and lv[r : r + 128, c : c + 128].any())
    with pytest.raises(InputError, match="val_fraction"):
        datasets.spatial_split(scene, block=128, val_fraction=1.5)


def test_chip_sampling_follows_class_weights(scene: datasets.Labelled) -> None:
    rng = np.random.default_rng(0)
    imgs, masks = datasets.sample_chips(
        [scene], n=40, size=32, rng=rng, class_weights=np.array([0.0, 1.0, 0.0]), labelled_share=1.0
    )
    assert imgs.shape == (40, 3, 32, 32) and masks.shape == (40, 32, 32)
    water_chips = np.mean([(m == 1).any() for m in masks])
    assert water_chips > 0.9  # centred near water pixels; water is ~1% of the scene
    mean, std = datasets.band_statistics([scene], scale=1.0)
    assert len(mean) == 3 and all(s > 0 for s in std)
