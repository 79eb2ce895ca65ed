"""The memory-budget planner: exact (halo kept), aligned, even cores, and within the budget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geounet import budget
from geounet.errors import ConfigError
from geounet.model import ModelSpec, recommended_halo
from geounet.tiling import grid

SPEC = ModelSpec(in_channels=4, n_classes=8, depth=4, width=16)
HALO = recommended_halo(SPEC)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 12000),
    cols=st.integers(1, 12000),
    memory_mb=st.integers(96, 64 << 10),
    device=st.sampled_from(["cpu", "cuda"]),
)
def test_plan_is_exact_aligned_and_fits(rows: int, cols: int, memory_mb: int, device: str) -> None:
    memory = memory_mb << 20
    try:
        p = budget.choose((rows, cols), spec=SPEC, halo=HALO, memory=memory, device=device)
    except ConfigError:
        assert budget.tile_bytes(SPEC, 2 * HALO + 16, streamed=device == "cpu", amp=True) > memory
        return
    assert p.halo == HALO and p.tile == p.core + 2 * HALO
    assert p.core % SPEC.stride == 0 and p.tile % SPEC.stride == 0
    assert p.memory <= memory
    plan = grid((rows, cols), tile=p.tile, halo=p.halo, align=SPEC.stride)
    assert len(plan) == p.n_tiles
    assert p.overhead == pytest.approx(len(plan) * plan.read_size**2 / (rows * cols))
    # Even cores: no tile row or column is mostly empty (a sliver costing a whole tile).
    n = math.ceil(max(rows, cols) / p.core)
    assert n * p.core - max(rows, cols) < n * SPEC.stride


def test_acceptance_overheads_for_6000() -> None:
    cpu = budget.choose((6000, 6000), spec=SPEC, halo=HALO, memory=512 << 20, device="cpu")
    gpu = budget.choose((6000, 6000), spec=ModelSpec(in_channels=12, n_classes=8, width=32),
                        halo=HALO, memory=48 << 30, device="cuda")  # fmt: skip
    assert cpu.streamed and cpu.overhead <= 1.35
    assert not gpu.streamed and gpu.overhead <= 1.15


def test_more_memory_never_costs_more_pixels() -> None:
    last = math.inf
    for mb in (128, 256, 512, 1024, 4096):
        p = budget.choose((6000, 6000), spec=SPEC, halo=HALO, memory=mb << 20, device="cpu")
        assert p.overhead <= last
        last = p.overhead


@pytest.mark.parametrize(
    ("text", "value"), [("4GB", 4 << 30), ("512MB", 512 << 20), ("1.5G", 3 << 29), ("auto", None)]
)
def test_parse_memory(text: str, value: int | None) -> None:
    assert budget.parse_memory(text) == value


@pytest.mark.parametrize("text", ["lots", "-1GB", "4TB", "10MB"])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--memory"):
        budget.parse_memory(text)


def test_too_small_budget_says_how_to_fix() -> None:
    with pytest.raises(ConfigError, match="raise --memory"):
        budget.choose((6000, 6000), spec=SPEC, halo=HALO, memory=1 << 20, device="cpu")
