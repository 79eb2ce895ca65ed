"""Land cover over a whole region: AOI + dates → STAC search → scene choice → one mosaic.

``geounet run configs/region-landcover.yaml`` (or ``python -m workflows.region_landcover``):

1. the AOI (bbox, GeoJSON/GPKG file or WKT) and the date window are searched in a STAC API or
   static catalog (:func:`geounet.search.scenes`) for scenes holding the model's bands;
2. scenes are chosen greedily, least cloudy first then newest (:func:`geounet.scenes.order`),
   keeping only those that add AOI area not covered yet; the coverage and the part of the
   AOI that no scene covers are reported (and written as ``uncovered.geojson``);
3. the target grid is the AOI's bounds in the UTM zone of its centroid (or ``grid.crs``);
4. every tile that touches the AOI is read from the chosen scenes (composited, reprojected),
   predicted by the local or Ray executor, and written into ONE mosaic COG with nodata
   outside the AOI; polygons, the per-class area table, the STAC Item, the QGIS project and
   the quicklook follow (:func:`geounet.pipeline.run` → :func:`geounet.publish.products`).

``--dry-run`` (:func:`describe`) prints the scenes, coverage, tile count, pixels and a time
estimate per CPU/GPU without reading a pixel.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from geounet import atomic, executors, pipeline, planning, search
from geounet import model as model_mod
from geounet.config import ExecutionSection, RunConfig, load_run_config
from geounet.errors import ConfigError, SearchError
from geounet.jobs import DEFAULT_OUTPUTS, Job, TileResult
from geounet.scenes import order
from geounet.search import Scene
from geounet.tiling import tile_halo_problem

log = logging.getLogger(__name__)

#: A scene is kept only if it adds at least this share of the AOI's area.
MIN_GAIN = 1e-4


@dataclass(frozen=True)
class Coverage:
    """How much of the AOI the chosen scenes cover (areas in the target CRS, m²)."""

    aoi_m2: float
    covered_m2: float
    uncovered: BaseGeometry  # in lon/lat
    gains: tuple[tuple[str, float], ...] = ()  # (scene id, share of the AOI it added)

    @property
    def fraction(self) -> float:
        """Covered share of the AOI, 0..1."""
        return self.covered_m2 / self.aoi_m2 if self.aoi_m2 > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (also in the run manifest)."""
        return {
            "aoi_km2": round(self.aoi_m2 / 1e6, 4),
            "covered_km2": round(self.covered_m2 / 1e6, 4),
            "covered_percent": round(100 * self.fraction, 3),
            "uncovered_km2": round((self.aoi_m2 - self.covered_m2) / 1e6, 4),
            "scenes": [{"id": i, "added_percent": round(100 * g, 3)} for i, g in self.gains],
        }


@dataclass(frozen=True)
class RegionPlan:
    """Everything decided before reading a pixel."""

    config: RunConfig
    aoi: BaseGeometry  # lon/lat
    found: int
    scenes: tuple[Scene, ...]
    coverage: Coverage
    job: Job


@dataclass(frozen=True)
class RegionResult:
    """Paths of the outputs, the area table and the coverage of a finished run."""

    plan: RegionPlan
    outputs: dict[str, Path]
    areas: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _to_crs(geom: BaseGeometry, crs: str) -> BaseGeometry:
    from pyproj import Transformer
    from shapely.ops import transform

    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return transform(tr.transform, geom)


def choose(found: Sequence[Scene], aoi: BaseGeometry, *, crs: str) -> tuple[list[Scene], Coverage]:
    """Greedy cover of ``aoi`` (lon/lat): least cloudy first, then newest; skip scenes adding nothing.

    Areas are measured in ``crs`` (metres for a UTM grid).
    """
    area = _to_crs(aoi, crs)
    left = area
    chosen: list[Scene] = []
    gains: list[tuple[str, float]] = []
    for scene in order(found):
        if left.is_empty:
            break
        foot = _to_crs(scene.footprint, crs)
        gain = left.intersection(foot).area
        if gain / max(area.area, 1e-9) < MIN_GAIN:
            continue
        chosen.append(scene)
        gains.append((scene.id, gain / area.area))
        left = left.difference(foot)
    covered = area.area - left.area
    from pyproj import Transformer
    from shapely.ops import transform

    back = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    uncovered = transform(back.transform, left) if not left.is_empty else left
    return chosen, Coverage(aoi_m2=area.area, covered_m2=covered, uncovered=uncovered, gains=tuple(gains))


