"""End-to-end prediction on real rasters: seam-free tiling, mirror padding, georeferencing, outputs."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from geounet import infer, jobs, merge, model, pipeline, planning, predict, read
from geounet.errors import ConfigError
from geounet.model import ClassInfo, ModelSpec, networks
from geounet.tiling import grid

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


@pytest.fixture(scope="module")
def s2_rgbn(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Brandenburg Sentinel-2 10 m bands (B02, B03, B04, B08), 1536×768, stacked."""
    img = data_dir / "s2-brandenburg-20170216" / "IMG_DATA"
    bands = [img / f"T33UUU_20170216T102101_{b}.jp2" for b in ("B02", "B03", "B04", "B08")]
    return _stack(bands, tmp_path_factory.mktemp("s2") / "s2_10m.tif")


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = ModelSpec(in_channels=4, n_classes=3, depth=3, width=8)
    bundle = networks.init_bundle(
        bands=("B02", "B03", "B04", "B08"),
        classes=CLASSES,
        spec=spec,
        normalization=model.Normalization(mean=(1000.0,) * 4, std=(500.0,) * 4),
        seed=3,
    )
    # A freshly initialised head gives near-uniform probabilities (spread ~1e-4) that would
    # hide seams below the 1e-4 tolerance; a steeper head makes the comparison meaningful.
    weights = dict(bundle.weights)
    weights["head.weight"] = weights["head.weight"] * 100
    bundle = dataclasses.replace(bundle, weights=weights)
    return model.save(bundle, tmp_path_factory.mktemp("m") / "s2.safetensors")


def _whole_image_probs(bundle_path: Path, image: np.ndarray, halo: int) -> np.ndarray:
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


@pytest.fixture(scope="module")
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


def _tiled_probs(path: Path, bundle_path: Path, *, core: int, halo: int) -> np.ndarray:
    """The pipeline's stages (plan, chip read with mirror padding, predict, core crop) over a file."""
    b = model.load(bundle_path)
    predictor = infer.Predictor(b, device="cpu", batch_size=4)
    with read.open_raster(path) as ds:
        out = np.full((len(b.classes), ds.height, ds.width), np.nan)
        for tile in grid((ds.height, ds.width), tile=core + 2 * halo, halo=halo, align=b.spec.stride):
            chip = read.chip(ds, tile, bands=(1, 2, 3, 4))
            probs = predictor.predict(model.normalize(chip.data[None], b.normalization))[0]
            out[(slice(None), *tile.core.to_slices())] = merge.crop(probs, tile)
    assert not np.isnan(out).any()
    return out


@pytest.mark.parametrize("core", [80, 112])  # neither divides 300×260
def test_crop_merge_equals_whole_image_prediction(
    s2_crop: tuple[Path, np.ndarray], small_bundle: Path, core: int
) -> None:
    path, image = s2_crop
    b = model.load(small_bundle)
    halo = model.recommended_halo(b.spec)
    assert halo >= b.receptive_field
    expected = _whole_image_probs(small_bundle, image, halo)
    assert expected.std(axis=(1, 2)).min() > 0.01, "probabilities must vary for the check to mean something"
    out = _tiled_probs(path, small_bundle, core=core, halo=halo)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert (out.argmax(0) == expected.argmax(0)).all()


def test_a_halo_below_the_receptive_field_shows_seams(
    s2_crop: tuple[Path, np.ndarray], small_bundle: Path
) -> None:
    """The negative control: the comparison above is sensitive to missing context."""
    path, image = s2_crop
    halo = model.load(small_bundle).spec.stride
    out = _tiled_probs(path, small_bundle, core=80, halo=halo)
    assert np.abs(out - _whole_image_probs(small_bundle, image, halo)).max() > 1e-4


