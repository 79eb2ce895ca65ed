"""``geounet predict``: segment a raster file into a class COG, a confidence COG and polygons."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from geounet import budget, executors, jobs, pipeline, planning
from geounet.cli.search import at_least, stac_job, stac_options
from geounet.errors import ConfigError


def _parse_outputs(value: str, *, no_polygons: bool) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if no_polygons:
        names = tuple(n for n in names if n != "polygons")
    return jobs.check_outputs(names)


def _parse_bands(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(
            f"--bands {value!r} must be comma-separated 1-based band numbers, e.g. 3,2,1"
        ) from None


def _job(
    source: str | None,
    model_path: str,
    out_dir: str,
    options: jobs.PredictOptions,
    *,
    resolution: float | None,
    crs: str | None,
    query: dict[str, Any],
) -> jobs.Job:
    """Plan SOURCE (a raster, or a STAC item JSON) or the scenes of a STAC query."""
    if query.get("stac") or (source is not None and source.endswith(".json")):
        return stac_job(source, model_path=model_path, out_dir=out_dir, options=options,
                        resolution=resolution, crs=crs, **query)  # fmt: skip
    if source is None:
        raise ConfigError("give SOURCE (a raster file or STAC item JSON) or --stac URL|CATALOG with a query")
    return planning.plan(source, model=model_path, out_dir=Path(out_dir), options=options)


def _plan_text(source: str | None, model_path: str, out_dir: str, options: jobs.PredictOptions,
               **where: Any) -> str:  # fmt: skip
    """``--dry-run``: the plan with a speed probe here, or a GPU's plan where there is none."""
    if _absent_gpu(options.device):
        return _gpu_plan(source, model_path, out_dir, options, **where)
    return planning.describe(_job(source, model_path, out_dir, options, **where), probe=True)


def _absent_gpu(device: str) -> bool:
    """``--device cuda[:N]`` on a machine whose torch sees no CUDA device."""
    import torch

    return device.startswith("cuda") and not torch.cuda.is_available()


def _gpu_plan(source: str | None, model_path: str, out_dir: str, options: jobs.PredictOptions,
              **where: Any) -> str:  # fmt: skip
    """``--dry-run --device cuda`` without a GPU: the plan a GPU with ``--memory`` would run, no probe."""
    import json

    job = _job(source, model_path, out_dir, dataclasses.replace(options, device="cpu"), **where)
    tiles, planned = planning.plan_grid(
        job.grid.shape, bundle=planning.load_bundle(model_path), options=options, device_type="cuda"
    )
    info = json.loads(planning.describe(dataclasses.replace(job, plan=tiles, options=planned)))
    return json.dumps({**info, "planned_for": f"{options.device} (no GPU here: not probed)"}, indent=2)


