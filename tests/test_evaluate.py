"""Evaluation predicts through the production path: its classes are those of ``geounet predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from geounet import evaluate, infer, jobs, model, planning, predict
from geounet.model import ClassInfo, ModelSpec, networks

CLASSES = [ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ff0000"), ClassInfo(2, "c", "#00ff00")]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