def test_corner_tile_handed_to_the_model_is_mirrored(
    s2_rgbn: Path, small_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[np.ndarray] = []
    original, original_rows = infer.Predictor.predict, infer.Predictor.predict_rows

    def spy(self: infer.Predictor, x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return original(self, x)

    def spy_rows(self: infer.Predictor, x: np.ndarray, **kw: Any) -> Any:
        seen.append(x[None].copy())  # a streamed tile: the same chip, one at a time
        return original_rows(self, x, **kw)

    monkeypatch.setattr(infer.Predictor, "predict", spy)
    monkeypatch.setattr(infer.Predictor, "predict_rows", spy_rows)
    # The bundle's own (small) tile, so the corner tile's far side lies inside the raster.
    opts = jobs.PredictOptions(batch_size=1, tile=model.load(small_bundle).tile)
    job = planning.plan(s2_rgbn, model=small_bundle, out_dir=tmp_path / "o", options=opts)
    first = next(predict.local_results(job))  # tile 0: top-left corner
    assert first.tile.index == 0 and first.tile.padding.top == job.plan.halo
    x = seen[0][0]
    b = model.load(small_bundle)
    with rasterio.open(s2_rgbn) as src:
        n = job.plan.read_size - job.plan.halo
        raw = src.read(window=rasterio.windows.Window(0, 0, n, n)).astype(np.float32)
    h = job.plan.halo
    expected = model.normalize(np.pad(raw, ((0, 0), (h, 0), (h, 0)), mode="reflect")[None], b.normalization)[
        0
    ]
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    zero_input = model.normalize(np.zeros((1, 4, 1, 1), np.float32), b.normalization)[0, :, 0, 0]
    assert not np.isclose(x[:, :h, :h], zero_input[:, None, None]).all(), "halo must not be zero padding"


@pytest.fixture(scope="module")
def s2_run(s2_rgbn: Path, small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from geounet.cli import main

    out = tmp_path_factory.mktemp("run") / "out"
    main(["predict", str(s2_rgbn), "--model", str(small_bundle), "--out", str(out), "--batch-size", "4"])
    return out


def test_outputs_keep_the_input_grid(s2_run: Path, s2_rgbn: Path) -> None:
    with rasterio.open(s2_rgbn) as src, rasterio.open(s2_run / "classes.tif") as cls:
        assert cls.crs == src.crs
        assert cls.transform == src.transform
        assert (cls.height, cls.width) == (src.height, src.width)
        assert cls.nodata == 255 and cls.dtypes[0] == "uint8"
        values = set(np.unique(cls.read(1)).tolist())
    assert values <= {0, 1, 2}


def test_rasters_are_valid_cogs(s2_run: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    for name in ("classes.tif", "confidence.tif"):
        path = s2_run / name
        ok, errors, _warnings = cog_validate(str(path))
        assert ok, (name, errors)
        proc = subprocess.run(
            [
                "/usr/bin/python3",
                "-m",
                "osgeo_utils.samples.validate_cloud_optimized_geotiff",
                str(path),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_polygon_area_matches_pixel_count(s2_run: Path) -> None:
    import geopandas as gpd

    gdf = gpd.read_file(s2_run / "polygons.gpkg")
    with rasterio.open(s2_run / "classes.tif") as cls:
        arr = cls.read(1)
        pixel_area = abs(cls.transform.a * cls.transform.e)
        assert gdf.crs == cls.crs
    for c in CLASSES:
        raster_area = float((arr == c.id).sum()) * pixel_area
        poly_area = float(gdf.loc[gdf.class_id == c.id].geometry.area.sum())
        if raster_area == 0:
            assert poly_area == 0
            continue
        assert abs(poly_area - raster_area) / raster_area < 0.005, (c.name, poly_area, raster_area)
    assert set(gdf.class_name) <= {c.name for c in CLASSES}


def test_nodata_border_of_landsat_stays_nodata(data_dir: Path, tmp_path: Path) -> None:
    from geounet.cli import main

    src_path = data_dir / "landsat7-rgb" / "RGB.byte.tif"
    bundle = model.save(
        networks.init_bundle(
            bands=("red", "green", "blue"),
            classes=CLASSES[:2],
            spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4),
            normalization=model.Normalization(mean=(80.0,) * 3, std=(40.0,) * 3),
        ),
        tmp_path / "rgb.safetensors",
    )
    out = tmp_path / "out"
    main(["predict", str(src_path), "--model", str(bundle), "--out", str(out)])
    with rasterio.open(src_path) as src, rasterio.open(out / "classes.tif") as cls:
        invalid = src.dataset_mask() == 0
        arr = cls.read(1)
        assert cls.crs == src.crs and cls.transform == src.transform
    assert invalid.any()
    assert (arr[invalid] == 255).all(), "input nodata must be output nodata"
    assert (arr[~invalid] != 255).all(), "every valid input pixel gets a class"


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


def _job_classes(job: jobs.Job) -> np.ndarray:
    out = np.full(job.grid.shape, 254, np.uint8)
    for res in predict.local_results(job):
        assert res.classes is not None
        out[res.tile.core.to_slices()] = res.classes
    return out


@pytest.mark.parametrize("memory_mb", [64, 512])  # 64 MB: several streamed tiles; 512 MB: one
def test_default_plan_streams_and_equals_whole_image(
    s2_rgbn: Path, small_bundle: Path, tmp_path: Path, memory_mb: int
) -> None:
    """The memory-budget plan (large streamed tiles) gives the whole-image pass's classes."""
    opts = jobs.PredictOptions(device="cpu", memory=memory_mb << 20)
    job = planning.plan(s2_rgbn, model=small_bundle, out_dir=tmp_path / "o", options=opts)
    assert job.options.stream and job.plan.halo >= model.load(small_bundle).receptive_field
    assert (len(job.plan) > 1) == (memory_mb == 64)
    with rasterio.open(s2_rgbn) as src:
        image = src.read().astype(np.float32)
    expected = _whole_image_probs(small_bundle, image, job.plan.halo)
    ids = np.array([c.id for c in CLASSES], np.uint8)[expected.argmax(0)]
    classes = _job_classes(job)
    assert len(np.unique(classes)) == len(CLASSES), "the model must have real output"
    margin = np.sort(expected, axis=0)
    decided = (margin[-1] - margin[-2]) > 1e-4  # leave out float ties of the two best classes
    assert (classes[decided] == ids[decided]).all()
    assert decided.mean() > 0.99


def test_polygons_made_while_predicting_equal_those_from_the_cog(
    s2_rgbn: Path, small_bundle: Path, tmp_path: Path
) -> None:
    """The raster stage's block vectorizing gives the features publishing would make from the COG."""
    import geopandas as gpd

    from geounet import publish

    opts = jobs.PredictOptions(device="cpu", memory=64 << 20)
    job = planning.plan(s2_rgbn, model=small_bundle, out_dir=tmp_path / "a", options=opts)
    outputs = pipeline.run(job, progress=False, resume=False)
    overlapped = gpd.read_file(outputs["polygons"])
    again = publish.products(
        tmp_path / "a", classes_path=outputs["classes"], confidence_path=outputs["confidence"],
        classes=model.load(small_bundle).classes, manifest=None, polygons=True,
    )  # fmt: skip
    from_cog = gpd.read_file(again["polygons"])
    assert len(overlapped) == len(from_cog) > 100

    def ordered(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        c = gdf.geometry.representative_point()
        return (
            gdf.assign(x=c.x.round(3), y=c.y.round(3))
            .sort_values(["class_id", "x", "y"])
            .reset_index(drop=True)
        )

    a, b = ordered(overlapped), ordered(from_cog)
    np.testing.assert_array_equal(a.class_id, b.class_id)
    np.testing.assert_allclose(a.area_m2, b.area_m2)
    np.testing.assert_allclose(a.mean_confidence, b.mean_confidence)
    assert a.geometry.union_all().symmetric_difference(b.geometry.union_all()).area < 1e-6


def test_outputs_on_demand(s2_crop: tuple[Path, np.ndarray], small_bundle: Path, tmp_path: Path) -> None:
    path, _ = s2_crop
    opts = jobs.PredictOptions(device="cpu", outputs=("classes",))
    outputs = pipeline.run(planning.plan(path, model=small_bundle, out_dir=tmp_path / "c", options=opts),
                           progress=False, resume=False)  # fmt: skip
    assert "polygons" not in outputs and "confidence" not in outputs
    assert not (tmp_path / "c" / "confidence.tif").exists()
    assert not list((tmp_path / "c").glob("polygons.*"))
    assert (tmp_path / "c" / "classes.tif").exists() and (tmp_path / "c" / "item.json").exists()
    with pytest.raises(ConfigError, match="must include classes"):
        jobs.PredictOptions(outputs=("polygons",))
    with pytest.raises(ConfigError, match="'polygon' is unknown"):
        jobs.PredictOptions(outputs=("classes", "polygon"))


def test_dry_run_shows_cost_memory_and_time(s2_rgbn: Path, small_bundle: Path, tmp_path: Path) -> None:
    import json

    job = planning.plan(
        s2_rgbn, model=small_bundle, out_dir=tmp_path, options=jobs.PredictOptions(device="cpu")
    )
    info = json.loads(planning.describe(job, probe=True))
    assert info["exact"] is True and info["streamed"] is True
    assert info["network_px_per_output_px"] == pytest.approx(
        len(job.plan) * job.plan.read_size**2 / (1536 * 768), abs=1e-3
    )
    assert info["memory_estimate_mb"] > 0 and info["expected_s"] > 0 and info["model_mpx_per_s"] > 0
