"""Evaluation of a bundle on a recipe's validation split, with classic baselines side by side.

Baselines use the same split and the same metrics:

- ``random-forest``: a pixel-wise scikit-learn RandomForest on the band values (land cover),
  trained on a class-balanced sample of the training side's labelled pixels;
- ``threshold``: dark thin structures (cracks) by Otsu's global threshold on the grey image,
  and by an adaptive (local mean - k·std) threshold whose window and ``k`` are tuned on the
  training images for the best tolerant F1.

:func:`report` writes ``report.md``, ``metrics.json``, ``confusion-*.png`` and ``curves.png``
(training curves when a history is given), each to a temp name renamed when complete.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from geounet import atomic, infer, merge, metrics, model, read
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


# --------------------------------------------------------------------------- report


def _plot_confusion(res: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(res["confusion"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    names = res["classes"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(names), 1 + 0.6 * len(names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("labelled")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save_fig(fig, path)


def _save_fig(fig: Any, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue(), what="report plot")


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.plot(steps, [h["loss"] for h in history], marker=".")
    a1.set_xlabel("step")
    a1.set_ylabel("training loss (CE + Dice)")
    a2.plot(steps, [h["val_miou"] or 0 for h in history], marker=".", label="val mIoU")
    tol = sorted({k for h in history for k in (h.get("val_tolerant_f1") or {})})
    for name in tol:
        a2.plot(
            steps,
            [(h["val_tolerant_f1"] or {}).get(name) or 0 for h in history],
            marker=".",
            label=f"val tolerant F1 {name}",
        )
    a2.set_xlabel("step")
    a2.legend(fontsize=8)
    fig.tight_layout()
    _save_fig(fig, path)


def _slug(method: str) -> str:
    """A file-name part for a method: ``"threshold adaptive(window=25,k=3.0)"`` → ``threshold-adaptive``.

    Example:
        >>> _slug("threshold adaptive(window=25,k=3.0)"), _slug("RandomForest")
        ('threshold-adaptive', 'randomforest')
    """
    return "-".join(method.split("(")[0].lower().split())


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _markdown(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    names = next(iter(results.values()))["classes"]
    lines = [
        f"# Evaluation: {meta['model']}",
        "",
        f"Data: {meta['recipe']} — validation split ({meta['split']}).",
        "",
    ]
    lines += [
        "| method | mIoU | pixel acc. | " + " | ".join(f"IoU {n}" for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for method, r in results.items():
        lines.append(
            f"| {method} | {_fmt(r['miou'])} | {_fmt(r['pixel_accuracy'])} | "
            + " | ".join(_fmt(r["iou"][n]) for n in names)
            + " |"
        )
    tol = next(iter(results.values()))["tolerant"]
    if tol:
        lines += [
            "",
            "Tolerant scores (a predicted pixel within the tolerance of a labelled one counts, "
            "and vice versa for recall):",
            "",
            "| method | class | tolerance px | precision | recall | F1 |",
            "|---|---|---|---|---|---|",
        ]
        for method, r in results.items():
            for cname, t in r["tolerant"].items():
                lines.append(
                    f"| {method} | {cname} | {t['tolerance_px']:g} | {_fmt(t['precision'])} | "
                    f"{_fmt(t['recall'])} | {_fmt(t['f1'])} |"
                )
    for method, r in results.items():
        lines += [
            "",
            f"## {method}",
            "",
            "| class | IoU | Dice/F1 | precision | recall |",
            "|---|---|---|---|---|",
        ]
        for n in names:
            lines.append(
                f"| {n} | {_fmt(r['iou'][n])} | {_fmt(r['dice'][n])} | {_fmt(r['precision'][n])} | "
                f"{_fmt(r['recall'][n])} |"
            )
        lines += [
            "",
            "Confusion matrix (rows labelled, columns predicted, pixels):",
            "",
            "| | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for n, row in zip(names, r["confusion"], strict=True):
            lines.append(f"| {n} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in meta["plots"]), ""]
    if meta.get("train_seconds") is not None:
        lines.append(f"Training time: {meta['train_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def _plots(results: dict[str, dict[str, Any]], history: list[dict[str, Any]] | None, out: Path) -> list[str]:
    """One confusion PNG per method (the first is ``confusion.png``) and the training curves."""
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for i, (method, r) in enumerate(results.items()):
        p = out / ("confusion.png" if i == 0 else f"confusion-{_slug(method)}.png")
        _plot_confusion(r, f"{method}: confusion (row-normalised)", p)
        plots.append(p.name)
    if history:
        _plot_curves(history, out / "curves.png")
        plots.append("curves.png")
    return plots


def report(
    bundle_path: Path,
    cfg: TrainConfig,
    *,
    out: Path,
    history: list[dict[str, Any]] | None = None,
    train_seconds: float | None = None,
    baselines: bool = True,
    data: Data | None = None,
) -> dict[str, Any]:
    """Evaluate ``bundle_path`` (and the recipe's baseline) on the validation split; write the report."""
    t0 = time.perf_counter()
    data = data or load_data(cfg)
    bundle = model.load(bundle_path)
    names = [c.name for c in data.classes]
    tol = tuple(names.index(n) for n in cfg.evaluate.tolerant_classes if n in names)
    kw: dict[str, Any] = {"classes": data.classes, "tolerant": tol, "tolerance": cfg.evaluate.tolerance}
    results: dict[str, dict[str, Any]] = {
        "U-Net": evaluate_items(bundle_predictor(bundle, data=data), data.val, **kw)
    }
    timings = {"U-Net": time.perf_counter() - t0}
    if baselines and cfg.evaluate.baseline == "random-forest":
        t1 = time.perf_counter()
        results["RandomForest"] = evaluate_items(random_forest(data, seed=cfg.seed), data.val, **kw)
        timings["RandomForest"] = time.perf_counter() - t1
    elif baselines and cfg.evaluate.baseline == "threshold":
        dark = names.index(cfg.evaluate.dark_class) if cfg.evaluate.dark_class in names else 1
        for name, pred in threshold_baselines(data, dark=dark, tolerance=cfg.evaluate.tolerance).items():
            results[f"threshold {name}"] = evaluate_items(pred, data.val, **kw)
    try:
        plots = _plots(results, history, out)
        split = data.description.get("split", f"{len(data.val)} validation images")
        meta = {
            "model": str(bundle_path),
            "recipe": cfg.name,
            "split": split,
            "plots": plots,
            "train_seconds": train_seconds,
        }
        doc = {
            "model": str(bundle_path),
            "recipe": cfg.name,
            "data": data.description,
            "results": results,
            "history": history or [],
            "train_seconds": train_seconds,
            "eval_seconds": timings,
        }
        atomic.write_text(out / "metrics.json", json.dumps(doc, indent=1), what="report")
        atomic.write_text(out / "report.md", _markdown(results, meta), what="report")
    except OSError as exc:
        raise WriteError(f"cannot write the report to {out}: {exc}; check the folder") from exc
    return doc
