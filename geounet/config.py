"""Pydantic models of the YAML configs (the only pydantic import); typos fail with the field path.

Sections are independent: each config kind has its own root model and loader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geounet.errors import ConfigError, InputNotFoundError

# ---------------------------------------------------------------------------------------------
# TrainConfig: `geounet train CONFIG` / `geounet evaluate` (owner: training/evaluation)
# ---------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainClass(_Strict):
    """One output class: name, color, and the raw label values (mask values or polygon attributes)."""

    name: str
    color: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")
    values: list[int | str]


class ImageFolders(_Strict):
    images: Path
    masks: Path
    limit: int | None = Field(default=None, ge=1, description="use only the first N images (tests)")


class PairsData(_Strict):
    """Image/mask pairs in folders: a training and a validation set."""

    kind: Literal["pairs"]
    train: ImageFolders
    val: ImageFolders
    bands: list[str] = ["red", "green", "blue"]
    mask_channel: int = 0
    scale: float = 1 / 255
    classes: list[TrainClass]


class SceneData(_Strict):
    """One raster scene (band name → single-band file) plus label polygons, split spatially by blocks."""

    kind: Literal["scene"]
    bands: dict[str, Path]
    labels: Path
    label_field: str
    scale: float = 1.0
    classes: list[TrainClass]
    split_block: int = Field(default=128, ge=16)
    val_fraction: float = Field(default=0.25, gt=0, lt=1)


class ModelSection(_Strict):
    arch: Literal["unet", "resunet", "attention-unet"] = "unet"
    depth: int = Field(default=4, ge=1, le=6)
    width: int = Field(default=32, ge=4)
    norm: Literal["batch", "none"] = "batch"
    upsample: Literal["transpose", "bilinear"] = "transpose"
    tile: int | None = None
    halo: int | None = None


class OptimSection(_Strict):
    steps: int = Field(default=2000, ge=1)
    batch_size: int = Field(default=8, ge=1)
    chip: int = Field(default=128, ge=16)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup: int = Field(default=50, ge=0, description="linear warm-up steps before the cosine decay")
    class_weights: Literal["auto", "none"] | list[float] = "auto"
    dice_weight: float = Field(default=0.5, ge=0)
    labelled_share: float = Field(default=0.9, ge=0, le=1)
    eval_every: int = Field(default=100, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1, description="default: eval_every")
    patience: int = Field(default=10, ge=1, description="evaluations without val mIoU gain before stopping")
    freeze_encoder_steps: int = Field(
        default=0, ge=0, description="with --init-from: steps with a frozen encoder"
    )
    amp: bool = True
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: torch's choice)")


class AugmentSection(_Strict):
    flip: bool = True
    rot90: bool = True
    brightness: float = Field(default=0.05, ge=0)
    contrast: float = Field(default=0.1, ge=0)
    gamma: float = Field(default=0.1, ge=0, lt=1)
    scale: float = Field(default=0.1, ge=0, lt=0.5)


class EvaluateSection(_Strict):
    tolerance: float = Field(default=2.0, ge=0)
    tolerant_classes: list[str] = []
    baseline: Literal["random-forest", "threshold", "none"] = "none"
    dark_class: str | None = Field(
        default=None, description="threshold baseline: the class of dark thin pixels"
    )


class TrainConfig(_Strict):
    """Root of a training recipe (``configs/train-*.yaml``)."""

    name: str
    seed: int = 0
    data: Annotated[PairsData | SceneData, Field(discriminator="kind")]
    model: ModelSection = ModelSection()
    train: OptimSection = OptimSection()
    augment: AugmentSection = AugmentSection()
    evaluate: EvaluateSection = EvaluateSection()
    output: Path | None = None

    @field_validator("data")
    @classmethod
    def _unique_classes(cls, v: PairsData | SceneData) -> PairsData | SceneData:
        names = [c.name for c in v.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        return v


def _default_data_dir() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _expand(obj: Any) -> Any:
    """Expand ``${GEOUNET_DATA}`` (default ../shared/data beside the repo) and env vars in strings."""
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand(v) for v in obj]
    if isinstance(obj, str) and "$" in obj:
        obj = obj.replace("${GEOUNET_DATA}", os.environ.get("GEOUNET_DATA", str(_default_data_dir())))
        return os.path.expandvars(obj)
    return obj


def load_train_config(path: Path, *, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a training YAML, expand ``${GEOUNET_DATA}``, apply dotted overrides, validate.

    Relative paths in the YAML are taken relative to the current directory (run from the repo).
    """
    if not path.exists():
        raise InputNotFoundError(f"training config {path} not found; see configs/train-*.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}; fix the file") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    raw = _expand(raw)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {loc}: {err['msg']} (got {err.get('input')!r}); fix the YAML") from None
