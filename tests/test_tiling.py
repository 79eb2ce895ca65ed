"""Tile plans: cores partition the grid, read windows are aligned and uniform."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geounet.errors import ConfigError
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
