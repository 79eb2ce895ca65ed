"""Honest measurement splits: a contiguous held-out region apart from everything, spatial CV folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from geounet import datasets, splits
from geounet.config import load_train_config
from geounet.errors import ConfigError
from geounet.model import NODATA_CLASS

REPO = Path(__file__).resolve().parents[1]
LANDCOVER = REPO / "configs" / "train-landcover-brandenburg.yaml"
#: The eastern third of the Brandenburg scene is reserved for acceptance (issue 14).
RESERVED_X = 340240.0


def _labels(seed: int, shape: tuple[int, int] = (40, 56)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 4, shape).astype(np.uint8)
    m[rng.random(shape) < 0.4] = NODATA_CLASS
    return m


@settings(max_examples=40, deadline=None)
@given(x0=st.integers(0, 50), dx=st.integers(1, 56), y0=st.integers(0, 35), dy=st.integers(1, 40))
def test_region_is_the_rectangle_of_pixel_centres(x0: int, dx: int, y0: int, dy: int) -> None:
    transform = (10.0, 0.0, 1000.0, 0.0, -10.0, 5000.0)  # 40 rows x 56 cols, 10 m
    bbox = (1000 + 10 * x0, 5000 - 10 * (y0 + dy), 1000 + 10 * (x0 + dx), 5000 - 10 * y0)
    region = splits.region_mask((40, 56), transform=transform, bbox=bbox)
    expect = np.zeros((40, 56), bool)
    expect[y0 : y0 + dy, x0 : x0 + dx] = True
    assert (region == expect).all()
    if region.any():
        assert ndimage.label(region)[1] == 1  # contiguous


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), c0=st.integers(0, 30))
def test_hold_out_sides_are_disjoint_cover_and_hold_enough(seed: int, c0: int) -> None:
    m = _labels(seed)
    region = np.zeros(m.shape, bool)
    region[:, c0 : c0 + 20] = True
    rest, held = splits.hold_out(m, region)
    lr, lh = rest != NODATA_CLASS, held != NODATA_CLASS
    assert not (lr & lh).any()
    assert ((lr | lh) == (m != NODATA_CLASS)).all()
    assert not lh[~region].any() and not lr[region].any()
    assert lh.sum() >= splits.MIN_HELD_OUT_SHARE * (m != NODATA_CLASS).sum()
    assert (np.where(lh, held, rest) == m).all()


def test_a_region_too_small_or_holding_everything_is_refused() -> None:
    m = _labels(1)
    small = np.zeros(m.shape, bool)
    small[:, :5] = True
    with pytest.raises(ConfigError, match=r"data\.split\.bbox .* at least 20%"):
        splits.hold_out(m, small)
    with pytest.raises(ConfigError, match="must leave some outside"):
        splits.hold_out(m, np.ones(m.shape, bool))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 5), block=st.sampled_from([4, 8, 16]))
def test_folds_are_whole_blocks_disjoint_and_cover(seed: int, k: int, block: int) -> None:
    m = _labels(seed)
    folds = splits.spatial_folds(m, block=block, k=k, seed=seed)
    labelled = m != NODATA_CLASS
    assert ((folds >= 0) == labelled).all()
    assert set(np.unique(folds[labelled])) == set(range(k))
    ids = splits.block_ids(m.shape, block=block)
    for b in np.unique(ids[labelled]):
        assert np.unique(folds[(ids == b) & labelled]).size == 1  # a block lies in one fold
    tests = [splits.fold(m, folds, i)[1] != NODATA_CLASS for i in range(k)]
    assert (np.sum(tests, axis=0) == labelled).all()  # every labelled pixel is tested exactly once
    for i in range(k):
        train, test = splits.fold(m, folds, i)
        assert not ((train != NODATA_CLASS) & (test != NODATA_CLASS)).any()


def test_more_folds_than_blocks_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data\.split\.cv_folds=5"):
        splits.spatial_folds(_labels(2, (8, 8)), block=8, k=5)


def test_the_landcover_recipe_holds_out_a_western_region_apart_from_everything(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    cfg = load_train_config(LANDCOVER)
    assert cfg.data.kind == "scene" and cfg.data.split is not None
    xmin, _, xmax, _ = cfg.data.split.bbox
    assert xmax <= RESERVED_X  # never on the reserved eastern third
    d = datasets.load_data(cfg)
    lab = [it.mask != NODATA_CLASS for it in (d.train[0], d.val[0], d.test[0])]
    train, val, held = lab
    assert not (train & held).any() and not (val & held).any() and not (train & val).any()
    share = held.sum() / (train | val | held).sum()
    assert share >= 0.2 and d.description["held_out"]["share_of_labelled"] == pytest.approx(share, abs=1e-4)
    cols = np.flatnonzero(held.any(axis=0))
    x0 = d.description["grid"]["transform"][2]
    assert x0 + 10 * cols.min() >= xmin and x0 + 10 * (cols.max() + 1) <= xmax
    region = splits.region_mask(
        held.shape, transform=d.description["grid"]["transform"], bbox=cfg.data.split.bbox
    )
    assert ndimage.label(region)[1] == 1 and not held[~region].any()
    # all 8 classes are scored on the held-out region
    assert len(np.unique(d.test[0].mask[held])) == 8
    # CV folds: outside the region only, disjoint tests covering every non-held-out label once
    tested = np.zeros(held.shape, int)
    for tr, te in d.cv:
        lt, le = tr.mask != NODATA_CLASS, te.mask != NODATA_CLASS
        assert not (lt & le).any() and not ((lt | le) & held).any()
        tested += le
    assert (tested == (train | val)).all()
