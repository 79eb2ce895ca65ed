"""Evaluation predicts through the production path: its classes are those of ``geounet predict``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner
from rasterio.transform import from_origin

from geounet import evaluate, infer, jobs, model, planning, predict
from geounet.cli import cli
from geounet.config import load_train_config
from geounet.datasets import Data, Labelled, load_data
from geounet.model import NODATA_CLASS, ClassInfo, ModelSpec, networks

CLASSES = [ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ff0000"), ClassInfo(2, "c", "#00ff00")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(shape: tuple[int, int], seed: int = 3) -> np.ndarray:
    """A smooth 3-band uint8 image (so a random network gives several classes), not tile-aligned."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[: shape[0], : shape[1]]
    bands = [
        np.sin(r / 9.0 + k) * np.cos(c / 13.0 - k) * 100 + 128 + rng.normal(0, 8, shape) for k in range(3)
    ]
    return np.clip(np.stack(bands), 0, 255).astype(np.uint8)


def _tif(path: Path, image: np.ndarray) -> Path:
    profile = {
        "driver": "GTiff",
        "height": image.shape[1],
        "width": image.shape[2],
        "count": image.shape[0],
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(400000, 5800000, 10, 10),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return path


def _bundle() -> model.Bundle:
    """A random network whose classes follow the image (zero head bias: no class wins everywhere)."""
    bundle = networks.init_bundle(
        bands=["red", "green", "blue"],
        classes=CLASSES,
        spec=ModelSpec(in_channels=3, n_classes=3, depth=2, width=4),
        normalization=model.Normalization(mean=(0.5,) * 3, std=(0.25,) * 3, scale=1 / 255),
        seed=1,
    )
    bundle.weights["head.bias"][:] = 0
    return bundle


def test_evaluation_gives_the_classes_of_the_production_predictor(tmp_path: Path) -> None:
    bundle = _bundle()
    path = model.save(bundle, tmp_path / "m.safetensors")
    image = _image((150, 173))
    core = 64  # several tiles, partial ones at the right and bottom edges
    job = planning.plan(
        _tif(tmp_path / "scene.tif", image),
        model=path,
        out_dir=tmp_path / "out",
        options=jobs.PredictOptions(tile=core + 2 * bundle.halo, device="cpu", batch_size=4),
    )
    production = np.full(image.shape[1:], 255, np.uint8)
    for res in predict.local_results(job):
        assert res.classes is not None
        production[res.tile.core.to_slices()] = res.classes

    evaluated = evaluate.predict_image(infer.Predictor(model.load(path), device="cpu"), image, core=core)

    assert len(job.plan) > 4 and len(np.unique(production)) == 3
    np.testing.assert_array_equal(evaluated, production)


def test_evaluation_skips_tiles_without_labels() -> None:
    bundle = _bundle()
    image = _image((100, 100))
    need = np.zeros((100, 100), bool)
    need[5, 5] = True
    out = evaluate.predict_image(infer.Predictor(bundle, device="cpu"), image, core=48, need=need)
    assert (out[:48, :48] != 255).all() and (out[48:, :] == 255).all() and (out[:, 48:] == 255).all()


# --------------------------------------------------------------------------- held-out region and CV

S2 = "s2-brandenburg-20170216"
SMALL_CLASSES = [("forest", "#1b7837"), ("water", "#1f78b4"), ("farm", "#f0d264")]


def _small_recipe(data_dir: Path, tmp: Path) -> Path:
    """The land-cover recipe cut down: 3 bands, 3 classes, the same held-out strip, 2 CV folds."""
    img = data_dir / S2 / "IMG_DATA"
    bands = {n: str(img / f"T33UUU_20170216T102101_{b}.jp2") for n, b in (("red", "B04"), ("swir16", "B11"))}
    raw = {
        "name": "small-landcover",
        "data": {
            "kind": "scene",
            "bands": bands,
            "scale": 0.0001,
            "labels": str(data_dir / S2 / "osm_landuse_west.gpkg"),
            "label_field": "fclass",
            "split_block": 128,
            "split": {"kind": "region", "bbox": [333840, 5814360, 337040, 5822040], "cv_folds": 2},
            "classes": [{"name": n, "color": c, "values": [n]} for n, c in SMALL_CLASSES],
        },
        "evaluate": {"baseline": "random-forest"},
    }
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _small_bundle(tmp: Path) -> Path:
    bundle = networks.init_bundle(
        bands=["red", "swir16"],
        classes=[ClassInfo(i, n, c) for i, (n, c) in enumerate(SMALL_CLASSES)],
        spec=ModelSpec(in_channels=2, n_classes=3, depth=2, width=4),
        normalization=model.Normalization(mean=(0.08, 0.1), std=(0.03, 0.04), scale=1e-4),
        seed=2,
    )
    return model.save(bundle, tmp / "tiny.safetensors")


def _majority(item: Labelled) -> evaluate.Predictor:
    """A trivial method: the majority class of ``item``'s labels, everywhere."""
    major = int(np.bincount(item.mask[item.mask != NODATA_CLASS]).argmax())
    return lambda it: np.full(it.mask.shape, major, np.uint8)


def test_cross_validation_fits_and_scores_every_method_on_the_same_folds(
    data_dir: Path, tmp_path: Path
) -> None:
    data = load_data(load_train_config(_small_recipe(data_dir, tmp_path)))
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def fit(fold: Data) -> dict[str, evaluate.Predictor]:
        seen.append((fold.train[0].mask, fold.val[0].mask))
        return {"majority(fold)": _majority(fold.train[0]), "RandomForest": evaluate.random_forest(fold)}

    kw: dict[str, Any] = {"classes": data.classes}
    cv = evaluate.cross_validate(fit, data, **kw)
    assert len(seen) == len(data.cv) == 2
    for (train, test), (tr, te) in zip(seen, data.cv, strict=True):
        assert (train == tr.mask).all() and (test == te.mask).all()  # every method: these folds
    per_fold = [evaluate.evaluate_items(_majority(tr), [te], **kw)["miou"] for tr, te in data.cv]
    assert set(cv) == {"majority", "RandomForest"}  # a tuned parameter in the name is dropped
    assert cv["majority"]["miou"] == pytest.approx(per_fold)
    assert cv["majority"]["miou_mean"] == pytest.approx(np.mean(per_fold))
    assert cv["majority"]["miou_std"] == pytest.approx(np.std(per_fold, ddof=1))
    assert cv["RandomForest"]["n"] == 2 and cv["RandomForest"]["miou_mean"] > cv["majority"]["miou_mean"]


def test_evaluate_prints_held_out_and_cv_beside_the_random_forest(data_dir: Path, tmp_path: Path) -> None:
    recipe, bundle = _small_recipe(data_dir, tmp_path), _small_bundle(tmp_path)
    res = CliRunner().invoke(
        cli, ["evaluate", "--model", str(bundle), str(recipe), "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "small-landcover: scored on the held-out region" in lines
    unet = next(ln for ln in lines if ln.startswith("small-landcover U-Net:"))
    rf = next(ln for ln in lines if ln.startswith("small-landcover RandomForest:"))
    assert "held-out-mIoU=" in unet and "val-mIoU=" in unet and "CV-mIoU" not in unet  # no --cv-train
    assert "held-out-mIoU=" in rf and "CV-mIoU=" in rf and "(2 folds)" in rf and "val-mIoU=" in rf
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["scored_on"] == "held-out region"
    held = doc["data"]["held_out"]
    assert held["share_of_labelled"] >= 0.2
    # the printed held-out figure is the one scored on the held-out pixels
    total = np.asarray(doc["results"]["RandomForest"]["confusion"]).sum()
    assert total == held["labelled_pixels"]
    assert f"held-out-mIoU={doc['results']['RandomForest']['miou']:.3f}" in rf
    cv = doc["cv"]["RandomForest"]
    assert f"CV-mIoU={cv['miou_mean']:.3f}±{cv['miou_std']:.3f}(2 folds)" in rf
    assert doc["cv"]["RandomForest"]["n"] == 2 and len(doc["cv"]["RandomForest"]["miou"]) == 2
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| method | held-out mIoU | spatial CV mIoU | validation mIoU |" in report
    assert "| RandomForest |" in report and "(2 folds)" in report


def test_cv_train_needs_a_recipe_with_a_held_out_region(data_dir: Path, tmp_path: Path) -> None:
    crack = Path(__file__).resolve().parents[1] / "configs" / "train-crack-uav75.yaml"
    res = CliRunner(env={"GEOUNET_DATA": str(data_dir)}).invoke(
        cli, ["evaluate", "--model", str(tmp_path / "m.safetensors"), str(crack), "--cv-train"]
    )
    assert res.exit_code == 2
    assert "--cv-train" in res.output and "data.split: {kind: region" in res.output
