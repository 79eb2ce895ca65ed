"""Pydantic models of the YAML configs (the only pydantic import); typos fail with the field path.

Sections are independent: each config kind has its own root model and loader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from geounet.errors import ConfigError
from geounet.jobs import PredictOptions
from geounet.masks import FMASK_NOT_CLEAR, QA_PIXEL_NOT_CLEAR, SCL_NOT_CLEAR, MaskRule
from geounet.overrides import apply_overrides, read_yaml
from geounet.tiling import tile_halo_problem

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


class RegionSplit(_Strict):
    """A contiguous held-out region (bbox xmin, ymin, xmax, ymax in the scene CRS), scored only."""

    kind: Literal["region"]
    bbox: tuple[float, float, float, float]
    cv_folds: int = Field(default=4, ge=2, description="spatial CV folds over the rest of the scene")


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
    split: RegionSplit | None = None


class ModelSection(_Strict):
    arch: Literal["unet", "resunet", "attention-unet"] = "unet"
    depth: int = Field(default=4, ge=1, le=6)
    width: int = Field(default=32, ge=4)
    norm: Literal["batch", "none"] = "batch"
    upsample: Literal["transpose", "bilinear"] = "transpose"
    indices: list[str] = Field(
        default=[], description="spectral indices added as inputs, e.g. [ndvi, mndwi] (geounet.model.indices)"
    )
    tile: int | None = None
    halo: int | None = None


class OptimSection(_Strict):
    steps: int = Field(default=2000, ge=1)
    batch_size: int = Field(default=8, ge=1)
    chip: int = Field(default=128, ge=16)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup: int = Field(default=50, ge=0, description="linear warm-up steps before the cosine decay")
    class_weights: Literal["auto", "none"] | list[float] = Field(
        default="auto", description="loss weight per class; auto = sqrt inverse training frequency"
    )
    sample_weights: Literal["auto", "none"] | list[float] = Field(
        default="auto",
        description="chip-centring weight per class (independent of the loss weights); auto as above",
    )
    dice_weight: float = Field(default=0.5, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1, description="CE label smoothing (noisy labels)")
    labelled_share: float = Field(default=0.9, ge=0, le=1)
    eval_every: int = Field(default=100, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1, description="default: eval_every")
    patience: int = Field(default=10, ge=1, description="evaluations without val mIoU gain before stopping")
    freeze_encoder_steps: int = Field(
        default=0, ge=0, description="with --init-from: steps with a frozen encoder"
    )
    amp: bool = True
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: torch's choice)")
    max_minutes: float | None = Field(
        default=None, gt=0, description="wall-time budget: evaluate, checkpoint and stop when it is spent"
    )
    ema: float | None = Field(
        default=None, gt=0, lt=1, description="decay of a moving average of the weights (validated, saved)"
    )


class AugmentSection(_Strict):
    flip: bool = True
    rot90: bool = True
    brightness: float = Field(default=0.05, ge=0)
    contrast: float = Field(default=0.1, ge=0)
    gamma: float = Field(default=0.1, ge=0, lt=1)
    scale: float = Field(default=0.1, ge=0, lt=0.5)
    spectral: float = Field(default=0.0, ge=0, lt=1, description="± gain drawn per band and chip")


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
    raw = read_yaml(Path(path), "training", hint="see configs/train-*.yaml")
    return train_config(_expand(apply_overrides(raw, overrides or {}, path)), source=str(path))


def train_config(raw: dict[str, Any], *, source: str) -> TrainConfig:
    """Validate a training/evaluation config given as a mapping; errors name ``source`` and the field."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(source, exc)) from None


# ---------------------------------------------------------------------------------------------
# RunConfig / MonitorConfig: `geounet run CONFIG`, `geounet monitor run CONFIG`, `geounet demo`
# (owner: workflows). Loaded with `load_run_config` / `load_monitor_config`; `--set a.b=c`
# overrides go through `parse_overrides`.
# ---------------------------------------------------------------------------------------------


