"""What training minimizes and how fast: class weights, the CE + Dice loss, the learning-rate schedule.

Pure functions of their arguments (torch and numpy), kept apart from the loop in
:mod:`geounet.train` so they can be read and tested on their own.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from geounet import datasets
from geounet.config import TrainConfig
from geounet.errors import ConfigError
from geounet.model import NODATA_CLASS


def class_weights(cfg: TrainConfig, data: datasets.Data, *, which: str = "class_weights") -> np.ndarray:
    """Per-class weights of ``train.<which>`` (the loss's ``class_weights`` or ``sample_weights``).

    ``auto`` = sqrt inverse training frequency, normalised to mean 1 over the present classes;
    ``none`` = all 1; a list gives one value per class.
    """
    k = len(data.classes)
    cw = getattr(cfg.train, which)
    if cw == "none":
        return np.ones(k)
    if isinstance(cw, list):
        if len(cw) != k:
            raise ConfigError(f"train.{which} has {len(cw)} values for {k} classes; give one per class")
        return np.asarray(cw, dtype=np.float64)
    freq = datasets.class_frequencies(data.train, k)
    present = freq > 0
    w = np.zeros(k)
    w[present] = np.sqrt(freq[present].max() / freq[present])
    w[present] /= w[present].mean()
    return w


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = NODATA_CLASS
) -> torch.Tensor:
    """1 - soft Dice, averaged over the classes present in ``target`` (ignored pixels excluded)."""
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(torch.where(valid[:, 0], target, 0).long(), k).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1 - dice[present].mean()


def lr_at(step: int, *, base: float, warmup: int, total: int) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 1% of ``base`` at ``total``.

    Example:
        >>> [round(lr_at(s, base=1.0, warmup=2, total=10), 3) for s in (0, 1, 2, 10)]
        [0.5, 1.0, 1.0, 0.01]
    """
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))
