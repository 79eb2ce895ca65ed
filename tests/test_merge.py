"""Merging tile predictions: crop is exact, blend is a normalized weighted average."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geounet import merge
from geounet.errors import ConfigError
from geounet.tiling import grid


def _field(shape: tuple[int, int], k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((k, *shape)).astype(np.float32)
    return x / x.sum(0, keepdims=True)


def _blend_all(probs_full: np.ndarray, plan, window: str, order: list[int]) -> np.ndarray:
    k = probs_full.shape[0]
    rows, cols = plan.shape
    padded = np.pad(probs_full, ((0, 0), (plan.read_size, plan.read_size), (plan.read_size, plan.read_size)))
    blender = merge.Blender(plan, n_classes=k, window=window)
    out = np.full((k, rows, cols), np.nan, np.float32)
    tiles = list(plan)
    for i in order:
        t = tiles[i]
        r0, c0 = t.read.row + plan.read_size, t.read.col + plan.read_size
        p = padded[:, r0 : r0 + plan.read_size, c0 : c0 + plan.read_size]
        blender.add(t, p, np.ones(p.shape[1:], bool))
        for block in blender.ready():
            assert np.isnan(out[(slice(None), *block.window.to_slices())]).all(), "block emitted twice"
            out[(slice(None), *block.window.to_slices())] = block.probs
    return out


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(5, 120),
    cols=st.integers(5, 120),
    halo=st.integers(0, 12),
    core=st.integers(4, 40),
    window=st.sampled_from(["cosine", "gaussian"]),
    seed=st.integers(0, 10),
)
def test_blend_of_a_consistent_field_is_the_field(rows, cols, halo, core, window, seed) -> None:
    """When all tiles agree (they cut the same field), the blend reproduces it: no seams."""
    plan = grid((rows, cols), tile=core + 2 * halo, halo=halo)
    field = _field((rows, cols), 3, seed)
    order = list(np.random.default_rng(seed).permutation(len(plan)))
    out = _blend_all(field, plan, window, order)
    assert not np.isnan(out).any(), "every pixel emitted"
    np.testing.assert_allclose(out, field, atol=1e-5)


def test_blend_weights_favor_a_tiles_own_core() -> None:
    w = merge.cosine_weight(96, 16)  # core 64, halo 16
    assert w[48, 48] == 1.0
    assert w[0, 48] < 0.01
    # the right neighbour's read window starts one core (64 px) later: ramps sum to one
    np.testing.assert_allclose(w[48, 64:96] + w[48, 0:32], 1.0, atol=1e-3)


def test_crop_and_decide_write_nodata_where_input_was_invalid() -> None:
    plan = grid((10, 10), tile=8, halo=2)
    t = plan[0]
    probs = np.zeros((3, 8, 8), np.float32)
    probs[2] = 0.9
    probs[0] = 0.1
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    cls, conf = merge.decide(merge.crop(probs, t), valid=valid, class_ids=np.array([0, 5, 8]))
    assert cls.shape == (4, 4)
    assert cls[0, 0] == 255 and conf[0, 0] == 255
    assert (cls[valid] == 8).all() and (conf[valid] == 90).all()


def test_unknown_blend_window_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="use one of cosine, gaussian"):
        merge.weight_fn("hamming")


# ------------------------------------------------------------------ blend against hand-computed oracles


def _cosine_ramp(size: int, halo: int) -> np.ndarray:
    """By hand: sin² rises over the first 2*halo px (pixel centres), falls over the last 2*halo."""
    i = np.arange(size) + 0.5
    n = 2 * halo
    ramp = np.ones(size)
    if halo:
        ramp = np.minimum(ramp, np.sin(np.pi * np.minimum(i, n) / (2 * n)) ** 2)
        ramp = np.minimum(ramp, np.sin(np.pi * np.minimum(size - i, n) / (2 * n)) ** 2)
    return ramp


def _gaussian_profile(size: int) -> np.ndarray:
    sigma = size / 8
    return np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)


@pytest.mark.parametrize(("size", "halo"), [(96, 16), (40, 8), (17, 3), (64, 0)])
def test_cosine_weight_is_the_hand_computed_hann_ramp(size: int, halo: int) -> None:
    expected = np.maximum(np.outer(_cosine_ramp(size, halo), _cosine_ramp(size, halo)), 1e-3)
    np.testing.assert_allclose(merge.cosine_weight(size, halo), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("size", [96, 41, 8])
def test_gaussian_weight_is_the_hand_computed_bell(size: int) -> None:
    g = _gaussian_profile(size)
    expected = np.maximum(np.outer(g, g) / g.max() ** 2, 1e-3)
    w = merge.gaussian_weight(size, 4)
    np.testing.assert_allclose(w, expected, rtol=1e-6, atol=1e-7)
    centre = w[size // 2]
    assert centre.argmax() in ((size - 1) // 2, size // 2) and w[0, 0] == pytest.approx(1e-3)
    assert (np.diff(centre[: (size + 1) // 2]) >= 0).all()  # rises to the centre


@settings(max_examples=40, deadline=None)
@given(halo=st.integers(1, 12), extra=st.integers(0, 20), n=st.integers(2, 5))
def test_cosine_weights_of_overlapping_tiles_sum_to_one(halo: int, extra: int, n: int) -> None:
    """Over every overlap of a plan whose cores are at least 2*halo, the weights sum to 1."""
    core = 2 * halo + extra
    plan = grid((n * core, n * core), tile=core + 2 * halo, halo=halo)
    w = merge.cosine_weight(plan.read_size, halo).astype(np.float64)
    total = np.zeros((n * core + 2 * halo, n * core + 2 * halo))
    for t in plan:
        r0, c0 = t.read.row + halo, t.read.col + halo
        total[r0 : r0 + plan.read_size, c0 : c0 + plan.read_size] += w
    inner = total[2 * halo : -2 * halo, 2 * halo : -2 * halo]  # where the neighbours on all sides exist
    np.testing.assert_allclose(inner, 1.0, atol=2.5e-3)  # the 1e-3 floor in the corners of a ramp


def _brute_force_blend(plan, tile_probs: dict[int, np.ndarray], weight: np.ndarray) -> np.ndarray:
    """Whole-grid sum of weight * probs over every read window, clipped to the grid, / sum of weights."""
    k = next(iter(tile_probs.values())).shape[0]
    num = np.zeros((k, *plan.shape))
    den = np.zeros(plan.shape)
    for t in plan:
        win = t.read.clip(*plan.shape)
        src = np.s_[
            win.row - t.read.row : win.row_stop - t.read.row, win.col - t.read.col : win.col_stop - t.read.col
        ]
        num[:, win.row : win.row_stop, win.col : win.col_stop] += (
            weight[src] * tile_probs[t.index][(slice(None), *src)]
        )
        den[win.row : win.row_stop, win.col : win.col_stop] += weight[src]
    return num / den


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(5, 90),
    cols=st.integers(5, 90),
    halo=st.integers(1, 10),
    core=st.integers(4, 30),
    window=st.sampled_from(["cosine", "gaussian"]),
    seed=st.integers(0, 100),
)
def test_blend_is_the_weighted_average_of_disagreeing_tiles(rows, cols, halo, core, window, seed) -> None:
    """Every tile predicts its own random field (tiles disagree): the blend must weigh them as the
    hand-computed window says, so equal weights or an inverted bell give a different answer."""
    plan = grid((rows, cols), tile=core + 2 * halo, halo=halo)
    rng = np.random.default_rng(seed)
    tile_probs = {t.index: _field((plan.read_size, plan.read_size), 3, seed * 1000 + t.index) for t in plan}
    if window == "cosine":
        ramp = _cosine_ramp(plan.read_size, halo)
        weight = np.maximum(np.outer(ramp, ramp), 1e-3)
    else:
        g = _gaussian_profile(plan.read_size)
        weight = np.maximum(np.outer(g, g) / g.max() ** 2, 1e-3)
    expected = _brute_force_blend(plan, tile_probs, weight)
    blender = merge.Blender(plan, n_classes=3, window=window)
    out = np.full((3, rows, cols), np.nan, np.float32)
    for i in rng.permutation(len(plan)):
        t = plan[int(i)]
        blender.add(t, tile_probs[t.index], np.ones((plan.read_size, plan.read_size), bool))
        for block in blender.ready():
            out[(slice(None), *block.window.to_slices())] = block.probs
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, expected, atol=2e-5)


def test_decide_dtypes_default_ids_and_valid_mask() -> None:
    probs = np.array([[[0.2, 0.7]], [[0.8, 0.3]]], np.float32)  # (2 classes, 1, 2)
    cls, conf = merge.decide(probs, valid=np.array([[True, True]]))
    assert cls.dtype == np.uint8 and conf.dtype == np.uint8
    assert cls.tolist() == [[1, 0]] and conf.tolist() == [[80, 70]]
    cls, conf = merge.decide(probs, valid=np.array([[True, False]]), class_ids=np.array([4, 9]))
    assert cls.tolist() == [[9, 255]] and conf.tolist() == [[80, 255]]


def test_blend_streams_rows_as_soon_as_their_neighbours_are_in_and_skips_stay_nodata() -> None:
    """Row-major arrival: tile row r is emitted right after tile row r + reach completes; skipped
    tiles' cores come out invalid, added ones valid; nothing stays buffered at the end."""
    plan = grid((50, 45), tile=20, halo=4)  # cores of 12: 5 tile rows, 4 tile cols; reach 1
    skipped = {5, 6}
    blender = merge.Blender(plan, n_classes=2, window="cosine")
    emitted: dict[int, int] = {}
    valid = np.zeros(plan.shape, bool)
    seen = np.zeros(plan.shape, bool)
    for t in plan:
        if t.index in skipped:
            blender.skip(t)
        else:
            chip_valid = np.ones((20, 20), bool)
            chip_valid[4 + t.index % 12, 4:16] = False  # one invalid core row per tile
            blender.add(t, _field((20, 20), 2, t.index), chip_valid)
        for block in blender.ready():
            emitted[block.window.row // plan.size] = t.index
            assert block.probs.dtype == np.float32 and block.valid.shape == block.window.shape
            valid[block.window.to_slices()] = block.valid
            seen[block.window.to_slices()] = True
        assert len(blender._strips) <= 3  # memory: the rows a halo reaches, not the raster
    last_of_row = {r: (r + 1) * plan.n_cols - 1 for r in range(plan.n_rows)}
    assert emitted == {r: last_of_row[min(r + 1, plan.n_rows - 1)] for r in range(plan.n_rows)}
    assert seen.all() and not blender._strips
    expected = np.ones(plan.shape, bool)
    for t in plan:
        rows, cols = t.core.to_slices()
        if t.index in skipped:
            expected[rows, cols] = False
        elif t.core.row + t.index % 12 < plan.shape[0] and t.index % 12 < t.core.height:
            expected[t.core.row + t.index % 12, cols] = False
    np.testing.assert_array_equal(valid, expected)


def test_weights_are_float32_and_a_callable_window_is_used_as_is() -> None:
    assert merge.cosine_weight(12, 2).dtype == np.float32 and merge.gaussian_weight(12, 2).dtype == np.float32

    def flat(size: int, halo: int) -> np.ndarray:
        return np.full((size, size), 0.5, np.float32)

    assert merge.weight_fn(flat) is flat and merge.weight_fn("gaussian") is merge.gaussian_weight


def test_unknown_merge_names_the_value_and_the_choices() -> None:
    assert merge.check_merge("blend") == "blend"
    with pytest.raises(ConfigError) as err:
        merge.check_merge("average")
    assert str(err.value) == "merge='average' is unknown; use one of crop, blend"


def test_blend_does_not_depend_on_the_order_tiles_arrive_in() -> None:
    """Ray returns tiles in any order: the blended mosaic is the same bits for every order."""
    import random

    from geounet import tiling
    from geounet.merge import Blender

    plan = tiling.grid((50, 61), tile=24, halo=6)
    rng = np.random.default_rng(0)
    probs = {t.index: rng.random((3, *t.read.shape)).astype(np.float32) for t in plan}

    def mosaic(order: list[int]) -> np.ndarray:
        b = Blender(plan, n_classes=3)
        out = []
        for i in order:
            t = plan[i]
            b.add(t, probs[i], np.ones(t.read.shape, bool))
            out += [blk.probs for blk in b.ready()]
        return np.concatenate(out, axis=1)

    first = mosaic(list(range(len(plan))))
    for seed in range(5):
        order = list(range(len(plan)))
        random.Random(seed).shuffle(order)
        np.testing.assert_array_equal(mosaic(order), first)
