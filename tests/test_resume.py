"""Resumable jobs without Ray: a crashed run's finished tiles are reused, outputs stay identical."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fixtures_ray import RGB_OPTIONS, assert_same_outputs

from geounet import jobs, model, pipeline, planning, predict
from geounet.model import networks
from geounet.resume import RUN_DIR, fingerprint_of
from geounet.tiling import Tile

OPTIONS = RGB_OPTIONS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# --------------------------------------------------------------------------- the tile store itself
#
# The run directory's contract, driven through TileStore's public methods with small synthetic
# results (no model): what a rerun gets back, when a record is durable, when the cache is dropped.


def _store_job(tmp_path: Path, **changes: Any) -> jobs.Job:
    from affine import Affine

    from geounet.geo import Grid
    from geounet.tiling import grid

    source = tmp_path / "scene.tif"
    tmp_path.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        source.write_bytes(b"not read by the store, only stat'ed")
    base = jobs.Job(
        source=str(source),
        model_path="model.safetensors",
        out_dir=tmp_path / "out",
        grid=Grid(shape=(40, 50), transform=Affine(10, 0, 500000, 0, -10, 5800000), crs="EPSG:32633"),
        plan=grid((40, 50), tile=32, halo=8),
        bands=(3, 2, 1),
        options=jobs.PredictOptions(),
        model_sha256="a" * 64,
    )
    return replace(base, **changes)


def _results(job: jobs.Job, indexes: Iterable[int], *, skipped: Iterable[int] = ()) -> list[jobs.TileResult]:
    """Crop results (classes + confidence of the core) that differ per tile, and skipped tiles."""
    import numpy as np

    out = []
    gone = set(skipped)
    for i in indexes:
        tile = job.plan[i]
        if i in gone:
            out.append(jobs.TileResult(tile=tile, skipped=True))
            continue
        h, w = tile.core.shape
        classes = (np.arange(h * w).reshape(h, w) + i) % 5
        out.append(
            jobs.TileResult(
                tile=tile, classes=classes.astype(np.uint8), confidence=np.full((h, w), i, np.uint8)
            )
        )
    return out


def _same(a: jobs.TileResult, b: jobs.TileResult) -> bool:
    import numpy as np

    if a.tile != b.tile or a.skipped != b.skipped:
        return False
    for name in ("classes", "confidence", "probs", "valid"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (
            x is not None and not (x.dtype == y.dtype and np.array_equal(x, y))
        ):
            return False
    return True


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "geounet.resume"]


def test_recorded_tiles_come_back_identical(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np

    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    assert len(job.plan) == 12
    store = TileStore.open(job)
    assert store.done == {} and store.reused == 0
    sent = _results(job, [4, 0, 2, 5], skipped=[2])
    probs = np.linspace(0, 1, 2 * 32 * 32, dtype=np.float16).reshape(2, 32, 32)
    valid = np.eye(32, dtype=bool)
    sent.append(jobs.TileResult(tile=job.plan[1], probs=probs, valid=valid))  # a blend result
    passed = list(store.record(iter(sent), every=2, seconds=3600))
    assert passed == sent  # passed through unchanged, in order
    assert set(store.done) == {0, 1, 2, 4, 5} and store.done[2] is None
    with caplog.at_level(logging.INFO, logger="geounet.resume"):
        again = TileStore.open(job)
    assert _messages(caplog) == [f"resuming: reusing 5 of 12 tiles from {again.root}"]
    assert again.reused == 5 and again.done == store.done
    back = list(again.cached())
    assert sorted(r.tile.index for r in back) == [0, 1, 2, 4, 5]
    by_index = {r.tile.index: r for r in sent}
    for r in back:
        assert _same(r, by_index[r.tile.index]), r.tile.index
    assert [r.tile.index for r in back if r.skipped] == [2]


def test_a_record_is_durable_every_few_tiles_and_when_the_stream_stops(tmp_path: Path) -> None:
    """What a crash can lose: at most the tiles since the last flush (every ``every`` tiles or
    ``seconds``); a stream closed early (an error downstream) flushes what it received."""
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    store = TileStore.open(job)
    stream = store.record(iter(_results(job, range(6))), every=3, seconds=3600)
    seen = [next(stream).tile.index for _ in range(2)]
    assert seen == [0, 1] and TileStore.open(job).done == {}
    next(stream)
    next(stream)  # the fourth tile is asked for: the first three are on disk
    assert set(TileStore.open(job).done) == {0, 1, 2}
    stream.close()  # type: ignore[attr-defined]  # a generator; a consumer gives up after four tiles
    assert set(TileStore.open(job).done) == {0, 1, 2, 3}

    timed = _store_job(tmp_path / "timed")
    store = TileStore.open(timed)
    stream = store.record(iter(_results(timed, range(3))), every=100, seconds=0.0)
    next(stream)
    next(stream)  # no time limit left: each tile is flushed before the next is taken
    assert set(TileStore.open(timed).done) == {0}
    assert [r.tile.index for r in stream] == [2]
    assert set(TileStore.open(timed).done) == {0, 1, 2}


def test_resumed_records_add_parts_without_overwriting_earlier_ones(tmp_path: Path) -> None:
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    first = _results(job, [0, 1, 2])
    list(TileStore.open(job).record(iter(first), every=2))
    second = _results(job, [3, 4])
    list(TileStore.open(job).record(iter(second), every=1))
    third = _results(job, [5])
    list(TileStore.open(job).record(iter(third)))
    store = TileStore.open(job)
    assert store.reused == 6 and len(set(store.done.values())) == 5  # five part files, none reused
    back = {r.tile.index: r for r in store.cached()}
    for r in first + second + third:
        assert _same(back[r.tile.index], r)


def test_a_changed_job_discards_the_cache_and_names_what_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from geounet.resume import TileStore
    from geounet.tiling import grid

    job = _store_job(tmp_path)
    list(TileStore.open(job).record(iter(_results(job, range(4)))))
    other = replace(job, model_sha256="b" * 64, plan=grid((40, 50), tile=48, halo=8))
    with caplog.at_level(logging.WARNING, logger="geounet.resume"):
        store = TileStore.open(other)
    assert store.done == {} and store.reused == 0
    assert _messages(caplog) == [
        f"run cache {store.root} belongs to a different job (changed: model_sha256, plan); discarding it and "
        "predicting every tile"
    ]
    assert list((store.root / "parts").iterdir()) == []  # the old parts are gone
    manifest = json.loads((store.root / "manifest.json").read_text())
    assert set(manifest) == {"fingerprint", "job", "tiles", "created"}
    assert manifest["tiles"] == len(other.plan) and abs(manifest["created"] - time.time()) < 600
    # the execution settings are not part of the job: the cache stays
    list(store.record(iter(_results(other, [0]))))
    faster = replace(other, options=replace(other.options, batch_size=2, device="cpu"))
    assert set(TileStore.open(faster).done) == {0}


def test_a_manifest_of_another_format_names_the_keys_it_lacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    store = TileStore.open(job)
    path = store.root / "manifest.json"
    body = json.loads(path.read_text())
    del body["job"]["bands"], body["job"]["scenes"]  # an older layout, without these keys
    body["fingerprint"] = "0" * 64
    path.write_text(json.dumps(body))
    with caplog.at_level(logging.WARNING, logger="geounet.resume"):
        TileStore.open(job)
    assert "(changed: bands, scenes)" in caplog.text
    caplog.clear()
    path.write_text(json.dumps({"fingerprint": "0" * 64}))  # no job at all: every set key differs
    with caplog.at_level(logging.WARNING, logger="geounet.resume"):
        TileStore.open(job)
    assert "(changed: bands, format, grid, masks, model_sha256, options, plan, scenes, source)" in caplog.text


@pytest.mark.parametrize("manifest", ["{not json", "[1, 2]", None])
def test_an_unreadable_manifest_discards_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, manifest: str | None
) -> None:
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    store = TileStore.open(job)
    list(store.record(iter(_results(job, range(3)))))
    path = store.root / "manifest.json"
    if manifest is None:
        path.unlink()
    else:
        path.write_text(manifest)
    with caplog.at_level(logging.WARNING, logger="geounet.resume"):
        again = TileStore.open(job)
    assert again.done == {}
    assert _messages(caplog) == [
        f"run cache {again.root} belongs to a different job (changed: unreadable manifest); discarding it "
        "and predicting every tile"
    ]
    assert json.loads(path.read_text())["job"] == fingerprint_of(job)


def test_no_resume_starts_afresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    list(TileStore.open(job).record(iter(_results(job, range(5)))))
    with caplog.at_level(logging.INFO, logger="geounet.resume"):
        store = TileStore.open(job, resume=False)
    assert store.done == {} and _messages(caplog) == [
        f"--no-resume: discarding the run cache in {store.root}"
    ]
    assert not list(store.cached())
    assert TileStore.open(job).done == {}  # and the old log is gone for good


def test_log_lines_without_their_part_or_past_the_plan_are_ignored(tmp_path: Path) -> None:
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    store = TileStore.open(job)
    list(store.record(iter(_results(job, [0, 1], skipped=[1])), every=10))
    list(store.record(iter(_results(job, [2, 3])), every=10))
    part_of_2 = store.done[2]
    assert part_of_2 is not None
    (store.parts / part_of_2).unlink()  # a part lost (e.g. the disk was restored from a backup)
    with open(store.log_path, "a") as f:
        f.write(json.dumps({"part": None, "tiles": [], "skipped": [5, 12, 99]}) + "\n")  # the plan has 12
        f.write('{"part": "00000009.npz", "tiles": [4')  # torn by a crash
    again = TileStore.open(job)
    assert again.done == {0: store.done[0], 1: None, 5: None}
    assert [(r.tile.index, r.skipped) for r in again.cached()] == [(1, True), (5, True), (0, False)]


def test_an_unusable_run_directory_is_a_write_error(tmp_path: Path) -> None:
    from geounet.errors import WriteError
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    job.out_dir.mkdir()
    (job.out_dir / RUN_DIR).write_text("a file where the run directory goes")
    with pytest.raises(WriteError) as err:
        TileStore.open(job)
    assert f"cannot use the run directory {job.out_dir / RUN_DIR}" in str(err.value)
    assert "check that --out is writable or rerun with --no-resume" in str(err.value)

    other = _store_job(tmp_path / "b")
    store = TileStore.open(other)
    (store.root / "parts").rmdir()
    (store.root / "parts").write_text("the parts folder replaced by a file")
    with pytest.raises(WriteError) as err:
        list(store.record(iter(_results(other, [0]))))
    assert f"cannot record finished tiles in {store.root}" in str(err.value)
    assert "free disk space or rerun with --no-resume" in str(err.value)
    assert store.done == {}


def test_remove_deletes_the_run_directory(tmp_path: Path) -> None:
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    store = TileStore.open(job)
    list(store.record(iter(_results(job, [0]))))
    store.remove()
    assert not store.root.exists() and job.out_dir.exists()
    store.remove()  # twice is fine


def test_fingerprint_follows_the_input_file_and_the_job(tmp_path: Path) -> None:
    import os

    from shapely.geometry import box

    from geounet.tiling import grid

    job = _store_job(tmp_path)
    doc = fingerprint_of(job)
    assert set(doc) == {
        "format",
        "source",
        "model_sha256",
        "grid",
        "plan",
        "bands",
        "options",
        "scenes",
        "aoi",
        "composite",
        "masks",
    }
    assert (doc["composite"], doc["masks"]) == (None, [])  # a local file: no scenes to composite
    assert isinstance(doc["format"], int)
    st = os.stat(job.source)
    assert doc["source"] == {"path": job.source, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    assert doc["grid"] == {"shape": [40, 50], "transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 5800000.0],
                           "crs": "EPSG:32633"}  # fmt: skip
    assert doc["plan"] == {"shape": [40, 50], "size": 16, "halo": 8, "align": 1}
    assert (doc["bands"], doc["model_sha256"], doc["scenes"], doc["aoi"]) == ([3, 2, 1], "a" * 64, [], None)
    assert doc["options"] == job.options.pixel_options()
    json.dumps(doc)  # plain JSON values
    Path(job.source).write_bytes(b"rewritten with other content")
    assert fingerprint_of(job)["source"]["size"] != st.st_size
    remote = replace(job, source="https://example.test/scene.tif")
    assert fingerprint_of(remote)["source"] == {"path": "https://example.test/scene.tif"}

    class Scene:
        id = "S2B_33UUU_20240601"

    changed = {
        "scenes": replace(job, scenes=(Scene(), "plain-id"), source="stac"),
        "aoi": replace(job, aoi=box(0, 0, 1, 1)),
        "plan": replace(job, plan=grid((40, 50), tile=32, halo=4)),
        "bands": replace(job, bands=(1, 2, 3)),
    }
    assert fingerprint_of(changed["scenes"])["scenes"] == ["S2B_33UUU_20240601", "plain-id"]
    assert fingerprint_of(changed["aoi"])["aoi"] == box(0, 0, 1, 1).wkt
    for key, other in changed.items():
        assert fingerprint_of(other)[key] != fingerprint_of(job)[key], key


def test_records_after_a_torn_line_still_count(tmp_path: Path) -> None:
    """A crash while appending leaves a line without its newline; what the next run records
    after it must not be glued onto that fragment (and so lost on the run after)."""
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    store = TileStore.open(job)
    list(store.record(iter(_results(job, [0])), every=10))
    with open(store.log_path, "a") as f:
        f.write('{"part": "00000009.npz", "tiles": [4')  # the crash
    again = TileStore.open(job)
    assert set(again.done) == {0}
    list(again.record(iter(_results(job, [1])), every=10))
    list(again.record(iter(_results(job, [2], skipped=[2])), every=10))
    assert set(TileStore.open(job).done) == {0, 1, 2}
    with open(store.log_path, "a") as f:
        f.write("{")  # a crash after the first byte of a line
    list(TileStore.open(job).record(iter(_results(job, [3])), every=10))
    assert set(TileStore.open(job).done) == {0, 1, 2, 3}


def test_by_default_a_crash_loses_at_most_eight_tiles_or_two_seconds(tmp_path: Path) -> None:
    """The defaults the crash-and-resume tests above rely on (every=8, seconds=2.0)."""
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    stream = TileStore.open(job).record(iter(_results(job, range(12))))
    for _ in range(9):
        next(stream)  # the ninth tile is asked for: the first eight are on disk
    assert set(TileStore.open(job).done) == set(range(8))
    time.sleep(2.05)
    next(stream)  # the ninth has waited two seconds: recorded before the tenth is taken
    assert set(TileStore.open(job).done) == set(range(9))
    stream.close()  # type: ignore[attr-defined]  # a generator, typed as an Iterator


def test_cached_tiles_come_back_in_tile_order_whatever_order_their_parts_were_recorded(
    tmp_path: Path,
) -> None:
    """Ray workers finish out of order, so a later part may hold earlier tiles; a rerun still gets
    the tiles in tile order (part by part, ordered by each part's first tile), skipped ones first."""
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    for batch in ([9, 10], [0, 1], [4, 5]):
        list(TileStore.open(job).record(iter(_results(job, batch, skipped=[4])), every=8))
    store = TileStore.open(job)
    assert sorted(set(store.done.values()), key=str) == ["00000001.npz", "00000002.npz", "00000003.npz", None]
    assert [r.tile.index for r in store.cached()] == [4, 0, 1, 5, 9, 10]


def test_reopening_leaves_a_complete_log_as_it_was_and_accepts_an_empty_one(tmp_path: Path) -> None:
    """Only a torn last line gets its newline: a complete log stays byte for byte what was written,
    and an empty log (a crash before the first record reached the disk) is reused as it is."""
    from geounet.resume import TileStore

    job = _store_job(tmp_path)
    store = TileStore.open(job)
    list(store.record(iter(_results(job, [0, 1])), every=10))
    written = store.log_path.read_bytes()
    assert written.endswith(b"\n") and written.count(b"\n") == 1
    assert set(TileStore.open(job).done) == {0, 1}
    assert store.log_path.read_bytes() == written

    empty = _store_job(tmp_path / "empty")
    store = TileStore.open(empty)
    store.log_path.write_bytes(b"")
    again = TileStore.open(empty)
    assert again.done == {} and store.log_path.read_bytes() == b""
    list(again.record(iter(_results(empty, [3])), every=10))
    assert set(TileStore.open(empty).done) == {3}


def test_the_tile_cache_is_a_compressed_npz_without_pickles(tmp_path: Path) -> None:
    """Parts are deflated (a large tile's cache is written on the model's critical path, and its
    disk use matters) and hold plain arrays only: an object array is refused, not pickled."""
    import io
    import zipfile

    import numpy as np

    from geounet.resume import write_npz

    classes = np.repeat(np.arange(4, dtype=np.uint8), 256 * 64).reshape(256, 256)
    buf = io.BytesIO()
    write_npz(buf, {"t0_classes": classes})
    with zipfile.ZipFile(buf) as z:
        assert [i.compress_type for i in z.infolist()] == [zipfile.ZIP_DEFLATED]
    assert len(buf.getvalue()) < classes.nbytes / 20
    buf.seek(0)
    with np.load(buf) as npz:
        np.testing.assert_array_equal(npz["t0_classes"], classes)
    with pytest.raises(ValueError, match="pickle"):
        write_npz(io.BytesIO(), {"t0_probs": np.array([{"not": "an array"}], dtype=object)})


def test_the_fingerprint_digest_ignores_key_order_and_sees_every_value() -> None:
    """The manifest's fingerprint is a digest of the job document: the same document written in
    another key order (another JSON writer, a reordered config) matches; any changed value does not."""
    from geounet.resume import _digest

    doc = {"grid": {"shape": [40, 50], "crs": "EPSG:32633"}, "model": "a" * 64, "bands": [3, 2, 1]}
    reordered = {"bands": [3, 2, 1], "model": "a" * 64, "grid": {"crs": "EPSG:32633", "shape": [40, 50]}}
    assert _digest(reordered) == _digest(doc)
    assert _digest(doc | {"bands": [1, 2, 3]}) != _digest(doc)
