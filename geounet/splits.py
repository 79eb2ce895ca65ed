"""Honest measurement splits of one labelled scene: a held-out region and spatial CV folds.

A score on random blocks of the training region flatters a U-Net (neighbouring context
leaks, and the model is selected on those blocks), so a recipe can name a contiguous
region (``data.split: {kind: region, bbox: [...]}``) whose labels only ever serve the final
score: :func:`hold_out` blanks them out of everything else. The rest of the scene is
grouped into spatial cross-validation folds by whole blocks (:func:`spatial_folds`, with
scikit-learn's ``GroupKFold``: blocks are the groups, so no block is in two folds).

Pure numpy (plus scikit-learn's splitter); no I/O.

Example:
    >>> import numpy as np
    >>> region = region_mask((2, 4), transform=(10, 0, 0, 0, -10, 20), bbox=(0, 0, 20, 20))
    >>> region.astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geounet.errors import ConfigError
from geounet.model import NODATA_CLASS

#: The least share of the labelled pixels a held-out region must hold (issue 14's bar).
MIN_HELD_OUT_SHARE = 0.2


def region_mask(shape: tuple[int, int], *, transform: Sequence[float], bbox: Sequence[float]) -> np.ndarray:
    """Boolean ``(row, col)`` mask of the pixels whose centre lies in ``bbox`` (xmin, ymin, xmax, ymax).

    ``transform`` is the grid's affine ``(a, b, c, d, e, f)`` (north-up: ``b = d = 0``); the
    bbox is in the grid's CRS. A rectangle of pixel centres is contiguous by construction.

    Example:
        >>> int(region_mask((4, 4), transform=(1, 0, 0, 0, -1, 4), bbox=(1, 1, 3, 3)).sum())
        4
    """
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    if b or d:
        raise ConfigError(
            f"data.split.bbox needs a north-up grid; the scene's transform {tuple(transform[:6])} is rotated"
        )
    xmin, ymin, xmax, ymax = (float(v) for v in bbox)
    if not (xmin < xmax and ymin < ymax):
        raise ConfigError(f"data.split.bbox={list(bbox)} must be [xmin, ymin, xmax, ymax] with min < max")
    h, w = shape
    xs = c + (np.arange(w) + 0.5) * a
    ys = f + (np.arange(h) + 0.5) * e
    inside_x = (xs >= xmin) & (xs < xmax)
    inside_y = (ys >= ymin) & (ys < ymax)
    return np.asarray(inside_y[:, None] & inside_x[None, :])


def hold_out(
    mask: np.ndarray, region: np.ndarray, *, min_share: float = MIN_HELD_OUT_SHARE
) -> tuple[np.ndarray, np.ndarray]:
    """Split a label ``mask`` into (rest, held-out) masks: held-out keeps only the labels in ``region``.

    Raises a :class:`ConfigError` when the region holds less than ``min_share`` of the
    labelled pixels (a small region gives a noisy score) or all of them (nothing to train on).

    Example:
        >>> m = np.array([[0, 1, 2, 255]], np.uint8)
        >>> rest, held = hold_out(m, np.array([[False, False, True, True]]), min_share=0.3)
        >>> rest.tolist(), held.tolist()
        ([[0, 1, 255, 255]], [[255, 255, 2, 255]])
    """
    labelled = mask != NODATA_CLASS
    total = int(labelled.sum())
    held = int((labelled & region).sum())
    share = held / total if total else 0.0
    if share < min_share or held == total:
        raise ConfigError(
            f"data.split.bbox holds {held} of {total} labelled pixels ({share:.1%}); a held-out region "
            f"needs at least {min_share:.0%} of them and must leave some outside: move or resize the bbox"
        )
    return _keep(mask, ~region), _keep(mask, region)


def _keep(mask: np.ndarray, where: np.ndarray) -> np.ndarray:
    return np.where(where, mask, NODATA_CLASS).astype(np.uint8)


def block_ids(shape: tuple[int, int], *, block: int) -> np.ndarray:
    """Block index of every pixel (row-major blocks of ``block`` px).

    Example:
        >>> block_ids((3, 4), block=2).tolist()
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3]]
    """
    h, w = shape
    bc = -(-w // block)
    return np.asarray((np.arange(h)[:, None] // block) * bc + (np.arange(w)[None, :] // block))


def spatial_folds(mask: np.ndarray, *, block: int, k: int, seed: int = 0) -> np.ndarray:
    """Fold id ``0..k-1`` of every labelled pixel (-1 elsewhere), whole blocks per fold.

    ``GroupKFold`` (scikit-learn) with the blocks as groups balances the labelled pixels
    per fold; ``seed`` shuffles which blocks end up together.

    Example:
        >>> m = np.zeros((4, 4), np.uint8); m[0, 0] = 255
        >>> f = spatial_folds(m, block=2, k=2)
        >>> int(f[0, 0]), sorted(set(f[f >= 0].tolist())), len(set(f[:2, :2].ravel().tolist()) - {-1})
        (-1, [0, 1], 1)
    """
    from sklearn.model_selection import GroupKFold

    labelled = mask != NODATA_CLASS
    groups = block_ids(mask.shape, block=block)[labelled]
    n_groups = np.unique(groups).size
    if n_groups < k:
        raise ConfigError(
            f"data.split.cv_folds={k} but the labelled pixels outside the held-out region lie in only "
            f"{n_groups} blocks of data.split_block={block} px; lower one of them"
        )
    fold_of = np.full(groups.size, -1, dtype=np.int64)
    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, test) in enumerate(splitter.split(np.zeros(groups.size), groups=groups)):
        fold_of[test] = i
    out = np.full(mask.shape, -1, dtype=np.int8)
    out[labelled] = fold_of
    return out


def fold(mask: np.ndarray, folds: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) label masks of fold ``i``: test keeps the labels of fold ``i``, train the others.

    Example:
        >>> train, test = fold(np.array([3, 4, 255], np.uint8), np.array([0, 1, -1]), 1)
        >>> train.tolist(), test.tolist()
        ([3, 255, 255], [255, 4, 255])
    """
    test = folds == i
    return _keep(mask, ~test & (folds >= 0)), _keep(mask, test)
