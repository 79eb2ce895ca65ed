"""Resumable jobs without Ray: a crashed run's finished tiles are reused, outputs stay identical."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
import torch

from geounet import model, pipeline
from geounet.resume import RUN_DIR
from geounet.tiling import Tile

OPTIONS = pipeline.PredictOptions(tile=96, halo=24, batch_size=4)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # The CI machine is shared: several torch threads on 2 busy cores spin against each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def outputs_of(out: Path) -> tuple[np.ndarray, np.ndarray, list[tuple[Any, ...]]]:
    """(classes, confidence, sorted polygon rows) of a finished output folder."""
    with rasterio.open(out / "classes.tif") as ds:
        classes = ds.read(1)
    with rasterio.open(out / "confidence.tif") as ds:
        confidence = ds.read(1)
    df = pyogrio.read_dataframe(out / "polygons.gpkg", layer="polygons")
    rows = sorted((r.class_id, r.class_name, r.geometry.wkb) for r in df.itertuples())
    return classes, confidence, rows


def assert_same_outputs(a: Path, b: Path) -> None:
    ca, fa, pa = outputs_of(a)
    cb, fb, pb = outputs_of(b)
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(fa, fb)
    assert pa == pb


@pytest.fixture(scope="module")
def reference(landsat_rgb: Path, rgb_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    job = pipeline.plan(landsat_rgb, model=rgb_bundle, out_dir=out, options=OPTIONS)
    pipeline.run(job, progress=False)
    classes, _, polygons = outputs_of(out)
    assert len(np.unique(classes[classes != 255])) >= 2 and len(polygons) > 10  # a non-trivial map
    return out


class Crashing:
    """The local executor, dying with a RuntimeError after ``after`` tiles; records what it was asked."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.asked: list[int] = []

    def __call__(self, job: pipeline.Job, *, tiles: Iterable[Tile] | None = None) -> Iterator[Any]:
        todo = list(job.plan if tiles is None else tiles)
        self.asked = [t.index for t in todo]
        for k, res in enumerate(pipeline.local_results(job, tiles=todo)):
            if self.after is not None and k == self.after:
                raise RuntimeError("simulated crash")
            yield res


def _crash(job: pipeline.Job, after: int) -> None:
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.run(job, results=Crashing(after), progress=False)
    assert not (job.out_dir / "classes.tif").exists()  # nothing finished-looking after a crash
    assert (job.out_dir / RUN_DIR / "tiles.log").exists()


def test_crash_then_resume_reuses_tiles_and_gives_identical_outputs(
    landsat_rgb: Path, rgb_bundle: Path, reference: Path, tmp_path: Path
) -> None:
    job = pipeline.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path, options=OPTIONS)
    _crash(job, after=150)
    again = Crashing(None)
    pipeline.run(job, results=again, progress=False)
    reused = json.loads((tmp_path / "run.json").read_text())["counts"]["reused"]
    assert 140 <= reused <= 150  # the last partial flush may be lost, never more
    assert len(again.asked) == len(job.plan) - reused
    assert set(again.asked).isdisjoint(range(reused - 8))
    assert_same_outputs(reference, tmp_path)
    assert not (tmp_path / RUN_DIR).exists()  # removed once the outputs are published


def test_changed_bundle_discards_the_cache(
    landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = pipeline.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path, options=OPTIONS)
    _crash(job, after=40)
    other = model.save(
        model.init_bundle(
            bands=("red", "green", "blue"),
            classes=model.load(rgb_bundle).classes,
            spec=model.load(rgb_bundle).spec,
            seed=1,
        ),
        tmp_path / "other.safetensors",
    )
    job2 = pipeline.plan(landsat_rgb, model=other, out_dir=tmp_path, options=OPTIONS)
    spy = Crashing(after=0)
    with caplog.at_level(logging.WARNING, logger="geounet.resume"), pytest.raises(RuntimeError):
        pipeline.run(job2, results=spy, progress=False)
    assert "different job (changed: model_sha256)" in caplog.text
    assert len(spy.asked) == len(job2.plan)


def test_torn_log_line_and_no_resume(
    landsat_rgb: Path, rgb_bundle: Path, reference: Path, tmp_path: Path
) -> None:
    job = pipeline.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path, options=OPTIONS)
    _crash(job, after=30)
    with open(tmp_path / RUN_DIR / "tiles.log", "a") as f:
        f.write('{"part": "00000099.np')  # a crash while appending
    spy = Crashing(after=0)
    with pytest.raises(RuntimeError):
        pipeline.run(job, results=spy, progress=False)
    assert 20 <= len(job.plan) - len(spy.asked) <= 30
    fresh = Crashing(None)
    pipeline.run(job, results=fresh, progress=False, resume=False)
    assert len(fresh.asked) == len(job.plan)
    assert_same_outputs(reference, tmp_path)
