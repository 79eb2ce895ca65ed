"""Segmentation metrics: confusion matrix, per-class scores, and pixel-tolerant F1 for thin structures.

Pure numpy/scipy, no I/O. Rows of a confusion matrix are the labelled (true) class, columns the
predicted class; pixels whose label is ``ignore_index`` (255 by default: unlabelled) never count.

Example:
    >>> import numpy as np
    >>> cm = confusion(np.array([0, 1, 1, 1]), np.array([0, 1, 0, 255]), n_classes=2)
    >>> cm.tolist()
    [[1, 1], [0, 1]]
    >>> s = scores(cm)
    >>> round(s.miou, 3), round(s.pixel_accuracy, 3)
    (0.5, 0.667)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from geounet.errors import InputError
from geounet.model import NODATA_CLASS


def confusion(
    pred: np.ndarray, target: np.ndarray, *, n_classes: int, ignore_index: int = NODATA_CLASS
) -> np.ndarray:
    """Confusion matrix ``(n_classes, n_classes)`` of int64 counts: ``cm[true, pred]``.

    Pixels labelled ``ignore_index`` are skipped; predictions outside ``0..n_classes-1`` on a
    labelled pixel are an error (they would silently vanish from the counts otherwise).
    """
    if pred.shape != target.shape:
        raise InputError(f"prediction shape {pred.shape} != label shape {target.shape}; pass matching arrays")
    keep = target != ignore_index
    t = target[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if t.size and (t.max() >= n_classes or t.min() < 0):
        raise InputError(
            f"label value {int(t.max())} outside 0..{n_classes - 1}; map labels to class ids first"
        )
    if p.size and (p.max() >= n_classes or p.min() < 0):
        raise InputError(f"predicted class {int(p.max())} outside 0..{n_classes - 1} on a labelled pixel")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True)
class Scores:
    """Per-class and overall scores derived from one confusion matrix.

    Per-class arrays hold NaN where a score is undefined (e.g. IoU of a class that is neither
    labelled nor predicted); ``miou`` is the mean over the classes whose IoU is defined.
    """

    iou: np.ndarray
    dice: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    pixel_accuracy: float
    miou: float
    confusion: np.ndarray = field(repr=False)

    def to_dict(self, names: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready dict; per-class values keyed by class name (NaN becomes None)."""
        k = len(self.iou)
        names = names or [str(i) for i in range(k)]

        def per(a: np.ndarray) -> dict[str, float | None]:
            return {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, a, strict=True)}

        return {
            "miou": None if np.isnan(self.miou) else float(self.miou),
            "pixel_accuracy": None if np.isnan(self.pixel_accuracy) else float(self.pixel_accuracy),
            "iou": per(self.iou),
            "dice": per(self.dice),
            "precision": per(self.precision),
            "recall": per(self.recall),
            "confusion": self.confusion.tolist(),
            "classes": names,
        }


