"""``geounet run CONFIG``: the region land-cover workflow (one mosaic over an AOI from a STAC search)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(
    epilog="""Example:

\b
  geounet run configs/region-landcover.yaml --dry-run
  geounet run configs/region-landcover.yaml --set aoi.bbox='[13.0,52.3,13.2,52.45]'
  geounet run configs/region-landcover-pc.yaml --executor local --set stac.max_cloud=10
  ray job submit --address http://head:8265 -- geounet run configs/region-landcover.yaml
"""
)
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable)."
)
@click.option(
    "--dry-run", is_flag=True, help="Print scenes, coverage, tile count, pixels, a time estimate; exit."
)
@click.option(
    "--executor",
    type=click.Choice(["ray", "local"]),
    default=None,
    envvar="GEOUNET_EXECUTOR",
    help="Override execution.executor [config's; env GEOUNET_EXECUTOR].",
)
def run(config: Path, overrides: tuple[str, ...], dry_run: bool, executor: str | None) -> None:
    """Search scenes over the config's AOI and dates, choose those covering it (least cloudy
    first), and predict ONE land-cover mosaic COG over the AOI (nodata outside) with polygons,
    a per-class area table, a STAC Item, a QGIS project and a quicklook.
    """
    from geounet.config import load_run_config
    from geounet.overrides import parse_overrides
    from workflows import region_landcover

    values = parse_overrides(overrides)
    if executor:
        values["execution.executor"] = executor
    cfg = load_run_config(config, overrides=values)
    if dry_run:
        click.echo(region_landcover.describe(region_landcover.plan(cfg)))
        return
    click.echo(region_landcover.summary(region_landcover.run(cfg)))
