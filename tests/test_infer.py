"""Predictor: probabilities, batching, TTA, device handling, OOM fallback, CUDA vs CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from geounet import infer, model
from geounet.errors import ConfigError, ExecutionError, InputError
from geounet.model import ClassInfo, ModelSpec, networks

CLASSES = (
    ClassInfo(0, "background", "#000000"),
    ClassInfo(1, "road", "#ffff00"),
    ClassInfo(7, "water", "#0000ff"),
)
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def bundle() -> model.Bundle:
    spec = ModelSpec(in_channels=3, n_classes=3, arch="resunet", depth=2, width=4)
    b = networks.init_bundle(bands=["red", "green", "blue"], classes=CLASSES, spec=spec, seed=7)
    # Non-trivial BatchNorm statistics, so eval-mode BN is a real affine map on every device.
    rng = np.random.default_rng(0)
    for key, w in b.weights.items():
        if key.endswith("running_mean"):
            w[...] = rng.uniform(-0.2, 0.2, w.shape)
        elif key.endswith("running_var"):
            w[...] = rng.uniform(0.5, 2.0, w.shape)
    return b


def chips(n: int = 5, size: tuple[int, int] = (16, 24), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, *size)).astype(np.float32)


def reference(bundle: model.Bundle, x: np.ndarray) -> np.ndarray:
    """Softmax of a plain float64 CPU forward pass."""
    net = networks.module_from_bundle(bundle).double()
    with torch.inference_mode():
        out: np.ndarray = torch.softmax(net(torch.from_numpy(x).double()), 1).float().numpy()
    return out


def test_predict_matches_forward(bundle: model.Bundle) -> None:
    x = chips()
    p = infer.Predictor(bundle, device="cpu").predict(x)
    assert p.shape == (5, 3, 16, 24) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(p, reference(bundle, x), atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_batching_does_not_change_results(bundle: model.Bundle, batch_size: int) -> None:
    x = chips(n=7)
    p = infer.Predictor(bundle, device="cpu", batch_size=batch_size).predict(x)
    np.testing.assert_allclose(p, reference(bundle, x), atol=1e-5)


def test_empty_batch(bundle: model.Bundle) -> None:
    p = infer.Predictor(bundle, device="cpu").predict(np.zeros((0, 3, 8, 8), np.float32))
    assert p.shape == (0, 3, 8, 8)


def test_tta_is_the_mean_of_the_dihedral_views(bundle: model.Bundle) -> None:
    x = chips(n=2, size=(16, 24))
    p = infer.Predictor(bundle, device="cpu", tta=True).predict(x)
    views = []
    for k in range(4):
        for flip in (False, True):
            v = np.rot90(x[..., ::-1] if flip else x, k, axes=(-2, -1))
            q = np.rot90(reference(bundle, np.ascontiguousarray(v)), -k, axes=(-2, -1))
            views.append(q[..., ::-1] if flip else q)
    np.testing.assert_allclose(p, np.mean(views, axis=0), atol=1e-5)
    assert not np.allclose(p, reference(bundle, x), atol=1e-3)


def test_tta_is_equivariant(bundle: model.Bundle) -> None:
    """Averaging over the dihedral group makes the prediction commute with flips and rotations."""
    x = chips(n=1, size=(16, 16), seed=3)
    pred = infer.Predictor(bundle, device="cpu", tta=True)
    flipped = pred.predict(np.ascontiguousarray(x[..., ::-1]))
    rotated = pred.predict(np.ascontiguousarray(np.rot90(x, 1, axes=(-2, -1))))
    p = pred.predict(x)
    np.testing.assert_allclose(flipped, p[..., ::-1], atol=1e-5)
    np.testing.assert_allclose(rotated, np.rot90(p, 1, axes=(-2, -1)), atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((3, 16, 16), "must be \\(batch, 3, height, width\\)"),
        ((1, 4, 16, 16), "must be \\(batch, 3, height, width\\)"),
        ((1, 3, 18, 16), "multiples of the model's stride 4"),
    ],
)
def test_bad_input_shape(bundle: model.Bundle, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(InputError, match=message):
        infer.Predictor(bundle, device="cpu").predict(np.zeros(shape, np.float32))


def test_device_resolution() -> None:
    assert infer.resolve_device("cpu").type == "cpu"
    assert infer.resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    with pytest.raises(ConfigError, match="device='tpu' is unknown; use auto, cpu, cuda or cuda:N"):
        infer.resolve_device("tpu")


@pytest.mark.skipif(CUDA, reason="checks the error raised where CUDA is missing")
def test_cuda_without_cuda_is_a_config_error(bundle: model.Bundle) -> None:
    with pytest.raises(ConfigError, match=r"CUDA is not available.*use --device cpu"):
        infer.Predictor(bundle, device="cuda")


def test_bad_batch_size(bundle: model.Bundle) -> None:
    with pytest.raises(ConfigError, match="batch_size=0 must be a positive integer"):
        infer.Predictor(bundle, device="cpu", batch_size=0)


def test_out_of_memory_halves_the_batch(bundle: model.Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    pred = infer.Predictor(bundle, device="cpu", batch_size=8)
    real_run = pred._run
    sizes: list[int] = []

    def run(chunk: np.ndarray) -> np.ndarray:
        sizes.append(len(chunk))
        if len(chunk) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_run(chunk)

    monkeypatch.setattr(pred, "_run", run)
    x = chips(n=9)
    p = pred.predict(x)
    assert sizes == [8, 4, 2, 2, 2, 2, 1] and pred.batch_size == 2
    np.testing.assert_allclose(p, reference(bundle, x), atol=1e-5)


def test_out_of_memory_at_batch_one(bundle: model.Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    pred = infer.Predictor(bundle, device="cpu", batch_size=4)

    def run(chunk: np.ndarray) -> np.ndarray:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(pred, "_run", run)
    with pytest.raises(ExecutionError, match=r"one 16x24 chip does not fit.*use a smaller --tile"):
        pred.predict(chips(n=3))


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="CUDA not available")]
        ),
    ],
)
@pytest.mark.parametrize("amp", [True, False])
def test_device_matches_cpu_reference(bundle: model.Bundle, device: str, amp: bool) -> None:
    x = chips(n=9, size=(32, 48))
    pred = infer.Predictor(bundle, device=device, batch_size=4, amp=amp, tta=True)
    assert pred.device.type == device
    p = pred.predict(x)
    ref = infer.Predictor(bundle, device="cpu", tta=True).predict(x)
    # Mixed precision (bf16/fp16) moves probabilities by ~1e-2 at most on this small net.
    atol = 3e-2 if (device == "cuda" and amp) else 1e-3 if device == "cuda" else 1e-6
    np.testing.assert_allclose(p, ref, atol=atol)
    assert (p.argmax(1) == ref.argmax(1)).mean() > 0.97
    if device == "cuda":
        assert next(pred.module.parameters()).is_cuda
        assert pred.amp == amp


def tiled_vs_whole(core: int, halo: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(tiled, whole) probabilities of a 75x90 raster with cores of ``core`` px, and the tile count."""
    from geounet import tiling

    spec = ModelSpec(in_channels=3, n_classes=3, depth=3, width=4, upsample="bilinear")
    b = networks.init_bundle(
        bands=["r", "g", "b"], classes=CLASSES, spec=spec, seed=11, tile=core + 2 * halo, halo=halo
    )
    # a fresh head gives near-uniform probabilities that would hide seams below the tolerance
    b = dataclasses.replace(b, weights={**b.weights, "head.weight": b.weights["head.weight"] * 100})
    pred = infer.Predictor(b, device="cpu", batch_size=4)
    shape = (75, 90)  # not a multiple of the tile cores
    plan = tiling.grid(shape, tile=b.tile, halo=halo, align=b.stride, shrink=False)
    # The raster with `halo` px of context on every side (and more bottom/right for the last tiles).
    rows = -(-(shape[0] + 2 * halo + plan.size) // b.stride) * b.stride
    cols = -(-(shape[1] + 2 * halo + plan.size) // b.stride) * b.stride
    padded = np.random.default_rng(5).normal(size=(1, 3, rows, cols)).astype(np.float32)
    whole = pred.predict(padded)[0, :, halo : halo + shape[0], halo : halo + shape[1]]
    reads = np.stack(
        [
            padded[
                0, :, t.read.row + halo : t.read.row_stop + halo, t.read.col + halo : t.read.col_stop + halo
            ]
            for t in plan
        ]
    )
    tiled = np.full_like(whole, np.nan)
    for t, p in zip(plan, pred.predict(reads), strict=True):
        cr = t.core_in_read
        tiled[:, t.core.row : t.core.row_stop, t.core.col : t.core.col_stop] = p[
            :, cr.row : cr.row_stop, cr.col : cr.col_stop
        ]
    return tiled, whole, len(plan)


@pytest.mark.parametrize("core", [40, 56])
def test_tiled_prediction_equals_whole_image(core: int) -> None:
    """Cores of stride-aligned tiles with halo >= receptive field reproduce the whole-image pass."""
    spec = ModelSpec(in_channels=3, n_classes=3, depth=3, width=4, upsample="bilinear")
    halo = model.recommended_halo(spec)
    assert halo >= model.receptive_field(spec) == 58
    tiled, whole, n = tiled_vs_whole(core, halo)
    assert n > 2
    assert whole.std(axis=(1, 2)).min() > 0.05 and len(np.unique(whole.argmax(0))) >= 2  # a real output
    np.testing.assert_allclose(tiled, whole, atol=1e-4)
    assert (tiled.argmax(0) == whole.argmax(0)).all()


def test_no_halo_shows_seams() -> None:
    """Without context the tile borders see zero padding: the comparison above can fail."""
    tiled, whole, _ = tiled_vs_whole(40, 0)
    assert np.abs(tiled - whole).max() > 1e-3


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_stride_aligned_tiles_equal_the_whole_image_bit_for_bit(upsample: str) -> None:
    """Channels-last CPU convolutions give a pixel the same bits wherever it sits in the input, so a
    stride-aligned crop holding its receptive field reproduces the whole-image pass exactly (not
    merely to 1e-6): geounet's interior pixels can equal the whole-image oracle with 0 differences."""
    spec = ModelSpec(in_channels=3, n_classes=3, depth=2, width=8, upsample=upsample)
    b = networks.init_bundle(bands=["red", "green", "blue"], classes=CLASSES, spec=spec, seed=3)
    pred = infer.Predictor(b, device="cpu")
    halo = model.recommended_halo(spec)
    x = np.random.default_rng(1).normal(size=(1, 3, 160, 192)).astype(np.float32)
    whole = pred.predict(x)[0]
    for row, col in ((0, 0), (16, 32), (48, 64)):
        crop = pred.predict(np.ascontiguousarray(x[:, :, row : row + 112, col : col + 128]))[0]
        inner = crop[:, halo : 112 - halo, halo : 128 - halo]
        np.testing.assert_array_equal(
            inner, whole[:, row + halo : row + 112 - halo, col + halo : col + 128 - halo]
        )