def plan(cfg: RunConfig) -> RegionPlan:
    """Search, choose scenes and plan the tiles of a region run (no pixel is read).

    Raises:
        SearchError: nothing found, or no scene touches the AOI.
        InputError, InputNotFoundError, BundleError, ConfigError: bad inputs (message has the fix).
    """
    bundle = model_mod.load(cfg.model)
    aoi = search.read_aoi(cfg.aoi.value())
    found = search.scenes(
        cfg.stac.source,
        collections=cfg.stac.collections,
        aoi=aoi,
        datetime=cfg.stac.datetime,
        max_cloud=cfg.stac.max_cloud,
        limit=cfg.stac.limit,
        bands=list(bundle.bands),
        preset=cfg.stac.preset,
    )
    grid = search.target_grid(aoi, resolution=cfg.grid.resolution, crs=cfg.grid.crs)
    assert grid.crs is not None
    chosen, coverage = choose(found, aoi, crs=grid.crs)
    if not chosen:
        raise SearchError(
            f"{len(found)} scenes found but none covers the AOI {aoi.bounds}; widen the datetime or max_cloud"
        )
    p = cfg.predict
    tile = p.tile or bundle.tile
    halo = bundle.halo if p.halo is None else p.halo
    problem = tile_halo_problem(tile, halo, align=bundle.stride, names=("predict.tile", "predict.halo"))
    if problem:  # before the search results are composited: fail fast, with the config's keys
        raise ConfigError(problem)
    o = cfg.outputs
    more = {"probabilities": o.probabilities, "observations": cfg.mosaic.observations}
    outputs = (*DEFAULT_OUTPUTS, *(name for name, wanted in more.items() if wanted))
    options = p.options(
        tile=tile, halo=halo, vector_format=o.vector_format, simplify=o.simplify, min_area=o.min_area,
        resampling=cfg.grid.resampling, outputs=outputs,
    )  # fmt: skip
    job = planning.plan_scenes(
        with_masks(chosen, cfg),
        model=cfg.model,
        out_dir=cfg.outputs.dir,
        options=options,
        grid=grid,
        aoi=_to_crs(aoi, grid.crs),
        source=f"{cfg.stac.source} ({len(chosen)} scenes)",
    )
    job = replace(
        job,
        extra={
            **job.extra,
            "composite": cfg.mosaic.composite,  # the per-pixel rule the chip reader applies
            "id": cfg.name,
            "workflow": "region-landcover",
            "config": cfg.model_dump(mode="json"),
            "coverage": coverage.to_dict(),
        },
    )
    return RegionPlan(config=cfg, aoi=aoi, found=len(found), scenes=tuple(chosen), coverage=coverage, job=job)


def with_masks(chosen: Sequence[Scene], cfg: RunConfig) -> list[Scene]:
    """The scenes with the config's ``mosaic.masks`` rule, or without quality assets when disabled."""
    rule = cfg.mosaic.masks.rule()
    return [replace(s, mask_rule=rule) if rule is not None else replace(s, masks=()) for s in chosen]


def tiles_in_aoi(rp: RegionPlan) -> int:
    """Tiles whose core touches the AOI (the others are written as nodata without reading)."""
    from shapely.geometry import box

    job = rp.job
    return sum(1 for t in job.plan if job.aoi.intersects(box(*job.grid.window_grid(t.core).bounds)))


