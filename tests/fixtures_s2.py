"""The real Brandenburg Sentinel-2 scene as a 4-band GeoTIFF, a crop of it, and a small bundle.

Shared by the job-stage tests (``test_planning``, ``test_predict``, ``test_rasters``) and the
end-to-end ones (``test_pipeline``); session-scoped, so the JPEG 2000 bands are decoded once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from fixtures_model import steep_bundle

from geounet import model
from geounet.model import ClassInfo, ModelSpec, networks

CLASSES = (
    ClassInfo(0, "water", "#1f78b4"),
    ClassInfo(1, "forest", "#33a02c"),
    ClassInfo(2, "urban", "#e31a1c"),
)


def _stack(bands: list[Path], out: Path) -> Path:
    """Stack single-band files of one grid into a multi-band GeoTIFF (format change only)."""
    with rasterio.open(bands[0]) as first:
        profile = first.profile | {
            "driver": "GTiff",
            "count": len(bands),
            "tiled": True,
            "compress": "deflate",
        }
    with rasterio.open(out, "w", **profile) as dst:
        for i, b in enumerate(bands, start=1):
            with rasterio.open(b) as src:
                dst.write(src.read(1), i)
                dst.set_band_description(i, b.stem.split("_")[-1])
    return out


@pytest.fixture(scope="session")
def s2_rgbn(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Brandenburg Sentinel-2 10 m bands (B02, B03, B04, B08), 1536×768, stacked."""
    img = data_dir / "s2-brandenburg-20170216" / "IMG_DATA"
    bands = [img / f"T33UUU_20170216T102101_{b}.jp2" for b in ("B02", "B03", "B04", "B08")]
    return _stack(bands, tmp_path_factory.mktemp("s2") / "s2_10m.tif")


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded depth-3, width-8 U-Net for the four 10 m bands / 3 classes, head 100x steeper."""
    return steep_bundle(
        tmp_path_factory.mktemp("m") / "s2.safetensors",
        bands=("B02", "B03", "B04", "B08"),
        classes=CLASSES,
        spec=ModelSpec(in_channels=4, n_classes=3, depth=3, width=8),
        mean=1000.0,
        std=500.0,
        seed=3,
        gain=100,
    )


def whole_image_probs(bundle_path: Path, image: np.ndarray, halo: int) -> np.ndarray:
    """Reference: the whole image, mirror-padded by the halo (and to the stride), in one forward pass."""
    b = model.load(bundle_path)
    stride = b.spec.stride
    _, h, w = image.shape
    ph, pw = -(-(h + 2 * halo) // stride) * stride, -(-(w + 2 * halo) // stride) * stride
    padded = np.pad(image, ((0, 0), (halo, ph - h - halo), (halo, pw - w - halo)), mode="reflect")
    x = torch.from_numpy(model.normalize(padded[None].astype(np.float32), b.normalization))
    with torch.inference_mode():
        logits = networks.module_from_bundle(b)(x)
    probs = torch.softmax(logits.double(), dim=1)[0].numpy()
    return probs[:, halo : halo + h, halo : halo + w]


@pytest.fixture(scope="session")
def s2_crop(s2_rgbn: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 300×260 crop of the real scene (a size no tile size below divides)."""
    with rasterio.open(s2_rgbn) as src:
        win = rasterio.windows.Window(500, 200, 260, 300)
        image = src.read(window=win).astype(np.float32)
        profile = src.profile | {"width": 260, "height": 300, "transform": src.window_transform(win)}
    path = tmp_path_factory.mktemp("crop") / "crop.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return path, image
