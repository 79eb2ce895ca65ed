"""A model with real output for end-to-end comparisons: every class occurs, no decision is a near-tie.

A freshly initialised U-Net predicts one class on (almost) every pixel with a handful of
confidence values, so "output A equals output B" holds for nearly any bug. :func:`calibrated_bundle`
keeps the seeded network's features but replaces its 1x1 head by an *ordinal* head fitted to
the real image it will run on:

- ``s`` = the features' first principal direction (a random, spatially coherent function of
  all input bands, so band order and pixel position change it);
- the class thresholds ``t_1 < ... < t_{K-1}`` are the quantiles of ``s`` over the image, so
  each class wins about ``1/K`` of the pixels;
- ``logit_k = beta * (k * s - (t_1 + ... + t_k))``: consecutive logits differ by
  ``beta * (s - t_k)``, hence the winner is the class whose interval holds ``s`` and the margin
  of a pixel is ``beta`` times its distance to the nearest threshold.

``beta`` puts the median margin at :data:`MEDIAN_MARGIN` logits: confidences spread over the
whole percent range, and float noise of ~1e-5 logits (tiling, executors, BLAS threads) flips
far fewer than :data:`MAX_TIE_FRACTION` of the pixels. :func:`assert_real_output` checks both
on the calibration image and on any class raster a test produces, so the fixture cannot
silently degrade into a constant map.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch

from geounet import model
from geounet.model import ClassInfo, ModelSpec, networks

#: median top-1 minus top-2 logit margin after calibration
MEDIAN_MARGIN = 3.0
#: a pixel whose margin is below this many logits is a near-tie
TIE = 1e-3
MAX_TIE_FRACTION = 0.005
#: minimum normalized entropy (0..1) of the class histogram
MIN_ENTROPY = 0.8


def normalized_entropy(classes: np.ndarray, n_classes: int) -> float:
    """Shannon entropy of the class histogram over valid (< 255) pixels, divided by log(K)."""
    valid = classes[classes != model.NODATA_CLASS].ravel()
    p = np.bincount(valid, minlength=n_classes) / max(valid.size, 1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(n_classes))


def assert_real_output(classes: np.ndarray, n_classes: int, *, min_entropy: float = MIN_ENTROPY) -> None:
    """Every class occurs in ``classes`` and the histogram is close to uniform (a real map)."""
    valid = classes[classes != model.NODATA_CLASS]
    found = np.unique(valid)
    assert found.tolist() == list(range(n_classes)), f"classes {found.tolist()} of {n_classes} occur"
    h = normalized_entropy(classes, n_classes)
    assert h >= min_entropy, f"class histogram entropy {h:.3f} < {min_entropy}: a degenerate map"


def _features(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Inputs of the 1x1 head, (C, H, W), for one normalized (B=1) image."""
    seen: list[torch.Tensor] = []
    hook = module.get_submodule("head").register_forward_hook(
        lambda _m, inp, _out: seen.append(inp[0].detach())
    )
    try:
        with torch.inference_mode():
            module(torch.from_numpy(x))
    finally:
        hook.remove()
    return seen[0][0].double().numpy()


def _crop_to_stride(image: np.ndarray, stride: int) -> np.ndarray:
    _, h, w = image.shape
    return image[:, : h - h % stride, : w - w % stride]


def calibrated_bundle(
    image: np.ndarray,
    *,
    bands: Sequence[str],
    classes: Sequence[ClassInfo],
    spec: ModelSpec,
    seed: int = 0,
    tile: int | None = None,
    halo: int | None = None,
    name: str = "calibrated-test-model",
) -> model.Bundle:
    """A seeded bundle whose head is calibrated on ``image`` (bands, rows, cols; raw values, model order).

    Normalization is the image's own per-band mean/std, so the seeded features vary over it.
    Asserts the result with :func:`assert_real_output` and the near-tie fraction.
    """
    img = _crop_to_stride(np.asarray(image, dtype=np.float64), spec.stride)
    valid = np.isfinite(img).all(0)
    mean = tuple(float(v) for v in np.nanmean(img[:, valid], axis=1))
    std = tuple(max(float(v), 1e-6) for v in np.nanstd(img[:, valid], axis=1))
    norm = model.Normalization(mean=mean, std=std)
    base = networks.init_bundle(
        bands=bands,
        classes=classes,
        spec=spec,
        normalization=norm,
        tile=tile,
        halo=halo,
        seed=seed,
        name=name,
    )
    module = networks.module_from_bundle(base)
    x = model.normalize(np.nan_to_num(img)[None].astype(np.float32), norm)
    feats = _features(module, x)  # (C, H, W)
    f = feats.reshape(feats.shape[0], -1)[:, valid.ravel()]
    centre = f.mean(axis=1)
    _, _, vt = np.linalg.svd((f - centre[:, None]).T, full_matrices=False)
    direction = vt[0]
    s = direction @ (f - centre[:, None])
    k = len(classes)
    thresholds = np.quantile(s, np.arange(1, k) / k)
    dist = np.abs(s[None, :] - thresholds[:, None]).min(axis=0)
    beta = MEDIAN_MARGIN / float(np.median(dist))
    # logit_k = beta * (k * (direction . (f - centre)) - sum_{j<=k} t_j)
    ks = np.arange(k, dtype=np.float64)
    weight = beta * ks[:, None] * direction[None, :]
    bias = -beta * (ks * float(direction @ centre) + np.concatenate([[0.0], np.cumsum(thresholds)]))
    weights = dict(base.weights)
    weights["head.weight"] = weight.reshape(k, -1, 1, 1).astype(np.float32)
    weights["head.bias"] = bias.astype(np.float32)
    bundle = dataclasses.replace(
        base, weights=weights, provenance=dict(base.provenance, source="calibrated-test-fixture")
    )
    _check(bundle, x, valid)
    return bundle


