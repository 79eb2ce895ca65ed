"""The plan of a job on the real Sentinel-2 scene: the memory-budget (streamed) plan and ``--dry-run``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from fixtures_s2 import CLASSES, whole_image_probs

from geounet import jobs, model, planning, predict


def _job_classes(job: jobs.Job) -> np.ndarray:
    out = np.full(job.grid.shape, 254, np.uint8)
    for res in predict.local_results(job):
        assert res.classes is not None
        out[res.tile.core.to_slices()] = res.classes
    return out


@pytest.mark.parametrize("memory_mb", [64, 512])  # 64 MB: several streamed tiles; 512 MB: one
def test_default_plan_streams_and_equals_whole_image(
    s2_rgbn: Path, small_bundle: Path, tmp_path: Path, memory_mb: int
) -> None:
    """The memory-budget plan (large streamed tiles) gives the whole-image pass's classes."""
    opts = jobs.PredictOptions(device="cpu", memory=memory_mb << 20)
    job = planning.plan(s2_rgbn, model=small_bundle, out_dir=tmp_path / "o", options=opts)
    assert job.options.stream and job.plan.halo >= model.load(small_bundle).receptive_field
    assert (len(job.plan) > 1) == (memory_mb == 64)
    with rasterio.open(s2_rgbn) as src:
        image = src.read().astype(np.float32)
    expected = whole_image_probs(small_bundle, image, job.plan.halo)
    ids = np.array([c.id for c in CLASSES], np.uint8)[expected.argmax(0)]
    classes = _job_classes(job)
    assert len(np.unique(classes)) == len(CLASSES), "the model must have real output"
    margin = np.sort(expected, axis=0)
    decided = (margin[-1] - margin[-2]) > 1e-4  # leave out float ties of the two best classes
    assert (classes[decided] == ids[decided]).all()
    assert decided.mean() > 0.99


def test_dry_run_shows_cost_memory_and_time(s2_rgbn: Path, small_bundle: Path, tmp_path: Path) -> None:
    import json

    job = planning.plan(
        s2_rgbn, model=small_bundle, out_dir=tmp_path, options=jobs.PredictOptions(device="cpu")
    )
    info = json.loads(planning.describe(job, probe=True))
    assert info["exact"] is True and info["streamed"] is True
    assert info["network_px_per_output_px"] == pytest.approx(
        len(job.plan) * job.plan.read_size**2 / (1536 * 768), abs=1e-3
    )
    assert info["memory_estimate_mb"] > 0 and info["expected_s"] > 0 and info["model_mpx_per_s"] > 0
