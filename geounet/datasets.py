"""Labelled training data: image/mask pairs and raster scenes with label polygons.

Two sources, one in-memory form (:class:`Labelled`): an image ``(band, row, col)`` in its stored
dtype plus a class-id mask ``(row, col)`` where :data:`NODATA_CLASS` marks unlabelled pixels.

- :func:`load_pairs`: photos (JPG/PNG) or GeoTIFFs with a mask file of the same stem; mask
  values are mapped to class ids (values not in the mapping become NODATA_CLASS).
- :func:`load_scene`: single-band rasters (e.g. Sentinel-2 JP2 at 10/20/60 m) resampled onto
  the finest grid, with polygons rasterized onto it; pixels no polygon covers stay NODATA_CLASS:
  sparse labels mean *unknown*, not background.

:func:`spatial_split` splits a scene into train/validation by blocks so neighbouring pixels
do not leak; :func:`sample_chips` draws chips weighted toward labelled (and rarer) pixels;
:func:`load_data` loads a training recipe's train and validation sides (:class:`Data`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet import splits
from geounet.errors import InputError, InputNotFoundError
from geounet.model import NODATA_CLASS, ClassInfo

if TYPE_CHECKING:
    from geounet.config import TrainConfig

log = logging.getLogger(__name__)

#: Mask value of unlabelled pixels; the loss and the metrics skip it.

_PHOTO = {".jpg", ".jpeg", ".png"}
_RASTER = {".tif", ".tiff", ".jp2", ".vrt"}


@dataclass(frozen=True)
class Labelled:
    """One labelled image: ``image`` (C, H, W) in stored dtype, ``mask`` (H, W) uint8 class ids."""

    name: str
    image: np.ndarray
    mask: np.ndarray

    @property
    def labelled_fraction(self) -> float:
        """Share of pixels that carry a class (not NODATA_CLASS)."""
        return float((self.mask != NODATA_CLASS).mean())


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W) array of a photo (PIL) or raster (rasterio)."""
    if path.suffix.lower() in _PHOTO:
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
        return np.ascontiguousarray(a.transpose(2, 0, 1))
    import rasterio

    with rasterio.open(path) as src:
        return np.asarray(src.read())


def _read_mask(path: Path, *, channel: int) -> np.ndarray:
    if path.suffix.lower() in _PHOTO:
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im)
        return a[..., channel] if a.ndim == 3 else a
    import rasterio

    with rasterio.open(path) as src:
        return np.asarray(src.read(channel + 1))


