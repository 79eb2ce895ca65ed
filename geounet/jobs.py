"""The values a prediction job is made of: its options, the planned job, one tile's result.

Below the orchestrator (:mod:`geounet.pipeline`), the executors (in-process there,
:mod:`geounet.distributed` with Ray) and the tile cache (:mod:`geounet.resume`): they
all speak these types, and this module imports none of them. Pure values, no I/O.

Example:
    >>> opts = PredictOptions(merge="blend", resampling="bilinear")
    >>> opts.pixel_options()
    {'merge': 'blend', 'blend_window': 'cosine', 'amp': True, 'tta': False, 'resampling': 'bilinear', 'kept': []}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geounet import merge
from geounet.errors import ConfigError
from geounet.geo import Grid
from geounet.tiling import Tile, TileGrid

VECTOR_FORMATS = ("gpkg", "parquet", "fgb")

#: The products a run can write (``--outputs``); the class raster is always one of them.
OUTPUTS = ("classes", "confidence", "polygons", "probabilities", "observations")

#: The products written when ``--outputs`` is not given (probabilities only on request: they cost
#: a float16 copy of every tile's core and one byte per class per pixel on disk).
DEFAULT_OUTPUTS = ("classes", "confidence", "polygons")

#: Products that need more from each tile than its classes and confidence (so a cached tile
#: recorded without them cannot serve a run that asks for them).
PER_TILE = ("probabilities", "observations")

#: The options that change the predicted pixels (the others change speed or publishing only):
#: the tile cache of :mod:`geounet.resume` is kept as long as these (and the plan) stay.
PIXEL_OPTIONS = ("merge", "blend_window", "amp", "tta", "resampling")


def check_outputs(outputs: tuple[str, ...]) -> tuple[str, ...]:
    """``outputs`` if it names known products and includes ``classes``; else a ConfigError.

    Example:
        >>> check_outputs(("classes", "polygons"))
        ('classes', 'polygons')
    """
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown:
        raise ConfigError(
            f"--outputs {','.join(outputs)}: {unknown[0]!r} is unknown; use a subset of {','.join(OUTPUTS)}"
        )
    if "classes" not in outputs:
        raise ConfigError(
            f"--outputs {','.join(outputs)} must include classes (every other product derives from it); "
            f"use e.g. --outputs classes,{','.join(outputs) or 'confidence'}"
        )
    return outputs


@dataclass(frozen=True)
class PredictOptions:
    """How to run a prediction; ``None`` tile/halo take the bundle's recommendation.

    ``resampling`` is the GDAL resampling of STAC assets warped onto the job's grid
    (``nearest``, ``bilinear``...; the config key ``grid.resampling``).
    """

    tile: int | None = None
    halo: int | None = None
    batch_size: int = 8
    merge: str = "crop"
    blend_window: str = "cosine"
    device: str = "auto"
    amp: bool = True
    tta: bool = False
    bands: tuple[int, ...] | None = None
    vector_format: str = "gpkg"
    simplify: float | None = None
    min_area: float = 0.0
    resampling: str = "nearest"
    #: Stream tiles through the network in strips of rows (None: the plan decides; see geounet.budget).
    stream: bool | None = None
    #: Memory budget of the predict stage in bytes (None: chosen from the device; ``--memory``).
    memory: int | None = None
    #: Products to write (``--outputs``): ``classes`` always, the others of :data:`OUTPUTS` on demand.
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS

    def __post_init__(self) -> None:
        merge.check_merge(self.merge)
        merge.weight_fn(self.blend_window)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1; use e.g. 4 to 16")
        if self.vector_format not in VECTOR_FORMATS:
            raise ConfigError(
                f"vector_format={self.vector_format!r} is unknown; use one of {', '.join(VECTOR_FORMATS)}"
            )
        if self.min_area < 0:
            raise ConfigError(f"min_area={self.min_area} must be >= 0 (map units²)")
        check_outputs(self.outputs)

    def pixel_options(self) -> dict[str, Any]:
        """The values of :data:`PIXEL_OPTIONS`, and the :data:`PER_TILE` products asked for (``kept``):
        what a cached tile depends on among the options."""
        return {k: getattr(self, k) for k in PIXEL_OPTIONS} | {
            "kept": [o for o in PER_TILE if o in self.outputs]
        }

    @property
    def keeps_probabilities(self) -> bool:
        """Whether each tile keeps its core probabilities (``--outputs ...,probabilities`` with the crop
        merge; the blend merge has them anyway)."""
        return "probabilities" in self.outputs and self.merge == "crop"


@dataclass(frozen=True)
class Job:
    """A planned prediction: what to read, with which model, onto which grid and tiles.

    ``extra`` is recorded in the manifest only (scene documents, dates, workflow name...):
    nothing in it changes pixels, so the tile cache ignores it.
    """

    source: str
    model_path: str
    out_dir: Path
    grid: Grid
    plan: TileGrid
    bands: tuple[int, ...]
    options: PredictOptions
    model_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)
    #: STAC scenes to composite onto ``grid`` (searched with the model's bands, in model order);
    #: when given, ``source`` is only a label and chips come from :func:`geounet.scenes.chip`.
    scenes: tuple[Any, ...] = ()
    #: Optional area of interest (shapely geometry in ``grid``'s CRS): pixels outside are nodata.
    aoi: Any = None

    def __post_init__(self) -> None:
        if "observations" in self.options.outputs and not self.scenes:
            raise ConfigError(
                f"--outputs {','.join(self.options.outputs)}: observations counts the clear observations of "
                f"STAC scenes, and {self.source!r} is one raster; predict a STAC search (--stac) or drop it"
            )


@dataclass(frozen=True, eq=False)
class TileResult:
    """One tile's prediction: core classes/confidence (crop) or read-window probabilities (blend).

    With the crop merge, ``probs`` holds the core's probabilities (float16, classes first) only
    when the job writes ``probabilities.tif`` (:attr:`PredictOptions.keeps_probabilities`), else
    None. ``observations``: the core's count of clear valid observations (uint16) when the job
    writes ``observations.tif``. ``skipped`` tiles had no valid input pixel in their core and
    were not predicted (their count is 0).
    """

    tile: Tile
    classes: np.ndarray | None = None
    confidence: np.ndarray | None = None
    probs: np.ndarray | None = None
    valid: np.ndarray | None = None
    observations: np.ndarray | None = None
    skipped: bool = False
