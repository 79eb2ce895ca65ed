"""Augmentations: masks follow the image geometry, invented pixels are ignored, seeds reproduce."""

from __future__ import annotations

import torch

from geounet.augment import Augment, augment, geometric, rescale
from geounet.model import NODATA_CLASS


def test_geometric_moves_mask_with_image() -> None:
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    m = x[:, 0].to(torch.uint8)
    y, n = geometric(x, m, Augment(), torch.Generator().manual_seed(3))
    assert torch.equal(y[:, 0].to(torch.uint8), n)
    assert sorted(y.flatten().tolist()) == sorted(x.flatten().tolist())


def test_rescale_pads_mask_with_ignore_and_keeps_shape() -> None:
    x = torch.rand(4, 2, 16, 16)
    m = torch.ones(4, 16, 16, dtype=torch.uint8)
    y, n = rescale(x, m, Augment(scale=0.4), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and n.shape == m.shape
    assert set(n.unique().tolist()) <= {1, NODATA_CLASS}


def test_seeded_augment_is_reproducible_and_identity_when_off() -> None:
    x, m = torch.rand(3, 2, 8, 8), torch.randint(0, 3, (3, 8, 8), dtype=torch.uint8)
    a = augment(x, m, Augment(), generator=torch.Generator().manual_seed(7))
    b = augment(x, m, Augment(), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    off = Augment(flip=False, rot90=False, brightness=0, contrast=0, gamma=0, scale=0)
    y, n = augment(x, m, off, generator=torch.Generator())
    assert torch.equal(y, x) and torch.equal(n, m)


def test_spectral_gain_is_one_factor_per_chip_and_band_within_range() -> None:
    x, m = torch.rand(4, 3, 8, 8) + 0.5, torch.zeros(4, 8, 8, dtype=torch.uint8)
    only = Augment(flip=False, rot90=False, brightness=0, contrast=0, gamma=0, scale=0, spectral=0.2)
    y, n = augment(x, m, only, generator=torch.Generator().manual_seed(1))
    gain = y / x
    per = gain.flatten(2)
    torch.testing.assert_close(per.min(dim=2).values, per.max(dim=2).values)  # constant over the chip
    assert ((per >= 0.8 - 1e-6) & (per <= 1.2 + 1e-6)).all()
    assert per[:, :, 0].std(dim=1).min() > 0  # the bands of a chip get different gains
    assert torch.equal(n, m)
