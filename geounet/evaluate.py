"""Evaluation of a bundle on a recipe's validation split, with classic baselines side by side.

Baselines use the same split and the same metrics:

- ``random-forest``: a pixel-wise scikit-learn RandomForest on the band values (land cover),
  trained on a class-balanced sample of the training side's labelled pixels;
- ``threshold``: dark thin structures (cracks) by Otsu's global threshold on the grey image,
  and by an adaptive (local mean - k·std) threshold whose window and ``k`` are tuned on the
  training images for the best tolerant F1.

With a held-out region in the recipe (``data.split``), :func:`report` scores every method on
it (baselines fit on all labels outside it: :func:`held_out_data`) and runs the baselines'
spatial k-fold CV (:func:`cross_validate`, the same folds for every method), beside the
validation split. :func:`report` writes ``report.md``, ``metrics.json``, ``confusion-*.png``
and ``curves.png`` (rendered by :mod:`geounet.reporting`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from geounet import atomic, infer, merge, metrics, model, read, reporting
from geounet.config import TrainConfig, train_config
from geounet.datasets import Data, Labelled, load_data
from geounet.errors import ConfigError, WriteError
from geounet.model import NODATA_CLASS
from geounet.tiling import grid as plan_tiles

log = logging.getLogger(__name__)

Predictor = Callable[[Labelled], np.ndarray]

#: Core side of the evaluation tiles (the production tile plan with the bundle's halo around it).
EVAL_CORE = 512


# --------------------------------------------------------------------------- predictors


def predict_image(
    predictor: infer.Predictor, image: np.ndarray, *, core: int = EVAL_CORE, need: np.ndarray | None = None
) -> np.ndarray:
    """Class ids ``(H, W)`` of a raw image ``(C, H, W)``, predicted as ``geounet predict`` does.

    The production path, stage by stage: the tile plan of :func:`geounet.tiling.grid` with
    the bundle's halo, read windows mirror-padded past the image edge
    (:func:`geounet.read.array_chip`), the bundle's normalization, the inference
    :class:`~geounet.infer.Predictor`, and the core crop and class decision of
    :mod:`geounet.merge`. Tiles whose core holds no True pixel of ``need`` (when given)
    are skipped and left :data:`~geounet.model.NODATA_CLASS`: the evaluation scores
    labelled pixels only.
    """
    bundle = predictor.bundle
    halo = bundle.halo
    plan = plan_tiles(image.shape[1:], tile=core + 2 * halo, halo=halo, align=bundle.stride)
    class_ids = np.asarray(bundle.class_ids, np.uint8)
    out = np.full(plan.shape, NODATA_CLASS, np.uint8)
    for tile in plan:
        core_px = tile.core.to_slices()
        if need is not None and not need[core_px].any():
            continue
        chip = read.array_chip(image, tile)
        probs = predictor.predict(model.normalize(chip.data[None], bundle.normalization))[0]
        out[core_px], _ = merge.decide(merge.crop(probs, tile), valid=chip.core_valid, class_ids=class_ids)
    return out


def bundle_predictor(bundle: model.Bundle, *, data: Data) -> Predictor:
    """Predict class ids of an item with the bundle (bands must match the data's), one tile at a time."""
    if tuple(bundle.bands) != tuple(data.bands):
        raise ConfigError(
            f"model bands {list(bundle.bands)} differ from the data's {list(data.bands)}; "
            "evaluate with the recipe the model was trained on"
        )
    predictor = infer.Predictor(bundle, device="auto", batch_size=1)

    def predict(it: Labelled) -> np.ndarray:
        return predict_image(predictor, it.image, need=it.mask != NODATA_CLASS)

    return predict


def evaluate_items(
    predict: Predictor,
    items: list[Labelled],
    *,
    classes: tuple[model.ClassInfo, ...],
    tolerant: tuple[int, ...] = (),
    tolerance: float = 2.0,
) -> dict[str, Any]:
    """Metrics of ``predict`` over labelled items (confusion, per-class scores, tolerant F1)."""
    acc = metrics.Accumulator(len(classes), tolerant_classes=tolerant, tolerance=tolerance)
    for it in items:
        acc.add(predict(it), it.mask)
    return acc.result([c.name for c in classes])


def random_forest(data: Data, *, seed: int = 0, per_class: int = 4000, trees: int = 100) -> Predictor:
    """A pixel-wise RandomForest on band values, fit on a class-balanced training sample."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    feats = [it.image.reshape(it.image.shape[0], -1) for it in data.train]
    for f, it in zip(feats, data.train, strict=True):
        m = it.mask.ravel()
        for c in np.unique(m[m != NODATA_CLASS]):
            idx = np.flatnonzero(m == c)
            take = rng.choice(idx, min(per_class // len(data.train) + 1, idx.size), replace=False)
            xs.append(f[:, take].T * data.scale)
            ys.append(np.full(take.size, c))
    rf = RandomForestClassifier(n_estimators=trees, min_samples_leaf=2, n_jobs=1, random_state=seed)
    rf.fit(np.concatenate(xs), np.concatenate(ys))

    def predict(it: Labelled) -> np.ndarray:
        out = np.zeros(it.mask.shape, dtype=np.uint8)
        sel = it.mask != NODATA_CLASS  # only labelled pixels are scored; skip the rest (speed)
        x = it.image.reshape(it.image.shape[0], -1)[:, sel.ravel()].T * data.scale
        if x.shape[0]:
            out[sel] = rf.predict(x).astype(np.uint8)
        return out

    return predict


def _grey(it: Labelled) -> np.ndarray:
    return np.asarray(it.image, dtype=np.float32).mean(axis=0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of a histogram.

    Example:
        >>> v = np.r_[np.full(50, 10.0), np.full(50, 200.0)]
        >>> 10 <= otsu_threshold(v) < 200
        True
    """
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = ((hist * centers).sum() - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centers[int(np.argmax(between))])


def _local_stats(grey: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    mean = ndimage.uniform_filter(grey, window)
    sq = ndimage.uniform_filter(grey * grey, window)
    return mean, np.sqrt(np.maximum(sq - mean * mean, 0))


def _adaptive(grey: np.ndarray, *, window: int, k: float) -> np.ndarray:
    mean, std = _local_stats(grey, window)
    return grey < mean - k * std


WINDOWS = (9, 15, 25, 41, 61, 91, 121)
KS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)


def threshold_baselines(data: Data, *, dark: int, tolerance: float) -> dict[str, Predictor]:
    """Otsu (global per image) and adaptive threshold (tuned on training images) for dark pixels.

    The adaptive threshold marks pixels darker than the local mean minus ``k`` local standard
    deviations; window and ``k`` are searched over ``WINDOWS`` x ``KS`` for the best tolerant F1.
    """

    def otsu(it: Labelled) -> np.ndarray:
        g = _grey(it)
        return np.where(g < otsu_threshold(g), dark, 0).astype(np.uint8)

    counts = {(w, k): metrics.TolerantCounts() for w in WINDOWS for k in KS}
    for it in data.train:
        grey, valid, true = _grey(it), it.mask != NODATA_CLASS, it.mask == dark
        for window in WINDOWS:
            mean, std = _local_stats(grey, window)
            for k in KS:
                counts[window, k] = counts[window, k] + metrics.tolerant_counts(
                    grey < mean - k * std, true, tolerance=tolerance, valid=valid
                )
    (window, k), best = max(counts.items(), key=lambda kv: np.nan_to_num(kv[1].f1, nan=-1.0))
    log.info("adaptive threshold tuned on train: window %d, k %.1f (tolerant F1 %.3f)", window, k, best.f1)
    if window in (WINDOWS[0], WINDOWS[-1]) or k in (KS[0], KS[-1]):
        log.warning("adaptive threshold tuned at the edge of the search: window %d, k %.1f", window, k)

    def adaptive(it: Labelled) -> np.ndarray:
        return np.where(_adaptive(_grey(it), window=window, k=k), dark, 0).astype(np.uint8)

    return {"otsu": otsu, f"adaptive(window={window},k={k})": adaptive}


def folder_config(
    bundle: model.Bundle,
    images: Path,
    masks: Path,
    *,
    mask_values: Sequence[int] | None = None,
    mask_channel: int = 0,
    tolerant: Sequence[str] = (),
    tolerance: float = 2.0,
    dark_class: str | None = None,
) -> TrainConfig:
    """An evaluation config for a folder of images and a folder of masks, classes from the bundle.

    ``mask_values[i]`` is the mask value of the bundle's class ``i`` (default: ``i``). The
    images and masks serve as both sides of the split, so only a baseline without training
    (the threshold, with ``dark_class``) is offered; a RandomForest needs a recipe.
    """
    names = [c.name for c in bundle.classes]
    values = list(mask_values) if mask_values is not None else list(range(len(names)))
    if len(values) != len(names):
        raise ConfigError(
            f"--mask-values {','.join(map(str, values))} gives {len(values)} values for the model's "
            f"{len(names)} classes {names}; give one mask value per class, in that order"
        )
    for n in [*tolerant, *([dark_class] if dark_class else [])]:
        if n not in names:
            raise ConfigError(f"class {n!r} is not one of the model's classes {names}; use one of those")
    folders = {"images": str(images), "masks": str(masks)}
    raw = {
        "name": images.resolve().name,
        "data": {
            "kind": "pairs",
            "train": folders,
            "val": folders,
            "bands": list(bundle.bands),
            "mask_channel": mask_channel,
            "scale": bundle.normalization.scale,
            "classes": [
                {"name": c.name, "color": c.color, "values": [v]}
                for c, v in zip(bundle.classes, values, strict=True)
            ],
        },
        "evaluate": {
            "tolerance": tolerance,
            "tolerant_classes": list(tolerant),
            "baseline": "threshold" if dark_class else "none",
            "dark_class": dark_class,
        },
    }
    return train_config(raw, source=f"evaluate {images} --masks {masks}")


def _baselines(cfg: TrainConfig, data: Data) -> dict[str, Predictor]:
    """The recipe's baselines (``evaluate.baseline``) fit on ``data.train``, keyed by reported name."""
    if cfg.evaluate.baseline == "random-forest":
        return {"RandomForest": random_forest(data, seed=cfg.seed)}
    if cfg.evaluate.baseline == "threshold":
        names = [c.name for c in data.classes]
        dark = names.index(cfg.evaluate.dark_class) if cfg.evaluate.dark_class in names else 1
        fit = threshold_baselines(data, dark=dark, tolerance=cfg.evaluate.tolerance)
        return {f"threshold {name}": pred for name, pred in fit.items()}
    return {}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sample std (ddof 1) of the mIoU over folds or seeds, and the mean IoU per class.

    Example:
        >>> r = [{"miou": 0.4, "iou": {"a": 0.4}}, {"miou": 0.6, "iou": {"a": None}}]
        >>> s = summarize(r); round(s["miou_mean"], 3), round(s["miou_std"], 3), s["iou_mean"]
        (0.5, 0.141, {'a': 0.4})
    """
    mious = np.array([np.nan if r["miou"] is None else r["miou"] for r in results], dtype=np.float64)
    names = list(results[0]["iou"])
    per = {n: [r["iou"][n] for r in results if r["iou"][n] is not None] for n in names}
    return {
        "n": len(results),
        "miou": [None if np.isnan(v) else float(v) for v in mious],
        "miou_mean": float(np.nanmean(mious)),
        "miou_std": float(np.nanstd(mious, ddof=1)) if len(results) > 1 else 0.0,
        "iou_mean": {n: (float(np.mean(v)) if v else None) for n, v in per.items()},
    }


def cross_validate(
    fit: Callable[[Data], dict[str, Predictor]], data: Data, **kw: Any
) -> dict[str, dict[str, Any]]:
    """Spatial k-fold CV: ``fit`` each fold's training side, score its test side, per method.

    ``fit`` returns predictors keyed by method; a tuned parameter in a name (``"adaptive(...)"``)
    is dropped so the folds of one method meet. ``kw`` go to :func:`evaluate_items`.
    """
    per: dict[str, list[dict[str, Any]]] = {}
    for train_side, test_side in data.cv:
        fold = replace(data, train=[train_side], val=[test_side], test=[], cv=())
        for name, predict in fit(fold).items():
            per.setdefault(name.split("(")[0], []).append(evaluate_items(predict, [test_side], **kw))
    return {name: summarize(results) for name, results in per.items()}


def held_out_data(data: Data) -> Data:
    """The held-out region as the scored side; everything outside it (train + validation) to fit on.

    The U-Net was fit on ``train`` and selected on ``val``; a baseline needs no selection, so it
    is fit on both: it sees every label the U-Net's training saw.
    """
    return replace(data, train=data.train + data.val, val=data.test, test=[], cv=())


def report(
    bundle_path: Path,
    cfg: TrainConfig,
    *,
    out: Path,
    history: list[dict[str, Any]] | None = None,
    train_seconds: float | None = None,
    baselines: bool = True,
    data: Data | None = None,
    unet_cv: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``bundle_path`` and the recipe's baselines; write ``report.md``, ``metrics.json``, plots.

    With a held-out region the primary ``results`` are on it (baselines fit outside it), next
    to the validation split and the baselines' spatial CV (``unet_cv``: the U-Net's, from
    :func:`geounet.crossval.unet`, when given). Without one, ``results`` are on the
    validation split.
    """
    t0 = time.perf_counter()
    data = data or load_data(cfg)
    bundle = model.load(bundle_path)
    names = [c.name for c in data.classes]
    tol = tuple(names.index(n) for n in cfg.evaluate.tolerant_classes if n in names)
    kw: dict[str, Any] = {"classes": data.classes, "tolerant": tol, "tolerance": cfg.evaluate.tolerance}
    unet = bundle_predictor(bundle, data=data)
    validation = {"U-Net": evaluate_items(unet, data.val, **kw)}
    if baselines:
        validation |= {k: evaluate_items(p, data.val, **kw) for k, p in _baselines(cfg, data).items()}
    timings = {"validation": time.perf_counter() - t0}
    results = validation
    cv: dict[str, dict[str, Any]] = {}
    if data.test:
        t1 = time.perf_counter()
        held = held_out_data(data)
        results = {"U-Net": evaluate_items(unet, held.val, **kw)}
        if baselines:
            results |= {k: evaluate_items(p, held.val, **kw) for k, p in _baselines(cfg, held).items()}
            cv = cross_validate(lambda d: _baselines(cfg, d), data, **kw)
        if unet_cv is not None:
            cv = {"U-Net": unet_cv, **cv}
        timings["held_out_and_cv"] = time.perf_counter() - t1
    doc = {
        "model": str(bundle_path),
        "recipe": cfg.name,
        "data": data.description,
        "scored_on": "held-out region" if data.test else "validation split",
        "results": results,
        "validation": validation,
        "cv": cv,
        "summary": _summary(results, validation, cv, held_out=bool(data.test)),
        "history": history or [],
        "train_seconds": train_seconds,
        "eval_seconds": timings,
    }
    _write(doc, out, history=history)
    return doc


def _summary(
    results: dict[str, Any], validation: dict[str, Any], cv: dict[str, Any], *, held_out: bool
) -> list[dict[str, Any]]:
    """One row per method: held-out, CV mean ± std and validation mIoU side by side."""
    rows = []
    for method in dict.fromkeys([*results, *cv]):
        c = cv.get(method.split("(")[0]) or cv.get(method)
        rows.append(
            {
                "method": method,
                "held_out_miou": results[method]["miou"] if held_out and method in results else None,
                "cv_miou_mean": c["miou_mean"] if c else None,
                "cv_miou_std": c["miou_std"] if c else None,
                "cv_folds": c["n"] if c else None,
                "val_miou": validation[method]["miou"] if method in validation else None,
            }
        )
    return rows


def _write(doc: dict[str, Any], out: Path, *, history: list[dict[str, Any]] | None) -> None:
    try:
        plots = reporting.plots(doc["results"], history, out)
        meta = {
            "model": doc["model"],
            "recipe": doc["recipe"],
            "split": doc["data"].get("split", f"{len(doc['validation'])} validation images"),
            "scored_on": doc["scored_on"],
            "held_out": doc["data"].get("held_out"),
            "plots": plots,
            "train_seconds": doc["train_seconds"],
        }
        atomic.write_text(out / "metrics.json", json.dumps(doc, indent=1), what="report")
        atomic.write_text(
            out / "report.md", reporting.markdown(doc["results"], meta, summary=doc["summary"]), what="report"
        )
    except OSError as exc:
        raise WriteError(f"cannot write the report to {out}: {exc}; check the folder") from exc