@click.command(
    epilog="""Example:

\b
  geounet predict RGB.byte.tif --model model.safetensors --out out/
  geounet predict scene.tif --model lc.safetensors --out out/ --tile 384 --halo 96 --merge blend
  geounet predict photo.jpg --model crack.safetensors --out out/ --device cpu --tta
  geounet predict big.tif --model lc.safetensors --out out/ --dry-run
  geounet predict --stac http://127.0.0.1:8081 --collection sentinel-2-l1c \\
      --bbox 14.55,45.86,14.57,45.88 --datetime 2015-09-09 --model s2.safetensors --out out/
  geounet predict --stac earth-search --aoi aoi.gpkg --datetime 2023-06-01/2023-06-30 \\
      --max-cloud 20 --resolution 10 --model s2.safetensors --out out/
  geounet predict big.tif --model lc.safetensors --out out/ --address ray-head:6379 --gpus-per-actor 0.5
  geounet predict big.tif --model lc.safetensors --out out/ --executor local --no-resume
  geounet predict region.tif --model lc.safetensors --out out/ --no-polygons --memory 2GB
"""
)
@click.argument("source", type=str, required=False)
@stac_options(required=False)
@click.option(
    "--resolution",
    type=float,
    default=None,
    callback=at_least(0, "give the mosaic pixel size in CRS units, e.g. --resolution 10", strict=True),
    help="STAC: mosaic grid pixel size [scenes' grid].",
)
@click.option("--crs", type=str, default=None, help="STAC: mosaic grid CRS [UTM zone of the AOI].")
@click.option(
    "--model", "model_path", required=True, type=click.Path(dir_okay=False), help="Model bundle file."
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--tile",
    type=int,
    default=None,
    callback=at_least(16, "leave --tile out for the bundle's tile, or give e.g. --tile 512"),
    help="Tile side seen by the network, px [bundle's].",
)
@click.option(
    "--halo",
    type=int,
    default=None,
    callback=at_least(0, "leave --halo out for the bundle's halo, or give e.g. --halo 64"),
    help="Context per side, px [bundle's: receptive field].",
)
@click.option(
    "--batch-size",
    type=int,
    default=8,
    show_default=True,
    help="Tiles per forward pass.",
)
@click.option("--merge", type=click.Choice(["crop", "blend"]), default="crop", show_default=True)
@click.option(
    "--blend-window", type=click.Choice(["cosine", "gaussian"]), default="cosine", show_default=True
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--tta", is_flag=True, help="Average predictions over flipped/rotated copies.")
@click.option("--bands", type=str, default=None, help="1-based input bands in the model's order, e.g. 3,2,1.")
@click.option(
    "--vector-format", type=click.Choice(list(jobs.VECTOR_FORMATS)), default="gpkg", show_default=True
)
@click.option(
    "--min-area",
    type=float,
    default=0.0,
    show_default=True,
    callback=at_least(0, "use 0 to keep every polygon"),
    help="Drop polygons smaller (map units²).",
)
@click.option(
    "--simplify",
    type=float,
    default=None,
    callback=at_least(0, "leave --simplify out for half a pixel"),
    help="Simplify tolerance in map units [half a pixel].",
)
@click.option(
    "--executor",
    type=click.Choice(list(executors.EXECUTORS)),
    default="auto",
    envvar="GEOUNET_EXECUTOR",
    show_default=True,
    help="auto: Ray with a cluster (--address, RAY_ADDRESS) or 2+ GPUs, else in-process; "
    "ray: read tasks + U-Net actor pool; local: in-process. [env GEOUNET_EXECUTOR]",
)
@click.option(
    "--outputs",
    type=str,
    default=",".join(jobs.DEFAULT_OUTPUTS),
    show_default=True,
    help="Products to write: classes plus any of confidence, polygons, probabilities "
    "(probabilities.tif: one 0-100 % band per class), observations (observations.tif: clear "
    "valid observations per pixel of a --stac mosaic); the last two only on request.",
)
@click.option("--no-polygons", is_flag=True, help="Rasters only (same as --outputs classes,confidence).")
@click.option(
    "--memory",
    type=str,
    default="auto",
    show_default=True,
    help="Memory budget of the predict stage, e.g. 4GB; the planner picks the largest exact tile that fits "
    "[auto: 60%% of free GPU memory, or 512MB on the CPU].",
)
@click.option(
    "--address", type=str, default=None, help="Ray cluster to join (host:port, ray://…) [env RAY_ADDRESS]."
)
@click.option(
    "--actors",
    type=int,
    default=None,
    callback=at_least(1, "leave --actors out for one per GPU"),
    help="Predict actors [one per GPU, else CPUs/4].",
)
@click.option(
    "--gpus-per-actor",
    type=float,
    default=None,
    callback=at_least(0, "give a share of a GPU, e.g. --gpus-per-actor 0.5", strict=True),
    help="GPUs per actor, fractional allowed, e.g. 0.5 [1].",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Reuse the tiles a crashed run of the same job left in OUT/.geounet-run.",
)
@click.option("--dry-run", is_flag=True, help="Print the tile plan and exit.")
def predict(
    source: str | None,
    model_path: str,
    out_dir: str,
    tile: int | None,
    halo: int | None,
    batch_size: int,
    merge: str,
    blend_window: str,
    device: str,
    tta: bool,
    bands: str | None,
    vector_format: str,
    min_area: float,
    simplify: float | None,
    executor: str,
    address: str | None,
    actors: int | None,
    gpus_per_actor: float | None,
    resume: bool,
    dry_run: bool,
    outputs: str,
    no_polygons: bool,
    memory: str,
    resolution: float | None,
    crs: str | None,
    **query: Any,
) -> None:
    """Segment SOURCE (GeoTIFF, COG, JPEG2000, JPG/PNG photo, STAC item JSON) with a U-Net bundle.

    Or segment the scenes of a STAC search (--stac and --collection/--bbox/--aoi/--datetime/
    --max-cloud), read over HTTP and composited (least cloudy, then newest first) onto the
    scenes' own grid or, with --resolution, a mosaic grid of the AOI.

    Writes classes.tif and confidence.tif (COGs, same grid as SOURCE), polygons, styles,
    a STAC Item and a run manifest into --out. Tiles overlap by --halo and only each
    tile's core is kept, so the result has no seams.

    The tile size comes from --memory: the largest tile that fits, with the halo exactness
    needs (on the CPU tiles stream through the network in strips of rows, so they can be
    large). On one machine the job runs in-process; with a Ray cluster (--address) or several
    GPUs, tiles are read by Ray tasks and predicted by a pool of Ray actors. A crashed run
    rerun with the same arguments reuses the tiles it had finished.
    """
    options = jobs.PredictOptions(
        tile=tile, halo=halo, batch_size=batch_size, merge=merge, blend_window=blend_window, device=device,
        tta=tta, bands=_parse_bands(bands), vector_format=vector_format, min_area=min_area, simplify=simplify,
        memory=budget.parse_memory(memory), outputs=_parse_outputs(outputs, no_polygons=no_polygons),
    )  # fmt: skip
    where: dict[str, Any] = {"resolution": resolution, "crs": crs, "query": query}
    if dry_run:
        click.echo(_plan_text(source, model_path, out_dir, options, **where))
        return
    job = _job(source, model_path, out_dir, options, **where)
    results = executors.results_fn(executor, address=address, actors=actors, gpus_per_actor=gpus_per_actor,
                                   key="--executor")  # fmt: skip
    written = pipeline.run(job, results=results, resume=resume)
    for name, path in written.items():
        click.echo(f"{name:12s} {path}")