def scores(cm: np.ndarray) -> Scores:
    """IoU, Dice (= F1), precision, recall per class, pixel accuracy and mIoU of a confusion matrix.

    Example:
        >>> s = scores(np.array([[3, 1], [0, 4]]))
        >>> s.iou.round(3).tolist(), s.dice.round(3).tolist()
        ([0.75, 0.8], [0.857, 0.889])
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    iou = _ratio(tp, tp + fp + fn)
    total = cm.sum()
    return Scores(
        iou=iou,
        dice=_ratio(2 * tp, 2 * tp + fp + fn),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
        miou=float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
        confusion=cm.astype(np.int64),
    )


@dataclass(frozen=True)
class TolerantCounts:
    """Counts behind a tolerant F1; they add up over images (sum, then compute the ratios).

    ``pred_hit`` of ``pred_total`` predicted pixels lie within the tolerance of a labelled one;
    ``true_hit`` of ``true_total`` labelled pixels lie within the tolerance of a predicted one.
    """

    pred_hit: int = 0
    pred_total: int = 0
    true_hit: int = 0
    true_total: int = 0

    def __add__(self, other: TolerantCounts) -> TolerantCounts:
        return TolerantCounts(
            self.pred_hit + other.pred_hit,
            self.pred_total + other.pred_total,
            self.true_hit + other.true_hit,
            self.true_total + other.true_total,
        )

    @property
    def precision(self) -> float:
        """Share of predicted pixels near a labelled pixel (NaN when nothing is predicted)."""
        return self.pred_hit / self.pred_total if self.pred_total else float("nan")

    @property
    def recall(self) -> float:
        """Share of labelled pixels near a predicted pixel (NaN when nothing is labelled)."""
        return self.true_hit / self.true_total if self.true_total else float("nan")

    @property
    def f1(self) -> float:
        """Harmonic mean of tolerant precision and recall (0 when either is 0, NaN if undefined)."""
        p, r = self.precision, self.recall
        if np.isnan(p) or np.isnan(r):
            return 0.0 if (self.pred_total or self.true_total) else float("nan")
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def tolerant_counts(
    pred: np.ndarray, true: np.ndarray, *, tolerance: float = 2.0, valid: np.ndarray | None = None
) -> TolerantCounts:
    """Tolerant matching of two boolean masks (thin structures such as cracks).

    A predicted pixel counts as correct when a labelled pixel lies within ``tolerance`` pixels
    (Euclidean distance between pixel centres), and a labelled pixel counts as found when a
    predicted pixel lies within ``tolerance``. Pixels outside ``valid`` are not counted.

    Example:
        >>> t = np.zeros((1, 8), bool); t[0, 2] = True
        >>> p = np.zeros((1, 8), bool); p[0, 4] = p[0, 7] = True
        >>> c = tolerant_counts(p, t, tolerance=2)
        >>> (c.pred_hit, c.pred_total, c.true_hit, c.true_total), round(c.f1, 3)
        ((1, 2, 1, 1), 0.667)
    """
    pred = np.asarray(pred, dtype=bool)
    true = np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise InputError(f"prediction shape {pred.shape} != label shape {true.shape}; pass matching arrays")
    if valid is not None:
        pred = pred & valid
        true = true & valid
    near_true = _within(true, tolerance)
    near_pred = _within(pred, tolerance)
    return TolerantCounts(
        pred_hit=int((pred & near_true).sum()),
        pred_total=int(pred.sum()),
        true_hit=int((true & near_pred).sum()),
        true_total=int(true.sum()),
    )


def _within(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels whose distance to the nearest True pixel of ``mask`` is <= tolerance.

    For small tolerances a dilation with the disk of that radius (same set, ~10x faster than
    a full Euclidean distance transform); the distance transform otherwise.
    """
    if not mask.any():
        return np.zeros_like(mask)
    if tolerance <= 8:
        return np.asarray(ndimage.binary_dilation(mask, structure=disk(tolerance)))
    return np.asarray(ndimage.distance_transform_edt(~mask) <= tolerance)


def disk(radius: float) -> np.ndarray:
    """Boolean footprint of the pixel offsets within Euclidean ``radius`` of the centre.

    Example:
        >>> disk(1).astype(int)
        array([[0, 1, 0],
               [1, 1, 1],
               [0, 1, 0]])
    """
    r = int(np.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(yy * yy + xx * xx <= radius * radius)


@dataclass
class Accumulator:
    """Streaming evaluation over many images: confusion matrix plus tolerant counts per chosen class.

    Mutable on purpose (it accumulates); :meth:`result` returns plain JSON-ready data.
    """

    n_classes: int
    tolerant_classes: tuple[int, ...] = ()
    tolerance: float = 2.0
    ignore_index: int = NODATA_CLASS
    cm: np.ndarray = field(init=False)
    tolerant: dict[int, TolerantCounts] = field(init=False)

    def __post_init__(self) -> None:
        self.cm = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)
        self.tolerant = {c: TolerantCounts() for c in self.tolerant_classes}

    def add(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one (H, W) prediction and its label mask."""
        self.cm += confusion(pred, target, n_classes=self.n_classes, ignore_index=self.ignore_index)
        valid = target != self.ignore_index
        for c in self.tolerant_classes:
            self.tolerant[c] = self.tolerant[c] + tolerant_counts(
                pred == c, target == c, tolerance=self.tolerance, valid=valid
            )

    def result(self, names: list[str]) -> dict[str, Any]:
        """Scores of everything added so far, keyed by class name."""
        out = scores(self.cm).to_dict(names)
        out["tolerant"] = {
            names[c]: {
                "tolerance_px": self.tolerance,
                "precision": _nan_none(t.precision),
                "recall": _nan_none(t.recall),
                "f1": _nan_none(t.f1),
            }
            for c, t in self.tolerant.items()
        }
        return out


def _nan_none(v: float) -> float | None:
    return None if np.isnan(v) else float(v)
