"""Metrics against hand-computed values on small arrays (confusion, IoU/Dice/P/R, tolerant F1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geounet import metrics
from geounet.errors import InputError


def test_confusion_and_scores_by_hand() -> None:
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = metrics.confusion(pred, target, n_classes=3)
    # true 0: pred 0,1 ; true 1: pred 1,1,0 ; true 2: pred 2,0 ; the 255 pixel is skipped
    assert cm.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    s = metrics.scores(cm)
    # class 0: tp1 fp2 fn1 -> IoU 1/4, dice 2/5, P 1/3, R 1/2
    np.testing.assert_allclose(s.iou, [1 / 4, 2 / 4, 1 / 2])
    np.testing.assert_allclose(s.dice, [2 / 5, 4 / 6, 2 / 3])
    np.testing.assert_allclose(s.precision, [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(s.recall, [1 / 2, 2 / 3, 1 / 2])
    assert s.pixel_accuracy == pytest.approx(4 / 7)
    assert s.miou == pytest.approx((1 / 4 + 1 / 2 + 1 / 2) / 3)
    d = s.to_dict(["a", "b", "c"])
    assert d["iou"]["b"] == pytest.approx(0.5) and d["confusion"] == cm.tolist()


def test_absent_class_is_nan_and_left_out_of_miou() -> None:
    s = metrics.scores(metrics.confusion(np.array([0, 0, 1]), np.array([0, 0, 1]), n_classes=3))
    assert np.isnan(s.iou[2]) and s.miou == pytest.approx(1.0)
    assert s.to_dict()["iou"]["2"] is None


def test_confusion_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="shape"):
        metrics.confusion(np.zeros(3), np.zeros(4), n_classes=2)
    with pytest.raises(InputError, match="outside"):
        metrics.confusion(np.array([5]), np.array([0]), n_classes=2)


def test_tolerant_f1_by_hand() -> None:
    true = np.zeros((5, 10), bool)
    true[2, 1:6] = True  # 5-pixel line
    pred = np.zeros((5, 10), bool)
    pred[4, 1:4] = True  # 2 rows away: within 2 px -> hits
    pred[0, 9] = True  # far from the line: a miss
    c = metrics.tolerant_counts(pred, true, tolerance=2)
    assert (c.pred_hit, c.pred_total) == (3, 4)
    # labelled pixels (2,1..5): within 2 px of (4,1..3)? (2,1),(2,2),(2,3) at dist 2; (2,4) dist sqrt(5) > 2
    assert (c.true_hit, c.true_total) == (3, 5)
    p, r = 3 / 4, 3 / 5
    assert c.f1 == pytest.approx(2 * p * r / (p + r))
    strict = metrics.tolerant_counts(pred, true, tolerance=0)
    assert strict.pred_hit == 0 and strict.f1 == 0.0


def test_tolerant_counts_respect_valid_and_add_up() -> None:
    true = np.array([[1, 0, 0, 0, 1]], bool)
    pred = np.array([[0, 1, 0, 0, 1]], bool)
    valid = np.array([[1, 1, 1, 0, 0]], bool)
    c = metrics.tolerant_counts(pred, true, tolerance=1, valid=valid)
    assert (c.pred_hit, c.pred_total, c.true_hit, c.true_total) == (1, 1, 1, 1)
    both = c + c
    assert both.pred_total == 2 and both.f1 == pytest.approx(1.0)
    assert np.isnan(metrics.TolerantCounts().f1)


def test_accumulator_sums_images() -> None:
    acc = metrics.Accumulator(n_classes=2, tolerant_classes=(1,), tolerance=1)
    t = np.array([[0, 1, 0, 255]])
    acc.add(np.array([[0, 0, 1, 1]]), t)
    acc.add(np.array([[0, 1, 0, 0]]), t)
    r = acc.result(["bg", "crack"])
    assert r["confusion"] == [[3, 1], [1, 1]]
    # image 1: pred (0,2) is 1 px from the crack -> hit; crack found; image 2: exact
    assert r["tolerant"]["crack"]["f1"] == pytest.approx(1.0)
    assert r["iou"]["crack"] == pytest.approx(1 / 3)


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.uint8, (6, 7), elements=st.integers(0, 2)), arrays(np.uint8, (6, 7), elements=st.integers(0, 2))
)
def test_confusion_counts_every_pixel_and_tolerance_only_helps(a: np.ndarray, b: np.ndarray) -> None:
    cm = metrics.confusion(a, b, n_classes=3)
    assert cm.sum() == a.size
    assert metrics.scores(cm).pixel_accuracy == pytest.approx((a == b).mean())
    exact = metrics.tolerant_counts(a == 1, b == 1, tolerance=0)
    loose = metrics.tolerant_counts(a == 1, b == 1, tolerance=2)
    assert exact.pred_hit == int(((a == 1) & (b == 1)).sum())
    assert loose.pred_hit >= exact.pred_hit and loose.true_hit >= exact.true_hit


@settings(max_examples=60, deadline=None)
@given(
    arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24))),
    st.sampled_from([0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 8.0]),
)
def test_disk_dilation_equals_distance_transform(mask: np.ndarray, tol: float) -> None:
    """The fast path (dilation by a disk) selects exactly the pixels within ``tol`` by the EDT."""
    from scipy import ndimage

    expect = ndimage.distance_transform_edt(~mask) <= tol if mask.any() else np.zeros_like(mask)
    np.testing.assert_array_equal(metrics._within(mask, tol), expect)
