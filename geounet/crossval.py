"""Spatial cross-validation of the U-Net recipe: one training per fold, the folds' scores summarized.

The baselines' CV lives in :func:`geounet.evaluate.cross_validate` (cheap: refit per fold);
here the fit of a fold is a whole training run, so it is kept apart from the report and asked
for explicitly (``geounet evaluate --cv-train``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from geounet import datasets, evaluate, model, train
from geounet.config import TrainConfig
from geounet.errors import ConfigError


def unet(cfg: TrainConfig, *, data: datasets.Data | None = None) -> dict[str, Any]:
    """The U-Net's spatial CV: one training per fold of ``data.cv``, scored on that fold's test side.

    Each fold's training side is split again by blocks for validation (early stopping and
    selection stay inside the fold). The held-out region is never touched. Runs go to
    ``<output>/cv<i>``. Returns :func:`geounet.evaluate.summarize` of the folds.
    """
    data = data or datasets.load_data(cfg)
    if not data.cv:
        raise ConfigError(
            "U-Net cross-validation needs data.split: {kind: region, bbox: [...]} in the recipe"
        )
    folds = iter(range(len(data.cv)))
    d = cfg.data

    def fit(fold: datasets.Data) -> dict[str, evaluate.Predictor]:
        i = next(folds)
        block, share = getattr(d, "split_block", 128), getattr(d, "val_fraction", 0.25)
        tr, va = datasets.spatial_split(fold.train[0], block=block, val_fraction=share, seed=cfg.seed)
        fold_cfg = cfg.model_copy(update={"output": train.output_dir(cfg) / f"cv{i}"})
        outcome = train.run(fold_cfg, data=replace(fold, train=[tr], val=[va]))
        if outcome.bundle is None:
            raise ConfigError(f"CV fold {i} produced no bundle; raise train.steps or train.eval_every")
        return {"U-Net": evaluate.bundle_predictor(model.load(outcome.bundle), data=fold)}

    names = [c.name for c in data.classes]
    tol = tuple(names.index(n) for n in cfg.evaluate.tolerant_classes if n in names)
    kw: dict[str, Any] = {"classes": data.classes, "tolerant": tol, "tolerance": cfg.evaluate.tolerance}
    return evaluate.cross_validate(fit, data, **kw)["U-Net"]