class AoiSection(_Strict):
    """The area of interest: exactly one of a lon/lat ``bbox``, a vector ``file`` or ``wkt``."""

    bbox: tuple[float, float, float, float] | None = None
    file: Path | None = None
    wkt: str | None = None

    @model_validator(mode="after")
    def _one(self) -> AoiSection:
        given = [k for k in ("bbox", "file", "wkt") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of bbox, file, wkt (got {given or 'none'})")
        if self.bbox is not None:
            w, s, e, n = self.bbox
            if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
                raise ValueError(f"bbox {list(self.bbox)} must be west<east, south<north in lon/lat degrees")
        return self

    def value(self) -> Any:
        """What :func:`geounet.search.read_aoi` takes (a WKT or path), or the bbox as WKT."""
        if self.bbox is not None:
            w, s, e, n = self.bbox
            return f"POLYGON (({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"
        return self.wkt if self.wkt is not None else self.file


class StacSection(_Strict):
    """Where scenes come from: a preset (``earth-search``, ``planetary-computer``), API URL or catalog.json."""

    source: str = "earth-search"
    collections: list[str] = []
    datetime: str | None = Field(default=None, description="RFC 3339 interval, e.g. 2024-06-01/2024-08-31")
    max_cloud: float | None = Field(default=None, ge=0, le=100)
    limit: int | None = Field(default=None, ge=1)
    preset: str | None = None


class GridSection(_Strict):
    """The target grid: CRS (default: UTM zone of the AOI centroid) and pixel size in metres."""

    crs: str | None = None
    resolution: float = Field(default=10.0, gt=0)
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = Field(
        default="bilinear", description="bringing scenes onto the grid (20/60 m bands, other CRSs)"
    )


class MaskSection(_Strict):
    """Which values of a scene's quality assets exclude a pixel (:class:`geounet.masks.MaskRule`).

    Defaults: ESA's, USGS's and Fmask's not-clear classes and cloud probability above 40 %.
    ``enabled: false`` ignores the quality assets (only nodata is excluded).
    """

    enabled: bool = True
    scl: tuple[Annotated[int, Field(ge=0, le=255)], ...] = SCL_NOT_CLEAR
    qa_pixel_bits: tuple[Annotated[int, Field(ge=0, le=15)], ...] = QA_PIXEL_NOT_CLEAR
    fmask: tuple[Annotated[int, Field(ge=0, le=255)], ...] = FMASK_NOT_CLEAR
    max_cloud_probability: float = Field(default=40.0, ge=0, le=100, description="percent")

    def rule(self) -> MaskRule | None:
        """The :class:`~geounet.masks.MaskRule` of this section; ``None`` when disabled.

        Example:
            >>> MaskSection(scl=(8, 9, 10)).rule().scl
            (8, 9, 10)
        """
        if not self.enabled:
            return None
        return MaskRule(
            scl=self.scl,
            qa_pixel_bits=self.qa_pixel_bits,
            fmask=self.fmask,
            max_cloud_probability=self.max_cloud_probability,
        )


class MosaicSection(_Strict):
    """How the scenes of a region become one mosaic: the per-pixel composite rule and the masks."""

    composite: Literal["first", "median"] = Field(
        default="first",
        description="first: clear pixel of the least cloudy, then newest scene; median: of all clear observations",
    )
    masks: MaskSection = MaskSection()
    observations: bool = Field(
        default=True, description="write observations.tif: per-pixel count of clear valid observations"
    )


class PredictSection(_Strict):
    """How to predict; ``tile``/``halo`` default to the bundle's recommendation."""

    tile: int | None = Field(default=None, ge=16)
    halo: int | None = Field(default=None, ge=0)
    batch_size: int = Field(default=8, ge=1)
    merge: Literal["crop", "blend"] = "crop"
    device: str = "auto"
    amp: bool = True
    tta: bool = False

    def options(self, **more: Any) -> PredictOptions:
        """This section as the pipeline's :class:`~geounet.jobs.PredictOptions`; ``more`` sets the rest.

        The one place a config's ``predict:`` becomes options (``more``: the outputs' vector
        settings, ``grid.resampling``, a resolved tile/halo...).
        """
        fields: dict[str, Any] = {
            "tile": self.tile,
            "halo": self.halo,
            "batch_size": self.batch_size,
            "merge": self.merge,
        }
        fields |= {"device": self.device, "amp": self.amp, "tta": self.tta}
        return PredictOptions(**(fields | more))

    @model_validator(mode="after")
    def _tile_halo(self) -> PredictSection:
        if self.tile is not None and self.halo is not None:
            problem = tile_halo_problem(self.tile, self.halo, names=("predict.tile", "predict.halo"))
            if problem:
                raise ValueError(problem)
        return self


class ExecutionSection(_Strict):
    """Which executor runs the stages: ``auto`` (see geounet.executors), ``ray`` (local or ``address``) or ``local``."""

    executor: Literal["auto", "ray", "local"] = "auto"
    address: str | None = Field(
        default=None, description="Ray cluster address (default: RAY_ADDRESS or local)"
    )
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs for a local Ray")
    gpus_per_actor: float | None = Field(default=None, ge=0)
    actors: int | None = Field(default=None, ge=1)


class OutputsSection(_Strict):
    dir: Path
    vector_format: Literal["gpkg", "parquet", "fgb"] = "gpkg"
    simplify: float | None = Field(default=None, ge=0)
    min_area: float = Field(default=0.0, ge=0)
    probabilities: bool = Field(
        default=False,
        description="write probabilities.tif: one 0-100 % band per class (--outputs probabilities)",
    )


class RunConfig(_Strict):
    """Root of a region land-cover run (``configs/region-landcover*.yaml``)."""

    name: str
    aoi: AoiSection
    stac: StacSection = StacSection()
    grid: GridSection = GridSection()
    mosaic: MosaicSection = MosaicSection()
    model: Path
    predict: PredictSection = PredictSection()
    execution: ExecutionSection = ExecutionSection()
    outputs: OutputsSection
    seconds_per_megapixel: dict[str, float] = Field(
        default={"cpu": 60.0, "gpu": 1.5},
        description="--dry-run time estimate per device kind (measure with bench/ and adjust)",
    )


_M = TypeVar("_M", bound=BaseModel)


class ParcelsSection(_Strict):
    """The fields to monitor: a vector file and the column holding each parcel's unique id."""

    file: Path
    id_field: str
    layer: str | None = None


class MonitorBands(_Strict):
    """Band names (as the STAC items name them) for NDVI and the per-pixel cloud mask."""

    red: str = "red"
    nir: str = "nir"
    mask: str | None = Field(
        default=None, description="cloud-mask band, e.g. fmask (Landsat) or scl (S2 L2A)"
    )
    mask_kind: Literal["fmask", "scl", "binary"] = "fmask"
    clear_values: list[int] | None = Field(
        default=None, description="mask values counted as clear (default per mask_kind)"
    )
    reflectance_scale: float = Field(
        default=1.0, gt=0, description="DN → reflectance, if items lack raster:scale"
    )


class ScreeningSection(_Strict):
    min_valid_fraction: float = Field(
        default=0.5, ge=0, le=1, description="a parcel is screened out of a scene below this clear share"
    )


class ChangeSection(_Strict):
    ndvi_drop: float = Field(default=0.2, gt=0, description="flag parcels whose median NDVI fell by more")


class StateSection(_Strict):
    url: str | None = Field(
        default=None, description="postgresql://... for a shared store; default SQLite in outputs.dir"
    )


class MonitorConfig(_Strict):
    """Root of a crop-monitoring config (``configs/crop-monitoring.yaml``)."""

    name: str
    parcels: ParcelsSection
    stac: StacSection = StacSection()
    bands: MonitorBands = MonitorBands()
    grid: GridSection = GridSection()
    lookback_days: float = Field(
        default=30, ge=0, description="search this long before the watermark (late items); ids dedupe"
    )
    model: Path | None = Field(default=None, description="segmentation bundle for class fractions (optional)")
    predict: PredictSection = PredictSection()
    execution: ExecutionSection = ExecutionSection(executor="local")
    screening: ScreeningSection = ScreeningSection()
    change: ChangeSection = ChangeSection()
    state: StateSection = StateSection()
    outputs: OutputsSection


def _load(path: Path, model: type[_M], overrides: dict[str, Any] | None, kind: str) -> _M:
    path = Path(path)
    raw = _expand(apply_overrides(read_yaml(path, kind), overrides or {}, path))
    try:
        cfg = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(path, exc)) from None
    return cfg


def _one_line(path: Path | str, exc: ValidationError) -> str:
    """The first validation error as ``file: field.path=value: message; fix``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f"={value!r}"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown field {loc}{shown}{more}; check its spelling against configs/ examples"
    if err["type"] == "missing":
        return f"{path}: {loc} is required{more}; add it to the YAML or --set {loc}=..."
    return f"{path}: {loc}{shown}: {msg}{more}; fix the YAML or --set {loc}=..."


def load_run_config(path: Path, *, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a region run config (YAML), with dotted ``--set`` overrides and ``${VAR}`` expansion.

    Raises:
        InputNotFoundError: no such file.  ConfigError: invalid YAML or values (one line, with the field path).
    """
    return _load(path, RunConfig, overrides, "run")


def load_monitor_config(path: Path, *, overrides: dict[str, Any] | None = None) -> MonitorConfig:
    """Read and validate a crop-monitoring config (YAML); as :func:`load_run_config`."""
    return _load(path, MonitorConfig, overrides, "monitor")
