"""Streamed inference equals the ordinary forward pass, for every U-Net variant and strip height.

The oracle is the network's own whole-tile ``forward`` (torch's kernels over the whole
tile), which shares no code with the row streaming in :mod:`geounet.stream`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geounet import model
from geounet.errors import InputError
from geounet.infer import Predictor
from geounet.model import networks
from geounet.stream import StreamingUNet


def _net(arch: str, upsample: str, norm: str, *, seed: int = 0, depth: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = networks.build(
        model.ModelSpec(
            in_channels=3,
            n_classes=4,
            depth=depth,
            width=4,
            arch=arch,  # type: ignore[arg-type]
            upsample=upsample,
            norm=norm,
        )
    )  # type: ignore[arg-type]
    for m in net.modules():  # non-trivial BatchNorm statistics, so folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return networks.fuse_batchnorm(net.eval())


@pytest.mark.parametrize(
    ("arch", "upsample", "norm"),
    list(
        itertools.product(["unet", "resunet", "attention-unet"], ["transpose", "bilinear"], ["batch", "none"])
    ),
)
def test_streamed_equals_forward(arch: str, upsample: str, norm: str) -> None:
    net = _net(arch, upsample, norm)
    x = torch.randn(2, 3, 96, 40)
    with torch.inference_mode():
        whole = net(x)
        for rows in (3, 16, 200):
            strips = list(StreamingUNet(net).strips(x, rows=rows))
            out = torch.cat(strips, dim=2)
            assert out.shape == whole.shape
            assert torch.allclose(out, whole, atol=2e-6, rtol=1e-5), (rows, (out - whole).abs().max())


@settings(max_examples=10, deadline=None)
@given(
    h=st.integers(1, 8),
    w=st.integers(1, 4),
    rows=st.integers(1, 70),
    arch=st.sampled_from(["unet", "resunet", "attention-unet"]),
    upsample=st.sampled_from(["transpose", "bilinear"]),
)
def test_streamed_any_shape_and_strip(h: int, w: int, rows: int, arch: str, upsample: str) -> None:
    net = _net(arch, upsample, "batch", depth=2)
    x = torch.randn(1, 3, 4 * h, 4 * w)
    with torch.inference_mode():
        out = torch.cat(list(StreamingUNet(net).strips(x, rows=rows)), dim=2)
        assert torch.allclose(out, net(x), atol=2e-6, rtol=1e-5)


def test_streamed_sees_far_context() -> None:
    """An impulse at the receptive-field distance still reaches the output row (no state lost)."""
    net = _net("unet", "transpose", "none", depth=2)
    rf = model.receptive_field(net.spec)
    x = torch.zeros(1, 3, 64, 16)
    y = x.clone()
    y[0, :, 10 + rf, 8] = 50.0
    with torch.inference_mode():
        a = torch.cat(list(StreamingUNet(net).strips(x, rows=4)), dim=2)
        b = torch.cat(list(StreamingUNet(net).strips(y, rows=4)), dim=2)
        assert torch.allclose(b, net(y), atol=1e-5)
    assert (a - b)[0, :, 10].abs().max() > 0  # the pixel rf rows above the impulse changes


def test_streamed_rejects_bad_input() -> None:
    net = _net("unet", "transpose", "batch")
    with pytest.raises(InputError, match="multiple of the model's stride 8"):
        list(StreamingUNet(net).strips(torch.zeros(1, 3, 20, 16), rows=8))
    with pytest.raises(InputError, match="rows=0"):
        list(StreamingUNet(net).strips(torch.zeros(1, 3, 16, 16), rows=0))
    with pytest.raises(InputError, match=r"only geounet\.model\.networks\.UNet"):
        StreamingUNet(torch.nn.Conv2d(3, 3, 3))


def test_predictor_rows_equal_predict() -> None:
    bundle = networks.init_bundle(
        bands=["a", "b", "c"],
        classes=[model.ClassInfo(i, f"c{i}", "#000000") for i in range(4)],
        spec=model.ModelSpec(in_channels=3, n_classes=4, depth=3, width=4),
    )
    p = Predictor(bundle, device="cpu")
    x = np.random.default_rng(0).normal(size=(3, 64, 48)).astype(np.float32)
    whole = p.predict(x[None])[0]
    strips = list(p.predict_rows(x, rows=8))
    assert [r for r, _ in strips] == list(np.cumsum([0] + [s.shape[1] for _, s in strips[:-1]]))
    np.testing.assert_allclose(np.concatenate([s for _, s in strips], axis=1), whole, atol=1e-5)


def test_raw_strips_normalized_on_entry_equal_the_normalized_chip() -> None:
    """predict_rows(raw, normalization=...) normalizes strip by strip: bit-identical to normalizing first."""
    norm = model.Normalization(mean=(0.3, 0.1, 0.5), std=(0.2, 0.05, 0.4), scale=1 / 10000)
    bundle = networks.init_bundle(
        bands=["a", "b", "c"],
        classes=[model.ClassInfo(i, f"c{i}", "#000000") for i in range(4)],
        spec=model.ModelSpec(in_channels=3, n_classes=4, depth=3, width=4),
        normalization=norm,
    )
    p = Predictor(bundle, device="cpu")
    raw = np.random.default_rng(1).integers(0, 10000, size=(3, 64, 48)).astype(np.float32)
    first = np.concatenate([s for _, s in p.predict_rows(model.normalize(raw, norm), rows=16)], axis=1)
    entry = np.concatenate([s for _, s in p.predict_rows(raw, rows=16, normalization=norm)], axis=1)
    np.testing.assert_array_equal(entry, first)
    with pytest.raises(AssertionError):  # the raw chip without its normalization is another input
        np.testing.assert_array_equal(
            np.concatenate([s for _, s in p.predict_rows(raw, rows=16)], axis=1), first
        )

