"""Resumable jobs without Ray: a crashed run's finished tiles are reused, outputs stay identical."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures_ray import RGB_OPTIONS, assert_same_outputs

from geounet import jobs, model, pipeline, planning, predict
from geounet.model import networks
from geounet.resume import RUN_DIR, fingerprint_of
from geounet.tiling import Tile

OPTIONS = RGB_OPTIONS


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # The CI machine is shared: several torch threads on 2 busy cores spin against each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Crashing:
    """The local executor, dying with a RuntimeError after ``after`` tiles; records what it was asked."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.asked: list[int] = []

    def __call__(self, job: jobs.Job, *, tiles: Iterable[Tile] | None = None) -> Iterator[Any]:
        todo = list(job.plan if tiles is None else tiles)
        self.asked = [t.index for t in todo]
        for k, res in enumerate(predict.local_results(job, tiles=todo)):
            if self.after is not None and k == self.after:
                raise RuntimeError("simulated crash")
            yield res


def _crash(job: jobs.Job, after: int) -> None:
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.run(job, results=Crashing(after), progress=False)
    assert not (job.out_dir / "classes.tif").exists()  # nothing finished-looking after a crash
    assert (job.out_dir / RUN_DIR / "tiles.log").exists()


def test_crash_then_resume_reuses_tiles_and_gives_identical_outputs(
    landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path
) -> None:
    job = planning.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path, options=OPTIONS)
    _crash(job, after=150)
    again = Crashing(None)
    pipeline.run(job, results=again, progress=False)
    reused = json.loads((tmp_path / "run.json").read_text())["counts"]["reused"]
    assert 140 <= reused <= 150  # the last partial flush may be lost, never more
    assert len(again.asked) == len(job.plan) - reused
    assert set(again.asked).isdisjoint(range(reused - 8))
    assert_same_outputs(rgb_reference, tmp_path)
    assert not (tmp_path / RUN_DIR).exists()  # removed once the outputs are published


def test_changed_bundle_discards_the_cache(
    landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = planning.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path, options=OPTIONS)
    _crash(job, after=40)
    other = model.save(
        networks.init_bundle(
            bands=("red", "green", "blue"),
            classes=model.load(rgb_bundle).classes,
            spec=model.load(rgb_bundle).spec,
            seed=1,
        ),
        tmp_path / "other.safetensors",
    )
    job2 = planning.plan(landsat_rgb, model=other, out_dir=tmp_path, options=OPTIONS)
    spy = Crashing(after=0)
    with caplog.at_level(logging.WARNING, logger="geounet.resume"), pytest.raises(RuntimeError):
        pipeline.run(job2, results=spy, progress=False)
    assert "different job (changed: model_sha256)" in caplog.text
    assert len(spy.asked) == len(job2.plan)


def test_fingerprint_covers_only_what_changes_pixels(
    landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    """Execution settings and manifest extras (a workflow's config dump) keep the cache; resampling does not."""
    job = planning.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path, options=OPTIONS)
    same = replace(
        job,
        options=replace(job.options, batch_size=3, device="cpu", vector_format="fgb"),
        extra={"config": {"execution": {"actors": 7}}, "workflow": "region-landcover"},
    )
    assert fingerprint_of(same) == fingerprint_of(job)
    for options in (replace(job.options, resampling="bilinear"), replace(job.options, tta=True)):
        assert fingerprint_of(replace(job, options=options)) != fingerprint_of(job)


def test_fingerprint_covers_the_composite_and_mask_rules(
    landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    """Scenes composited another way (mosaic.composite, mosaic.masks) are other pixels: a new cache."""
    from types import SimpleNamespace

    from geounet.masks import MaskRule

    job = planning.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path, options=OPTIONS)
    scenes = replace(
        job, scenes=(SimpleNamespace(id="a", mask_rule=None), SimpleNamespace(id="b", mask_rule=None))
    )
    base = fingerprint_of(scenes)
    assert fingerprint_of(replace(scenes, extra={"composite": "first", "config": {"x": 1}})) == base
    assert fingerprint_of(replace(scenes, extra={"composite": "median"})) != base
    masked = (
        SimpleNamespace(id="a", mask_rule=MaskRule(scl=(8, 9))),
        SimpleNamespace(id="b", mask_rule=None),
    )
    assert fingerprint_of(replace(scenes, scenes=masked)) != base
    other = (SimpleNamespace(id="a", mask_rule=MaskRule(scl=(8,))), SimpleNamespace(id="b", mask_rule=None))
    assert fingerprint_of(replace(scenes, scenes=other)) != fingerprint_of(replace(scenes, scenes=masked))


def test_torn_log_line_and_no_resume(
    landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path
) -> None:
    job = planning.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path, options=OPTIONS)
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
    assert_same_outputs(rgb_reference, tmp_path)


def test_blend_merge_resumes_identically(landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path) -> None:
    """Blend results (read-window float16 probabilities + valid masks) round-trip through the cache."""
    import dataclasses

    options = dataclasses.replace(OPTIONS, merge="blend")
    whole = planning.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path / "whole", options=options)
    pipeline.run(whole, progress=False)
    job = planning.plan(landsat_rgb, model=rgb_bundle, out_dir=tmp_path / "resumed", options=options)
    _crash(job, after=100)
    pipeline.run(job, results=Crashing(None), progress=False)
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["counts"]["reused"] >= 90
    assert_same_outputs(tmp_path / "whole", tmp_path / "resumed")
