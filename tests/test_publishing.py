"""The publish stage of a job: a photo without georeferencing gets its polygons in the asked vector format."""

from __future__ import annotations

from pathlib import Path

import rasterio

from geounet import model
from geounet.model import ClassInfo, ModelSpec, networks


def test_photo_without_georeferencing(data_dir: Path, tmp_path: Path) -> None:
    from geounet.cli import main

    photo = next((data_dir / "crack-uav75" / "val_img").glob("*.jpg"))
    bundle = model.save(
        networks.init_bundle(
            bands=("red", "green", "blue"),
            classes=(ClassInfo(0, "background", "#000000"), ClassInfo(1, "crack", "#ff0000")),
            spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4),
        ),
        tmp_path / "crack.safetensors",
    )
    main(
        [
            "predict",
            str(photo),
            "--model",
            str(bundle),
            "--out",
            str(tmp_path / "o"),
            "--vector-format",
            "fgb",
        ]
    )
    with rasterio.open(tmp_path / "o" / "classes.tif") as cls, rasterio.open(photo) as src:
        assert cls.crs is None and (cls.height, cls.width) == (src.height, src.width)
    assert (tmp_path / "o" / "polygons.fgb").exists()
