"""Tile plans: cores partition the grid, read windows are aligned and uniform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from fixtures_model import impulse_bundle, lit
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from geounet import jobs, model, planning, predict, rasters
from geounet.errors import ConfigError
from geounet.model import ModelSpec
from geounet.tiling import grid


@st.composite
def plans(draw: st.DrawFn) -> tuple[tuple[int, int], int, int, int]:
    rows = draw(st.integers(1, 3000))
    cols = draw(st.integers(1, 3000))
    align = draw(st.sampled_from([1, 2, 8, 16, 32]))
    halo = draw(st.integers(0, 8)) * align
    # keep the tile count below ~60x60 so the brute-force check stays fast
    smallest = -(-max(rows, cols) // (60 * align))
    core = draw(st.integers(smallest, max(smallest, 40))) * align
    return (rows, cols), core + 2 * halo, halo, align


@settings(max_examples=150, deadline=None)
@given(plans())
def test_cores_partition_the_grid(case: tuple[tuple[int, int], int, int, int]) -> None:
    shape, tile, halo, align = case
    plan = grid(shape, tile=tile, halo=halo, align=align)
    count = np.zeros(shape, np.uint8)
    for t in plan:
        count[t.core.to_slices()] += 1
    assert (count == 1).all(), "every pixel must lie in exactly one core"


@settings(max_examples=150, deadline=None)
@given(plans())
def test_read_windows_are_uniform_aligned_and_padded_exactly(
    case: tuple[tuple[int, int], int, int, int],
) -> None:
    shape, tile, halo, align = case
    plan = grid(shape, tile=tile, halo=halo, align=align)
    for t in plan:
        assert t.read.shape == (plan.read_size, plan.read_size)
        assert t.read.row % align == (-halo) % align and t.read.col % align == (-halo) % align
        assert t.core_in_read.row == halo and t.core_in_read.col == halo
        inside = t.read.clip(*shape)
        p = t.padding
        assert inside.height + p.top + p.bottom == t.read.height
        assert inside.width + p.left + p.right == t.read.width


def test_intersecting_finds_the_tiles_of_a_block() -> None:
    plan = grid((1000, 900), tile=160, halo=16, align=16)
    from geounet.geo import Window

    block = Window(100, 300, 300, 10)
    hits = {t.index for t in plan.intersecting(block)}
    brute = {t.index for t in plan if t.core.intersects(block)}
    assert hits == brute


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 300),
    cols=st.integers(1, 300),
    core=st.integers(1, 64),
    row=st.integers(-40, 320),
    col=st.integers(-40, 320),
    height=st.integers(1, 200),
    width=st.integers(1, 200),
)
def test_intersecting_is_the_brute_force_set_for_any_window(
    rows, cols, core, row, col, height, width
) -> None:
    """Windows reaching past the grid edges too, ending exactly on a core edge or not. (A window
    with no pixel in the grid may still get the last, clipped core's tile: not asked here.)"""
    from geounet.geo import Window

    core = max(core, -(-max(rows, cols) // 40))  # at most 40x40 tiles: the brute force stays fast
    plan = grid((rows, cols), tile=core, halo=0, shrink=False)
    block = Window(row, col, height, width)
    assume(block.clip(rows, cols).size > 0)
    hits = [t.index for t in plan.intersecting(block)]
    assert hits == sorted(t.index for t in plan if t.core.intersects(block))


@pytest.mark.parametrize(
    ("tile", "halo", "align", "fragment"),
    [
        (
            256,
            128,
            16,
            "tile=256 must be > 2*halo=256 (the core would be empty); raise --tile / predict.tile",
        ),
        (
            250,
            64,
            16,
            "tile=250 must be a multiple of the model's down-sampling factor 16; set --tile / predict.tile to 240 or 256",
        ),
        (
            256,
            60,
            16,
            "halo=60 must be a multiple of the model's down-sampling factor 16; set --halo / predict.halo",
        ),
        (256, -16, 16, "halo=-16 must be >= 0; set --halo / predict.halo"),
    ],
)
def test_bad_plans_name_the_value_and_the_fix(tile: int, halo: int, align: int, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        grid((500, 500), tile=tile, halo=halo, align=align)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value) and "tiling." not in str(err.value)  # no key that does not exist


# --------------------------------------------------------------------------- seams: an impulse oracle
#
# A network with non-negative weights and zero biases (fixtures_model.impulse_bundle) turns an
# all-zero image into zero logits and lights up exactly the output pixels whose receptive field
# holds a non-zero input pixel. So its class map is a set computation that needs neither the
# tiler nor the merger: a core pixel of a tile is lit iff an impulse inside the tile's *read
# window* reaches it. That gives the independent oracle for every halo, below the receptive
# field too, and the whole-image forward pass is the oracle for a seam-free result.

IMPULSE = 1e4
IMPULSE_SPECS = {
    "d2-transpose": ModelSpec(in_channels=1, n_classes=2, depth=2, width=2, norm="none"),
    "d3-transpose": ModelSpec(in_channels=1, n_classes=2, depth=3, width=2, norm="none"),
    "d3-bilinear": ModelSpec(in_channels=1, n_classes=2, depth=3, width=2, norm="none", upsample="bilinear"),
}


def _reach(spec: ModelSpec) -> tuple[dict[int, tuple[int, int]], int]:
    """Per stride phase of an impulse: the (min, max) offset of the output rows it lights; the radius."""
    b = impulse_bundle(spec)
    s = spec.stride
    n = -(-(4 * model.receptive_field(spec) + 4 * s) // s) * s
    centre = n // 2 // s * s
    out = {}
    for phase in range(s):
        image = np.zeros((n, n))
        q = centre + phase
        image[q, q] = IMPULSE
        rows, cols = np.nonzero(lit(b, image))
        assert (rows.min(), rows.max()) == (cols.min(), cols.max())  # square kernels: same both axes
        out[phase] = (int(rows.min()) - q, int(rows.max()) - q)
    radius = max(max(-lo, hi) for lo, hi in out.values())
    return out, radius


@pytest.mark.parametrize("name", list(IMPULSE_SPECS))
def test_receptive_field_is_the_reach_of_an_impulse(name: str) -> None:
    """model.receptive_field against what the network does: the widest footprint over all phases."""
    spec = IMPULSE_SPECS[name]
    reach, radius = _reach(spec)
    assert radius == model.receptive_field(spec), reach
    assert model.recommended_halo(spec) >= radius and model.recommended_halo(spec) % spec.stride == 0
    assert model.recommended_halo(spec) - spec.stride < radius  # the smallest aligned halo that covers it


@pytest.fixture(scope="module")
def impulse_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """(raster, bundle, image): 256×320 zeros with impulses 40–51 px from interior core edges of 64."""
    bundle = impulse_bundle(ModelSpec(in_channels=1, n_classes=2, depth=3, width=4, norm="none"))
    assert (bundle.receptive_field, bundle.halo) == (51, 56)
    image = np.zeros((256, 320), np.float32)
    for k in range(12):  # every stride phase, on both sides of row and column core edges
        d = 40 + k
        image[128 - d, 20 + 25 * k] = IMPULSE  # above the core edge at row 128
        image[192 + d - 1, 14 + 25 * k] = IMPULSE  # below the edge at row 192
        image[20 + 19 * k, 128 - d] = IMPULSE  # left of the edge at col 128
        image[14 + 19 * k, 256 + d - 1] = IMPULSE  # right of the edge at col 256
    tmp = tmp_path_factory.mktemp("impulse")
    path = tmp / "impulses.tif"
    profile = {"driver": "GTiff", "height": 256, "width": 320, "count": 1, "dtype": "float32",
               "crs": "EPSG:32633", "transform": from_origin(400000, 5800000, 10, 10)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image, 1)
    return path, model.save(bundle, tmp / "impulse.safetensors"), image


def _pipeline_classes(path: Path, bundle: Path, out: Path, halo: int | None, core: int = 64) -> np.ndarray:
    b = model.load(bundle)
    halo_ = b.halo if halo is None else halo
    opts = jobs.PredictOptions(tile=core + 2 * halo_, halo=halo, device="cpu", batch_size=8)
    job = planning.plan(path, model=bundle, out_dir=out, options=opts)
    assert (job.plan.size, job.plan.halo) == (core, halo_)
    rasters.write_rasters(job, predict.local_results(job))
    with rasterio.open(out / "classes.tif") as ds:
        return ds.read(1)


def _tile_oracle(b: model.Bundle, image: np.ndarray, halo: int, core: int = 64) -> np.ndarray:
    """Each core lit where the whole-image pass over only its read window's impulses lights it."""
    out = np.zeros(image.shape, np.uint8)
    rows, cols = image.shape
    for r0 in range(0, rows, core):
        for c0 in range(0, cols, core):
            seen = np.zeros_like(image)
            window = np.s_[max(r0 - halo, 0) : r0 + core + halo, max(c0 - halo, 0) : c0 + core + halo]
            seen[window] = image[window]
            out[r0 : r0 + core, c0 : c0 + core] = lit(b, seen)[r0 : r0 + core, c0 : c0 + core]
    return out


@pytest.mark.parametrize("halo", [None, 48, 40, 24])
def test_tiled_classes_match_the_impulse_oracle(
    impulse_scene: tuple[Path, Path, np.ndarray], tmp_path: Path, halo: int | None
) -> None:
    """Default halo (56 ≥ receptive field 51): the whole-image result. 48: still exact, since an
    aligned tile's pixels nearest its core edge sit on pooling phases that reach at most 46 px
    (see test_aligned_reach_is_below_the_receptive_field). 40 and 24: seams exactly where an
    impulse lies inside the receptive field but outside the read window."""
    path, bundle_path, image = impulse_scene
    b = model.load(bundle_path)
    whole = lit(b, image).astype(np.uint8)
    assert 0.2 < whole.mean() < 0.9
    got = _pipeline_classes(path, bundle_path, tmp_path, halo)
    np.testing.assert_array_equal(got, _tile_oracle(b, image, b.halo if halo is None else halo))
    if halo is None or halo >= 48:
        np.testing.assert_array_equal(got, whole)
    else:
        seams = got != whole
        assert seams.sum() > 20  # the impulses at 41..51 px from core edges are out of reach
        rows, cols = np.nonzero(seams)
        # only pixels within (aligned reach 46 - halo) of an interior core edge can differ
        depth = 46 - halo
        near = lambda v: np.minimum(v % 64, 63 - v % 64) < depth  # noqa: E731
        assert (near(rows) | near(cols)).all()


def test_aligned_reach_is_below_the_receptive_field() -> None:
    """Why halo 48 is exact for the depth-3 U-Net although its receptive field is 51: on the
    pooling lattice, a pixel ``e`` px inside a core edge that reaches ``r`` px needs ``r - e``."""
    spec = ModelSpec(in_channels=1, n_classes=2, depth=3, width=2, norm="none")
    reach, radius = _reach(spec)
    s = spec.stride
    need = 0
    for phi in range(s):  # output pixel phase; the impulse at offset d has phase (phi + d) % s
        down = max(d for d in range(2 * radius) if reach[(phi + d) % s][0] <= -d <= reach[(phi + d) % s][1])
        up = max(d for d in range(2 * radius) if reach[(phi - d) % s][0] <= d <= reach[(phi - d) % s][1])
        need = max(need, down - (s - 1 - phi), up - phi)
    assert (radius, need) == (51, 46)


def test_a_halo_below_the_receptive_field_is_warned_about(
    impulse_scene: tuple[Path, Path, np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, bundle, _ = impulse_scene
    with caplog.at_level("WARNING", logger="geounet.planning"):
        planning.plan(path, model=bundle, out_dir=tmp_path, options=jobs.PredictOptions(tile=192, halo=48))
    [record] = [r for r in caplog.records if "receptive-field" in r.getMessage()]
    message = record.getMessage()
    assert "halo=48 is below the model's receptive-field radius 51" in message
    assert "--merge blend or --halo 56" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="geounet.planning"):
        planning.plan(path, model=bundle, out_dir=tmp_path, options=jobs.PredictOptions())
    assert not [r for r in caplog.records if "receptive-field" in r.getMessage()]


# --------------------------------------------------------------------------- plan details


@settings(max_examples=100, deadline=None)
@given(plans())
def test_each_tile_knows_its_lattice_place_and_its_padding_per_side(
    case: tuple[tuple[int, int], int, int, int],
) -> None:
    """Row/col/index agree with the core's position; padding is what lies outside, side by side."""
    shape, tile, halo, align = case
    plan = grid(shape, tile=tile, halo=halo, align=align)
    assert (plan.size, plan.halo, plan.align, plan.shape) == (plan.size, halo, align, shape)
    for t in plan:
        assert t.index == t.row * plan.n_cols + t.col
        assert (t.core.row, t.core.col) == (t.row * plan.size, t.col * plan.size)
        assert t.core.clip(*shape) == t.core, "a core lies inside the grid (numpy slicing would hide it)"
        r0, c0 = t.read.row, t.read.col
        r1, c1 = r0 + t.read.height, c0 + t.read.width
        expected = (max(0, -r0), max(0, r1 - shape[0]), max(0, -c0), max(0, c1 - shape[1]))
        p = t.padding
        assert (p.top, p.bottom, p.left, p.right) == expected
        assert p.any == any(expected)


def test_padding_any_is_true_for_a_single_side() -> None:
    from geounet.tiling import Padding

    assert not Padding(0, 0, 0, 0).any
    for side in range(4):
        sides = [0, 0, 0, 0]
        sides[side] = 3
        assert Padding(*sides).any is True


def test_tile_indices_outside_the_plan_raise() -> None:
    plan = grid((100, 70), tile=64, halo=16)
    assert len(plan) == 12 and len(list(plan)) == 12
    assert plan[0].index == 0 and plan[11].index == 11
    for bad in (-1, 12, 100):
        with pytest.raises(IndexError, match=rf"tile index {bad} out of range 0\.\.11"):
            plan[bad]


def test_core_size_is_the_tile_less_two_halos_and_shrinks_to_small_grids() -> None:
    assert grid((1000, 1000), tile=384, halo=64, align=16).size == 256
    assert grid((1000, 1000), tile=384, halo=64, align=16, shrink=False).size == 256
    # a grid smaller than one core: the core shrinks to the grid's longer side, rounded up to align
    small = grid((40, 30), tile=512, halo=16, align=16)
    assert (small.size, small.read_size, len(small)) == (48, 80, 1)
    assert grid((40, 30), tile=512, halo=16, align=16, shrink=False).size == 480
    assert grid((40, 48), tile=512, halo=16, align=16).size == 48
    odd = grid((5, 7), tile=9, halo=3)  # align defaults to 1: any tile and halo
    assert (odd.size, odd.read_size, odd.align, len(odd)) == (3, 9, 1, 6)
    line = grid((1, 5), tile=8, halo=0)  # a one-row grid is a grid
    assert (line.size, len(line), line[0].core.shape) == (5, 1, (1, 5))
    plan = grid((np.int64(40), np.int64(30)), tile=64, halo=0)  # type: ignore[arg-type]  # numpy ints on purpose
    assert plan.shape == (40, 30) and all(type(v) is int for v in plan.shape)


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (-5, 3)])
def test_an_empty_grid_is_refused(shape: tuple[int, int]) -> None:
    with pytest.raises(ConfigError) as err:
        grid(shape, tile=64, halo=0)
    assert str(err.value) == f"grid shape={shape} must be positive in both axes; check the input raster"


def test_tile_halo_problem_boundaries_and_suggestions() -> None:
    from geounet.tiling import tile_halo_problem

    names = ("model.tile", "model.halo")
    assert tile_halo_problem(272, 128, align=16) is None  # the smallest tile with a core
    assert tile_halo_problem(64, 0) is None  # no halo, align 1
    assert tile_halo_problem(3, 1) is None
    assert tile_halo_problem(2, 1) == (
        "tile=2 must be > 2*halo=2 (the core would be empty); "
        "raise --tile / predict.tile to at least 3 or lower --halo / predict.halo"
    )
    assert tile_halo_problem(100, 64, align=16, names=names) == (
        "tile=100 must be > 2*halo=128 (the core would be empty); "
        "raise model.tile to at least 144 or lower model.halo"
    )
    assert tile_halo_problem(64, 0, align=0) == (
        "align=0 must be >= 1; pass the model's down-sampling factor (2**depth)"
    )
    assert tile_halo_problem(64, -1, names=names) == (
        "halo=-1 must be >= 0; set model.halo to the model's receptive-field radius or more"
    )
    # a value below one alignment step: the only suggestion is the step itself
    assert tile_halo_problem(64, 8, align=16, names=names) == (
        "halo=8 must be a multiple of the model's down-sampling factor 16; set model.halo to 16 or 16"
    )
    assert tile_halo_problem(70, 16, align=16, names=names) == (
        "tile=70 must be a multiple of the model's down-sampling factor 16; set model.tile to 64 or 80"
    )
    assert tile_halo_problem(72, 20, align=8, names=names) == (
        "halo=20 must be a multiple of the model's down-sampling factor 8; set model.halo to 16 or 24"
    )