def map_values(raw: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Map raw mask values to class ids; values not in ``mapping`` become NODATA_CLASS.

    Example:
        >>> map_values(np.array([0, 204, 255, 7]), {0: 0, 255: 1, 204: 2}).tolist()
        [0, 2, 1, 255]
    """
    lut = np.full(65536, NODATA_CLASS, dtype=np.uint8)
    for value, cls in mapping.items():
        lut[int(value)] = cls
    return lut[raw.astype(np.int64)]


def load_pairs(
    images: Path, masks: Path, *, mapping: Mapping[int, int], channel: int = 0, limit: int | None = None
) -> list[Labelled]:
    """Image/mask pairs from two folders, matched by file stem (``a.jpg`` ↔ ``a.png``)."""
    if not images.is_dir() or not masks.is_dir():
        raise InputNotFoundError(
            f"image folder {images} or mask folder {masks} not found; check the data paths"
        )
    mask_by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in _PHOTO | _RASTER}
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in _PHOTO | _RASTER)
    out: list[Labelled] = []
    for p in paths[:limit]:
        if p.stem not in mask_by_stem:
            raise InputNotFoundError(
                f"no mask for image {p} in {masks}; add {p.stem}.png or remove the image"
            )
        img = _read_image(p)
        mask = map_values(_read_mask(mask_by_stem[p.stem], channel=channel), mapping)
        if mask.shape != img.shape[1:]:
            raise InputError(f"mask {mask_by_stem[p.stem]} is {mask.shape}, image {p} is {img.shape[1:]}")
        out.append(Labelled(p.stem, img, mask))
    if not out:
        raise InputNotFoundError(f"no images in {images}; expected .jpg/.png/.tif files")
    return out


def load_scene(
    bands: Mapping[str, Path],
    *,
    labels: Path,
    field: str,
    mapping: Mapping[str, int],
    scale: float = 1.0,
) -> tuple[Labelled, dict[str, object]]:
    """A multi-resolution scene resampled to its finest band's grid, with polygons rasterized.

    Coarser bands are resampled bilinearly (the finest grid is the target). Polygons whose
    ``field`` value is not in ``mapping`` are dropped; where polygons overlap, the later one
    wins. Returns the labelled scene (image float32, multiplied by ``scale``) and grid metadata
    (``crs`` WKT, ``transform`` tuple, ``shape``).
    """
    import geopandas as gpd
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.features import rasterize

    paths = list(bands.values())
    for p in paths:
        if not p.exists():
            raise InputNotFoundError(f"band file {p} not found; check data.bands in the config")
    res = {}
    for p in paths:
        with rasterio.open(p) as src:
            res[p] = src.res[0]
    with rasterio.open(min(paths, key=lambda q: res[q])) as ref:
        shape, transform, crs = (ref.height, ref.width), ref.transform, ref.crs
    stack = np.empty((len(paths), *shape), dtype=np.float32)
    for i, p in enumerate(paths):
        with rasterio.open(p) as src:
            if src.crs != crs:
                raise InputError(f"band {p} has CRS {src.crs}, expected {crs}; reproject it first")
            stack[i] = src.read(1, out_shape=shape, resampling=Resampling.bilinear).astype(np.float32) * scale
    if not labels.exists():
        raise InputNotFoundError(f"label file {labels} not found; check data.labels in the config")
    gdf = gpd.read_file(labels).to_crs(crs)
    if field not in gdf.columns:
        raise InputError(f"label field {field!r} not in {labels} (fields: {list(gdf.columns)})")
    gdf = gdf[gdf[field].isin(list(mapping))]
    shapes = [
        (geom, mapping[v]) for geom, v in zip(gdf.geometry, gdf[field], strict=True) if geom is not None
    ]
    mask = rasterize(shapes, out_shape=shape, transform=transform, fill=NODATA_CLASS, dtype="uint8")
    meta: dict[str, object] = {"crs": crs.to_wkt(), "transform": tuple(transform)[:6], "shape": shape}
    log.info(
        "scene %s: %d bands, %s px, %.1f%% labelled",
        labels.stem,
        len(paths),
        shape,
        100 * (mask != NODATA_CLASS).mean(),
    )
    return Labelled(labels.stem, stack, mask), meta


def spatial_split(
    item: Labelled, *, block: int, val_fraction: float, seed: int = 0, n_classes: int | None = None
) -> tuple[Labelled, Labelled]:
    """Split one scene into train and validation by square blocks (labels of the other side NODATA_CLASS).

    Only blocks holding labels are assigned; about ``val_fraction`` of the labelled pixels go to
    validation. Among a few seeded draws, the one whose validation set covers the most classes
    (then the closest labelled fraction) wins, so rare classes are evaluated too.
    """
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction={val_fraction} must be in (0, 1); e.g. 0.25")
    h, w = item.mask.shape
    br, bc = -(-h // block), -(-w // block)
    ids = (np.arange(h)[:, None] // block) * bc + (np.arange(w)[None, :] // block)
    labelled = item.mask != NODATA_CLASS
    counts = np.bincount(ids[labelled], minlength=br * bc)
    candidates = np.flatnonzero(counts)
    total = counts.sum()
    best: tuple[tuple[int, float], np.ndarray] | None = None
    rng = np.random.default_rng(seed)
    for _ in range(64):
        order = rng.permutation(candidates)
        cum = np.cumsum(counts[order])
        val_blocks = order[: int(np.searchsorted(cum, val_fraction * total)) + 1]
        is_val = np.isin(ids, val_blocks)
        n_cls = len(np.unique(item.mask[is_val & labelled]))
        key = (n_cls, -abs(cum[len(val_blocks) - 1] / total - val_fraction))
        if best is None or key > best[0]:
            best = (key, is_val)
    assert best is not None
    is_val = best[1]
    train_mask = np.where(is_val, NODATA_CLASS, item.mask).astype(np.uint8)
    val_mask = np.where(is_val, item.mask, NODATA_CLASS).astype(np.uint8)
    return replace(item, name=f"{item.name}:train", mask=train_mask), replace(
        item, name=f"{item.name}:val", mask=val_mask
    )


def class_frequencies(items: Sequence[Labelled], n_classes: int) -> np.ndarray:
    """Labelled-pixel count per class over all items (float64)."""
    counts = np.zeros(n_classes, dtype=np.float64)
    for it in items:
        m = it.mask[it.mask != NODATA_CLASS]
        counts += np.bincount(m, minlength=n_classes)[:n_classes]
    return counts


def band_statistics(
    items: Sequence[Labelled], *, scale: float, max_pixels: int = 2_000_000
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std of ``image * scale`` over the items (labelled pixels for sparse scenes).

    For sparsely labelled scenes the statistics come from the labelled pixels of the training
    side only, so validation pixels never inform normalization.
    """
    rng = np.random.default_rng(0)
    samples = []
    for it in items:
        sel = it.mask != NODATA_CLASS if it.labelled_fraction < 1 else np.ones(it.mask.shape, bool)
        flat = it.image.reshape(it.image.shape[0], -1)[:, sel.ravel()]
        if flat.shape[1] > max_pixels // max(len(items), 1):
            flat = flat[:, rng.choice(flat.shape[1], max_pixels // max(len(items), 1), replace=False)]
        samples.append(flat.astype(np.float64) * scale)
    allv = np.concatenate(samples, axis=1)
    std = np.maximum(allv.std(axis=1), 1e-6)
    return tuple(float(v) for v in allv.mean(axis=1)), tuple(float(v) for v in std)


def sample_chips(
    items: Sequence[Labelled],
    *,
    n: int,
    size: int,
    rng: np.random.Generator,
    class_weights: np.ndarray,
    labelled_share: float = 0.9,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` chips ``(n, C, size, size)`` float32 (stored values) and masks ``(n, size, size)``.

    With probability ``labelled_share`` a chip is centred on a labelled pixel drawn with
    probability proportional to ``class_weights[class]`` (so rare classes are seen more
    often); otherwise its position is uniform. Chips are clipped to lie inside the image.
    """
    index = _sampling_index(items, class_weights)
    c = items[0].image.shape[0]
    imgs = np.empty((n, c, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.uint8)
    for k in range(n):
        if index.cum.size and rng.random() < labelled_share:
            j = int(np.searchsorted(index.cum, rng.random() * index.cum[-1], side="right"))
            j = min(j, index.cum.size - 1)
            i, flat = int(index.item[j]), int(index.flat[j])
            h, w = items[i].mask.shape
            r, col = divmod(flat, w)
            r0, c0 = r - size // 2 + int(rng.integers(-size // 4, size // 4 + 1)), col - size // 2
            c0 += int(rng.integers(-size // 4, size // 4 + 1))
        else:
            i = int(rng.integers(len(items)))
            h, w = items[i].mask.shape
            r0, c0 = int(rng.integers(0, max(h - size, 0) + 1)), int(rng.integers(0, max(w - size, 0) + 1))
        it = items[i]
        if h < size or w < size:
            raise InputError(
                f"image {it.name} is {h}x{w}, smaller than the chip size {size}; lower train.chip"
            )
        r0, c0 = min(max(r0, 0), h - size), min(max(c0, 0), w - size)
        imgs[k] = it.image[:, r0 : r0 + size, c0 : c0 + size]
        masks[k] = it.mask[r0 : r0 + size, c0 : c0 + size]
    return imgs, masks


@dataclass(frozen=True)
class _Index:
    item: np.ndarray
    flat: np.ndarray
    cum: np.ndarray


_INDEX_CACHE: dict[tuple[int, ...], _Index] = {}


def _sampling_index(items: Sequence[Labelled], class_weights: np.ndarray) -> _Index:
    """Labelled pixel positions with cumulative weights; cached per (items, weights)."""
    key = (*(id(it.mask) for it in items), hash(np.asarray(class_weights, np.float64).tobytes()))
    if key in _INDEX_CACHE:
        return _INDEX_CACHE[key]
    item_ids, flats, weights = [], [], []
    for i, it in enumerate(items):
        m = it.mask.ravel()
        flat = np.flatnonzero(m != NODATA_CLASS)
        item_ids.append(np.full(flat.size, i, dtype=np.int32))
        flats.append(flat)
        weights.append(np.asarray(class_weights, np.float64)[m[flat]])
    w = np.concatenate(weights) if weights else np.zeros(0)
    idx = _Index(np.concatenate(item_ids), np.concatenate(flats), np.cumsum(w))
    _INDEX_CACHE.clear()
    _INDEX_CACHE[key] = idx
    return idx


# --------------------------------------------------------------------------- a recipe's data


@dataclass(frozen=True)
class Data:
    """Train and validation items of a recipe plus what the bundle must record about them.

    With a held-out region (``data.split``), ``test`` holds its labels (used only for the final
    score) and ``cv`` the (train, test) sides of each spatial fold of the rest of the scene.
    """

    train: list[Labelled]
    val: list[Labelled]
    bands: tuple[str, ...]
    classes: tuple[ClassInfo, ...]
    scale: float
    description: dict[str, Any] = field(default_factory=dict)
    test: list[Labelled] = field(default_factory=list)
    cv: tuple[tuple[Labelled, Labelled], ...] = ()


def load_data(cfg: TrainConfig) -> Data:
    """Load the recipe's labelled data and split it (folders for pairs, blocks for a scene)."""
    d = cfg.data
    classes = tuple(ClassInfo(i, c.name, c.color) for i, c in enumerate(d.classes))
    if d.kind == "pairs":
        mapping = {int(v): i for i, c in enumerate(d.classes) for v in c.values}
        train = load_pairs(
            d.train.images, d.train.masks, mapping=mapping, channel=d.mask_channel, limit=d.train.limit
        )
        val = load_pairs(
            d.val.images, d.val.masks, mapping=mapping, channel=d.mask_channel, limit=d.val.limit
        )
        desc: dict[str, Any] = {
            "kind": "pairs",
            "train": f"{d.train.images} ({len(train)} images)",
            "val": f"{d.val.images} ({len(val)} images)",
        }
        if d.train == d.val:  # `geounet evaluate --model M IMAGES --masks MASKS`: no training side
            desc["split"] = f"{len(val)} images as given; a tuned baseline is tuned on these same images"
        return Data(train, val, tuple(d.bands), classes, d.scale, desc)
    smap = {str(v): i for i, c in enumerate(d.classes) for v in c.values}
    scene, grid = load_scene(d.bands, labels=d.labels, field=d.label_field, mapping=smap, scale=1.0)
    test: list[Labelled] = []
    cv: tuple[tuple[Labelled, Labelled], ...] = ()
    if d.split is not None:
        region = splits.region_mask(scene.mask.shape, transform=grid["transform"], bbox=d.split.bbox)  # type: ignore[arg-type]
        rest_mask, held_mask = splits.hold_out(scene.mask, region)
        test = [replace(scene, name=f"{scene.name}:held-out", mask=held_mask)]
        scene = replace(scene, name=f"{scene.name}:rest", mask=rest_mask)
        folds = splits.spatial_folds(rest_mask, block=d.split_block, k=d.split.cv_folds, seed=cfg.seed)
        cv = tuple(_fold(scene, folds, i) for i in range(d.split.cv_folds))
    tr, va = spatial_split(scene, block=d.split_block, val_fraction=d.val_fraction, seed=cfg.seed)
    desc = {
        "kind": "scene",
        "bands": {k: str(v) for k, v in d.bands.items()},
        "labels": str(d.labels),
        "split": f"blocks of {d.split_block} px, {d.val_fraction:.0%} of labelled pixels"
        + (" outside the held-out region" if d.split else "")
        + " to validation",
        "labelled_fraction": round(scene.labelled_fraction, 4),
        "grid": {"crs": grid["crs"], "transform": list(grid["transform"]), "shape": list(grid["shape"])},  # type: ignore[call-overload]
    }
    if d.split is not None:
        held = int((test[0].mask != NODATA_CLASS).sum())
        desc["held_out"] = {
            "bbox": list(d.split.bbox),
            "labelled_pixels": held,
            "share_of_labelled": round(held / (held + int((scene.mask != NODATA_CLASS).sum())), 4),
            "cv_folds": d.split.cv_folds,
        }
    return Data([tr], [va], tuple(d.bands), classes, d.scale, desc, test, cv)


def _fold(scene: Labelled, folds: np.ndarray, i: int) -> tuple[Labelled, Labelled]:
    train, test = splits.fold(scene.mask, folds, i)
    return replace(scene, name=f"{scene.name}:cv{i}-train", mask=train), replace(
        scene, name=f"{scene.name}:cv{i}-test", mask=test
    )
