"""Ray test fixtures: a tiny real U-Net bundle for the Landsat RGB scene and a real Ray cluster.

The cluster is a ``ray.cluster_utils.Cluster`` (real raylets on loopback), started once per
test module that asks for it, with a 2-CPU head; multi-node tests add worker nodes to it.
Every Ray process is stopped when the module ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from fixtures_model import steep_bundle

from geounet import jobs, pipeline, planning
from geounet.model import ClassInfo, ModelSpec
from geounet.pool import local_system_config

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

#: The tile plan of the Ray and resume tests: 255 tiles of 96 px (48 px cores) on the scene, 32 batches.
RGB_OPTIONS = jobs.PredictOptions(tile=96, halo=24, batch_size=8)

RGB_CLASSES = (
    ClassInfo(0, "water", "#1f78b4"),
    ClassInfo(1, "forest", "#33a02c"),
    ClassInfo(2, "urban", "#e31a1c"),
)


@pytest.fixture(scope="session")
def landsat_rgb(data_dir: Path) -> Path:
    """The real Landsat 7 RGB scene (791×718, 3 bands, nodata border)."""
    return data_dir / "landsat7-rgb" / "RGB.byte.tif"


@pytest.fixture(scope="session")
def rgb_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised depth-2, width-4 U-Net for 3 bands / 3 classes (receptive radius < 24).

    The head is scaled up so the classes vary across the scene (a fresh head predicts
    one class almost everywhere, which would make output comparisons vacuous).
    """
    return steep_bundle(
        tmp_path_factory.mktemp("ray-model") / "rgb.safetensors",
        bands=("red", "green", "blue"),
        classes=RGB_CLASSES,
        spec=ModelSpec(in_channels=3, n_classes=3, depth=2, width=4),
        mean=60.0,
        std=30.0,
        seed=7,
        gain=50,
    )


def polygon_rows(path: Path) -> list[tuple[Any, ...]]:
    """The polygons of a layer as sorted rows: attributes and the normalized geometry's WKB.

    Normalized (shapely ``normalize``): the same outline may start at another vertex when it was
    dissolved across other seams (tile cores on the workers, 1024-px blocks in-process).
    """
    df = (
        pyogrio.read_dataframe(path, layer=path.stem)
        if path.suffix == ".gpkg"
        else pyogrio.read_dataframe(path)
    )
    geoms = shapely.normalize(df.geometry.values)
    rows = [
        (r.class_id, r.class_name, r.area_m2, r.perimeter_m, r.mean_confidence, shapely.to_wkb(g))
        for r, g in zip(df.itertuples(), geoms, strict=True)
    ]
    return sorted(rows, key=lambda r: (r[0], r[1], r[5]))  # not by area: it may differ in the last bits


def outputs_of(out: Path) -> tuple[np.ndarray, np.ndarray, list[tuple[Any, ...]]]:
    """(classes, confidence, sorted polygon rows) of a finished output folder."""
    with rasterio.open(out / "classes.tif") as ds:
        classes = ds.read(1)
    with rasterio.open(out / "confidence.tif") as ds:
        confidence = ds.read(1)
    return classes, confidence, polygon_rows(out / "polygons.gpkg")


def assert_same_outputs(a: Path, b: Path) -> None:
    """Pixel-identical classes and confidence, identical polygons (geometry and attributes)."""
    ca, fa, pa = outputs_of(a)
    cb, fb, pb = outputs_of(b)
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_array_equal(fa, fb)
    assert_same_polygons(pa, pb)


def assert_same_polygons(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    """Rows of :func:`polygon_rows`: same count, per-class area sums, normalized geometries, attributes.

    Geometry, class and mean confidence must be equal; area and perimeter are computed from
    outlines that may start at another vertex, so they agree to the last bits (1e-12) only.
    """
    assert len(got) == len(want)
    assert [(r[0], r[1], r[4], r[5]) for r in got] == [(r[0], r[1], r[4], r[5]) for r in want]
    for column in (2, 3):
        np.testing.assert_allclose([r[column] for r in got], [r[column] for r in want], rtol=1e-12)
    for class_id in {r[0] for r in want}:
        total = sum(r[2] for r in want if r[0] == class_id)
        assert sum(r[2] for r in got if r[0] == class_id) == pytest.approx(total, rel=1e-12)


@pytest.fixture(scope="session")
def rgb_reference(landsat_rgb: Path, rgb_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outputs of the in-process executor (one torch thread) on the scene with :data:`RGB_OPTIONS`."""
    out = tmp_path_factory.mktemp("rgb-reference")
    job = planning.plan(landsat_rgb, model=rgb_bundle, out_dir=out, options=RGB_OPTIONS)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the Ray actors (one thread per CPU)
    try:
        pipeline.run(job, progress=False)
    finally:
        torch.set_num_threads(before)
    classes, _, polygons = outputs_of(out)
    assert len(np.unique(classes[classes != 255])) >= 2 and len(polygons) > 10  # a non-trivial map
    return out


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A real Ray cluster (2-CPU head, no dashboard), connected in this process; shut down after."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": False,
            "_system_config": local_system_config(2),
        },
    )
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[Any]:
    """A real 2-node Ray cluster (1-CPU head, 1-CPU worker), connected here without log streaming."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": local_system_config(2)},
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