def describe(rp: RegionPlan) -> str:
    """The ``--dry-run`` report: scenes, coverage, tiles, pixels, a time estimate."""
    job, cov = rp.job, rp.coverage
    active = tiles_in_aoi(rp)
    mpx = active * job.plan.size**2 / 1e6
    rates = rp.config.seconds_per_megapixel
    lines = [
        f"region {rp.config.name!r}: {rp.found} scenes found, {len(rp.scenes)} chosen",
        f"{'scene':<44} {'datetime':<20} {'cloud%':>7} {'adds%':>7}",
    ]
    for scene, (_, gain) in zip(rp.scenes, cov.gains, strict=True):
        when = scene.datetime.strftime("%Y-%m-%d %H:%M") if scene.datetime else "-"
        cloud = f"{scene.cloud_cover:.1f}" if scene.cloud_cover is not None else "-"
        lines.append(f"{scene.id:<44} {when:<20} {cloud:>7} {100 * gain:>7.2f}")
    d = cov.to_dict()
    lines += [
        f"coverage: {d['covered_percent']:.2f}% of {d['aoi_km2']:.3f} km²"
        + (f"; uncovered {d['uncovered_km2']:.3f} km²" if not cov.uncovered.is_empty else ""),
        f"grid: {job.grid.rows}×{job.grid.cols} px at {job.grid.resolution[0]:g} m in {job.grid.crs} "
        f"({job.grid.rows * job.grid.cols:,} pixels)",
        f"tiles: {len(job.plan)} ({active} touch the AOI), read {job.plan.read_size} px, "
        f"core {job.plan.size} px, halo {job.plan.halo} px",
        "estimate: "
        + ", ".join(f"{kind} ~{mpx * rate:.0f} s" for kind, rate in rates.items())
        + " (one device; seconds_per_megapixel in the config)",
        f"outputs: {job.out_dir}",
    ]
    return "\n".join(lines)


def results_fn(execution: ExecutionSection) -> Callable[[Job], Iterable[TileResult]]:
    """The executor of ``execution`` (auto, in-process or Ray; see :mod:`geounet.executors`)."""
    return executors.results_fn(
        execution.executor,
        address=execution.address,
        num_cpus=execution.num_cpus,
        actors=execution.actors,
        gpus_per_actor=execution.gpus_per_actor,
        key="execution.executor",
    )


def run(cfg: RunConfig, *, progress: bool | None = None) -> RegionResult:
    """Plan and execute a region run; returns the outputs (mosaic, polygons, areas, item, project...)."""
    t0 = time.time()
    rp = plan(cfg)
    log.info("%s", describe(rp))
    outputs = pipeline.run(rp.job, results=results_fn(cfg.execution), progress=progress)
    outputs = dict(outputs)
    outputs.update(_write_coverage(rp))
    areas: list[dict[str, Any]] = []
    if "areas" in outputs:
        import csv

        with open(outputs["areas"], newline="") as f:
            areas = list(csv.DictReader(f))
    return RegionResult(plan=rp, outputs=outputs, areas=areas, seconds=time.time() - t0)


def _write_coverage(rp: RegionPlan) -> dict[str, Path]:
    """``coverage.json`` and (when some of the AOI is uncovered) ``uncovered.geojson``, atomically."""
    out = rp.job.out_dir
    paths = {"coverage": out / "coverage.json"}
    atomic.write_text(paths["coverage"], json.dumps(rp.coverage.to_dict(), indent=2) + "\n")
    if not rp.coverage.uncovered.is_empty:
        paths["uncovered"] = out / "uncovered.geojson"
        fc = {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": {"what": "AOI part no scene covers"},
                 "geometry": mapping(rp.coverage.uncovered)}
            ],
        }  # fmt: skip
        atomic.write_text(paths["uncovered"], json.dumps(fc) + "\n")
    return paths


def summary(result: RegionResult) -> str:
    """A short human summary: coverage, class areas, where the outputs are."""
    cov = result.plan.coverage.to_dict()
    lines = [
        f"region {result.plan.config.name!r} done in {result.seconds:.1f} s: "
        f"{len(result.plan.scenes)} scenes, {cov['covered_percent']:.1f}% of {cov['aoi_km2']:.2f} km² covered",
    ]
    for row in result.areas:
        if float(row["area_km2"]) > 0:
            lines.append(
                f"  {row['class_name']:<14} {float(row['area_km2']):>10.3f} km² {float(row['percent']):>6.1f}%"
            )
    for name, path in result.outputs.items():
        lines.append(f"  {name:<11} {path}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workflows.region_landcover CONFIG [--dry-run] [--set k=v ...]``."""
    import argparse

    from geounet.overrides import parse_overrides

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_run_config(args.config, overrides=parse_overrides(args.overrides))
    if args.dry_run:
        print(describe(plan(cfg)))
        return 0
    print(summary(run(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
