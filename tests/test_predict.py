"""The read and predict stages: what the model is handed for a tile of the real Sentinel-2 scene."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geounet import infer, jobs, model, planning, predict


def test_corner_tile_handed_to_the_model_is_mirrored(
    s2_rgbn: Path, small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[np.ndarray] = []
    original, original_rows = infer.Predictor.predict, infer.Predictor.predict_rows

    def spy(self: infer.Predictor, x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return original(self, x)

    def spy_rows(self: infer.Predictor, x: np.ndarray, **kw: Any) -> Any:
        seen.append(x[None].copy())  # a streamed tile: the same chip, one at a time
        return original_rows(self, x, **kw)

    monkeypatch.setattr(infer.Predictor, "predict", spy)
    monkeypatch.setattr(infer.Predictor, "predict_rows", spy_rows)
    # The bundle's own (small) tile, so the corner tile's far side lies inside the raster.
    opts = jobs.PredictOptions(batch_size=1, tile=model.load(small_bundle).tile)
    job = planning.plan(s2_rgbn, model=small_bundle, out_dir=tmp_path / "o", options=opts)
    first = next(predict.local_results(job))  # tile 0: top-left corner
    assert first.tile.index == 0 and first.tile.padding.top == job.plan.halo
    x = seen[0][0]
    b = model.load(small_bundle)
    with rasterio.open(s2_rgbn) as src:
        n = job.plan.read_size - job.plan.halo
        raw = src.read(window=rasterio.windows.Window(0, 0, n, n)).astype(np.float32)
    h = job.plan.halo
    expected = model.normalize(np.pad(raw, ((0, 0), (h, 0), (h, 0)), mode="reflect")[None], b.normalization)[
        0
    ]
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    zero_input = model.normalize(np.zeros((1, 4, 1, 1), np.float32), b.normalization)[0, :, 0, 0]
    assert not np.isclose(x[:, :h, :h], zero_input[:, None, None]).all(), "halo must not be zero padding"
