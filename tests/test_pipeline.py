"""End-to-end prediction on real rasters: seam-free tiling through the stages, and pipeline.run's outputs.

The stage modules have their own tests (``test_planning``, ``test_predict``, ``test_rasters``,
``test_publishing``); the scene, its crop and the bundle are in ``tests/fixtures_s2.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures_s2 import whole_image_probs

from geounet import infer, jobs, merge, model, pipeline, planning, read
from geounet.errors import ConfigError
from geounet.tiling import grid


def _tiled_probs(path: Path, bundle_path: Path, *, core: int, halo: int) -> np.ndarray:
    """The pipeline's stages (plan, chip read with mirror padding, predict, core crop) over a file."""
    b = model.load(bundle_path)
    predictor = infer.Predictor(b, device="cpu", batch_size=4)
    with read.open_raster(path) as ds:
        out = np.full((len(b.classes), ds.height, ds.width), np.nan)
        for tile in grid((ds.height, ds.width), tile=core + 2 * halo, halo=halo, align=b.spec.stride):
            chip = read.chip(ds, tile, bands=(1, 2, 3, 4))
            probs = predictor.predict(model.normalize(chip.data[None], b.normalization))[0]
            out[(slice(None), *tile.core.to_slices())] = merge.crop(probs, tile)
    assert not np.isnan(out).any()
    return out


@pytest.mark.parametrize("core", [80, 112])  # neither divides 300×260
def test_crop_merge_equals_whole_image_prediction(
    s2_crop: tuple[Path, np.ndarray], small_bundle: Path, core: int
) -> None:
    path, image = s2_crop
    b = model.load(small_bundle)
    halo = model.recommended_halo(b.spec)
    assert halo >= b.receptive_field
    expected = whole_image_probs(small_bundle, image, halo)
    assert expected.std(axis=(1, 2)).min() > 0.01, "probabilities must vary for the check to mean something"
    out = _tiled_probs(path, small_bundle, core=core, halo=halo)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert (out.argmax(0) == expected.argmax(0)).all()


def test_a_halo_below_the_receptive_field_shows_seams(
    s2_crop: tuple[Path, np.ndarray], small_bundle: Path
) -> None:
    """The negative control: the comparison above is sensitive to missing context."""
    path, image = s2_crop
    halo = model.load(small_bundle).spec.stride
    out = _tiled_probs(path, small_bundle, core=80, halo=halo)
    assert np.abs(out - whole_image_probs(small_bundle, image, halo)).max() > 1e-4


def test_outputs_on_demand(s2_crop: tuple[Path, np.ndarray], small_bundle: Path, tmp_path: Path) -> None:
    path, _ = s2_crop
    opts = jobs.PredictOptions(device="cpu", outputs=("classes",))
    outputs = pipeline.run(planning.plan(path, model=small_bundle, out_dir=tmp_path / "c", options=opts),
                           progress=False, resume=False)  # fmt: skip
    assert "polygons" not in outputs and "confidence" not in outputs
    assert not (tmp_path / "c" / "confidence.tif").exists()
    assert not list((tmp_path / "c").glob("polygons.*"))
    assert (tmp_path / "c" / "classes.tif").exists() and (tmp_path / "c" / "item.json").exists()
    with pytest.raises(ConfigError, match="must include classes"):
        jobs.PredictOptions(outputs=("polygons",))
    with pytest.raises(ConfigError, match="'polygon' is unknown"):
        jobs.PredictOptions(outputs=("classes", "polygon"))
