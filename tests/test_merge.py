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