def _check(bundle: model.Bundle, x: np.ndarray, valid: np.ndarray) -> None:
    """The calibrated model on its own image: all classes, high entropy, almost no near-ties."""
    with torch.inference_mode():
        logits = networks.module_from_bundle(bundle)(torch.from_numpy(x))[0].double().numpy()
    top2 = np.sort(logits, axis=0)[-2:]
    margin = (top2[1] - top2[0])[valid]
    classes = np.where(valid, logits.argmax(0), model.NODATA_CLASS).astype(np.uint8)
    assert_real_output(classes, len(bundle.classes))
    ties = float((margin < TIE).mean())
    assert ties <= MAX_TIE_FRACTION, f"{ties:.2%} of the pixels are near-ties (margin < {TIE})"
    assert np.median(margin) > 1.0, f"median margin {np.median(margin):.3g} logits: a flat head"


def read_bands(path: Path, indexes: Sequence[int] | None = None) -> np.ndarray:
    """(bands, rows, cols) float64 of a raster file, nodata as NaN."""
    with rasterio.open(path) as ds:
        arr = ds.read(list(indexes) if indexes else None, masked=True).astype(np.float64)
    return np.ma.filled(arr, np.nan)


def steep_bundle(
    path: Path,
    *,
    bands: Sequence[str],
    classes: Sequence[ClassInfo],
    spec: ModelSpec,
    mean: float,
    std: float,
    seed: int,
    gain: float,
) -> Path:
    """A seeded bundle with its 1x1 head ``gain`` times steeper, saved to ``path`` (float32).

    A freshly initialised head predicts one class almost everywhere, with near-uniform
    probabilities (spread ~1e-4): tiled-against-whole comparisons would hold for nearly any bug
    and seams would hide below a 1e-4 tolerance. The steeper head spreads classes and confidences.
    ``mean``/``std`` normalize every band alike.
    """
    n = len(bands)
    bundle = networks.init_bundle(
        bands=bands,
        classes=classes,
        spec=spec,
        normalization=model.Normalization(mean=(mean,) * n, std=(std,) * n),
        seed=seed,
    )
    weights = dict(bundle.weights, **{"head.weight": bundle.weights["head.weight"] * gain})
    return model.save(dataclasses.replace(bundle, weights=weights), path)


def save_calibrated(path: Path, image: np.ndarray, **kwargs: object) -> Path:
    """:func:`calibrated_bundle` saved to ``path`` (float32 safetensors)."""
    return model.save(calibrated_bundle(image, **kwargs), path)  # type: ignore[arg-type]


def impulse_bundle(spec: ModelSpec, *, seed: int = 0, threshold: float = 1e-3) -> model.Bundle:
    """A 1-band, 2-class network whose class-1 support is exactly the reach of the input's non-zeros.

    Every weight is made non-negative and every bias zero, so on a non-negative input all
    activations are non-negative: ReLU passes them, and the support (non-zero set) of every
    layer is the union of its inputs' supports dilated by the layer's footprint. A zero
    input gives zero logits everywhere (no tile-border artefact from zero padding), and an
    impulse lights up (class 1, logit above ``threshold``) exactly the output pixels whose
    receptive field holds it. ``spec`` must have ``in_channels=1, n_classes=2, norm="none"``.
    """
    assert spec.in_channels == 1 and spec.n_classes == 2 and spec.norm == "none", spec
    base = networks.init_bundle(
        bands=("x",),
        classes=(ClassInfo(0, "dark", "#000000"), ClassInfo(1, "lit", "#ffffff")),
        spec=spec,
        seed=seed,
    )
    weights = {k: np.abs(v) if k.endswith("weight") else np.zeros_like(v) for k, v in base.weights.items()}
    head = np.zeros_like(weights["head.weight"])
    head[1] = 1.0
    weights["head.weight"] = head
    weights["head.bias"] = np.array([0.0, -threshold], dtype=np.float32)
    return dataclasses.replace(
        base,
        weights=weights,
        provenance=dict(base.provenance, source="impulse-test-fixture"),
        name="impulse-test-model",
    )


def lit(bundle: model.Bundle, image: np.ndarray) -> np.ndarray:
    """Boolean (rows, cols): where the whole-image forward pass of an impulse bundle says class 1."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)[None, None])
    with torch.inference_mode():
        logits = networks.module_from_bundle(bundle)(x)[0].double().numpy()
    return logits[1] > logits[0]
