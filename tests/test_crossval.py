"""The U-Net's spatial CV: one tiny training per fold, selected inside the fold, scored on its test side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geounet import crossval, datasets, evaluate, model
from geounet.config import TrainConfig, train_config
from geounet.errors import ConfigError
from geounet.model import NODATA_CLASS

S2 = "s2-brandenburg-20170216"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(data_dir: Path, out: Path, *, split: bool = True) -> TrainConfig:
    img = data_dir / S2 / "IMG_DATA"
    data = {
        "kind": "scene",
        "bands": {
            "red": img / "T33UUU_20170216T102101_B04.jp2",
            "swir16": img / "T33UUU_20170216T102101_B11.jp2",
        },
        "scale": 0.0001,
        "labels": data_dir / S2 / "osm_landuse_west.gpkg",
        "label_field": "fclass",
        "classes": [
            {"name": "forest", "color": "#1b7837", "values": ["forest"]},
            {"name": "water", "color": "#1f78b4", "values": ["water"]},
        ],
    }
    if split:
        data["split"] = {"kind": "region", "bbox": [333840, 5814360, 337040, 5822040], "cv_folds": 2}
    raw = {
        "name": "cv-tiny",
        "output": str(out),
        "data": data,
        "model": {"depth": 1, "width": 4},
        "train": {"steps": 2, "eval_every": 2, "batch_size": 2, "chip": 32, "warmup": 1, "threads": 1},
    }
    return train_config(raw, source="test")


def test_unet_cv_trains_one_model_per_fold_and_scores_its_test_side(data_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(data_dir, tmp_path)
    data = datasets.load_data(cfg)
    cv = crossval.unet(cfg, data=data)
    assert cv["n"] == 2 and len(cv["miou"]) == 2
    for i, (train_side, test_side) in enumerate(data.cv):
        bundle = tmp_path / f"cv{i}" / "model.safetensors"
        assert bundle.exists()
        history = json.loads((tmp_path / f"cv{i}" / "history.json").read_text())
        assert history and history[-1]["step"] == 2
        # the fold's figure is the bundle scored on the fold's test side
        res = evaluate.evaluate_items(
            evaluate.bundle_predictor(model.load(bundle), data=data), [test_side], classes=data.classes
        )
        assert res["miou"] == pytest.approx(cv["miou"][i])
        assert not ((train_side.mask != NODATA_CLASS) & (test_side.mask != NODATA_CLASS)).any()
    assert cv["miou_mean"] == pytest.approx(sum(cv["miou"]) / 2)


def test_unet_cv_needs_a_held_out_region(data_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(data_dir, tmp_path, split=False)
    with pytest.raises(ConfigError, match=r"data\.split"):
        crossval.unet(cfg)
