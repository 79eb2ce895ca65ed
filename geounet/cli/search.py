"""``geounet search``: list the scenes of a STAC API or static catalog that match a query.

:func:`stac_options` and :func:`run_search` are shared with the commands that read
scenes from STAC (``geounet predict --stac ...``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import click

from geounet import search as gsearch
from geounet.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
N = TypeVar("N", int, float)


def at_least(
    minimum: float, fix: str, *, strict: bool = False, most: float | None = None
) -> Callable[..., Any]:
    """A click callback that refuses values below ``minimum`` (or ``<=`` it when ``strict``)
    and above ``most`` with a one-line :class:`ConfigError` naming the flag and ``fix``.

    Example:
        >>> import click
        >>> check = at_least(1, "leave it out for the bundle's tile")
        >>> check(None, click.Option(["--tile"]), 0)
        Traceback (most recent call last):
        ...
        geounet.errors.ConfigError: --tile 0 must be >= 1; leave it out for the bundle's tile
    """

    def check(ctx: click.Context | None, param: click.Parameter, value: N | None) -> N | None:
        if value is None:
            return None
        flag = param.opts[0] if param.opts else str(param.name)
        low = value <= minimum if strict else value < minimum
        if low or (most is not None and value > most):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            if most is not None:
                bound = f"in {minimum:g}..{most:g}"
            raise ConfigError(f"{flag} {value:g} must be {bound}; {fix}")
        return value

    return check


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``"w,s,e,n"`` → floats (lon/lat).

    Example:
        >>> parse_bbox("12.5, 52.4,12.7,52.5")
        (12.5, 52.4, 12.7, 52.5)
    """
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise ConfigError(f"--bbox {text!r} must be four numbers west,south,east,north in lon/lat")
    return (values[0], values[1], values[2], values[3])


def stac_options(required: bool) -> Callable[[F], F]:
    """Click options of a STAC search (``--stac``, ``--collection``, ``--bbox``, ...)."""

    def decorate(func: F) -> F:
        options = [
            click.option(
                "--stac",
                "stac",
                required=required,
                metavar="URL|CATALOG|PRESET",
                help="STAC API root URL, static catalog.json (path or URL), or preset "
                "(earth-search, planetary-computer).",
            ),
            click.option("--collection", "collections", multiple=True, help="Collection id (repeatable)."),
            click.option("--bbox", metavar="W,S,E,N", help="Bounding box in lon/lat."),
            click.option("--aoi", metavar="FILE|WKT", help="AOI: GeoJSON/GPKG file or WKT (lon/lat)."),
            click.option(
                "--datetime",
                "datetime_",
                metavar="RANGE",
                help="Instant, partial date or interval with .. open ends: 2017, 2017-02, "
                "2017-02-16, 2017-01/2017-03, 2017-02/..",
            ),
            click.option(
                "--max-cloud",
                type=float,
                callback=at_least(0, "give a percentage, e.g. --max-cloud 20", most=100),
                help="Keep scenes with cloud cover <= this (%, 0-100).",
            ),
            click.option(
                "--limit",
                type=int,
                callback=at_least(1, "leave --limit out for every matching scene"),
                help="At most this many scenes.",
            ),
            click.option("--sortby", multiple=True, help="Sort field, '-' for descending (repeatable)."),
            click.option(
                "--filter",
                "cql2",
                metavar="CQL2",
                help='Extra CQL2-text filter, e.g. "eo:cloud_cover < 20" (APIs and static catalogs).',
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def query_kwargs(
    *,
    stac: str,
    collections: Sequence[str],
    bbox: str | None,
    aoi: str | None,
    datetime_: str | None,
    max_cloud: float | None,
    limit: int | None,
    sortby: Sequence[str],
    cql2: str | None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`geounet.search.scenes` the :func:`stac_options` describe."""
    return {
        "collections": tuple(collections),
        "bbox": parse_bbox(bbox),
        "aoi": aoi,
        "datetime": datetime_,
        "max_cloud": max_cloud,
        "limit": limit,
        "sortby": tuple(sortby),
        "filter": cql2,
    }


def run_search(*, stac: str, bands: Sequence[str] | None = None, **query: Any) -> list[gsearch.Scene]:
    """Run the search the :func:`stac_options` describe (``query``: the values :func:`query_kwargs` takes)."""
    return gsearch.scenes(stac, bands=bands, **query_kwargs(stac=stac, **query))


def stac_job(
    source: str | None,
    *,
    model_path: str,
    out_dir: str,
    options: Any,
    resolution: float | None,
    crs: str | None,
    **query: Any,
) -> Any:
    """Plan a ``predict`` job over STAC: a search (``--stac ...``) or one item JSON (``SOURCE``).

    Scenes are searched with the model's bands. Without ``resolution`` the target is the
    scenes' own grid; with it, the grid of the AOI/bbox (or of the scenes' footprints) in
    ``crs`` (default: UTM of its centroid), and pixels outside the AOI/bbox are nodata.
    """
    from pyproj import Transformer
    from shapely import ops, union_all
    from shapely.geometry import box

    from geounet import harmonize, model, planning

    bundle = model.load(model_path)
    bands = bundle.bands
    if query.get("stac"):
        found = run_search(bands=bands, **query)
        label = str(query["stac"])
    elif source is not None:
        found = [gsearch.item(source, bands=bands)]
        label = source
    else:
        raise ConfigError("give SOURCE (a raster file or STAC item JSON) or --stac URL|CATALOG with a query")
    grid = aoi = None
    if resolution is not None:
        bbox = parse_bbox(query.get("bbox"))
        if query.get("aoi"):
            area = gsearch.read_aoi(query["aoi"])
        else:
            area = box(*bbox) if bbox else union_all([s.footprint for s in found])
        grid = gsearch.target_grid(area, resolution=resolution, crs=crs)
        to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform
        aoi = ops.transform(to_grid, area)
    elif crs is not None:
        raise ConfigError(f"--crs {crs} needs --resolution (the target grid's pixel size in CRS units)")
    job = planning.plan_scenes(
        found, model=model_path, out_dir=out_dir, options=options, grid=grid, aoi=aoi, source=label
    )
    # one resampling default everywhere: what the bundle's training data was read with
    return replace(job, extra={**job.extra, "resampling": harmonize.resampling(bundle.provenance)})


def _table(found: Sequence[gsearch.Scene]) -> str:
    rows = [("id", "datetime", "cloud %", "crs", "bands")]
    for s in found:
        when = s.datetime.strftime("%Y-%m-%d %H:%M:%S") if s.datetime else "-"
        cloud = f"{s.cloud_cover:.1f}" if s.cloud_cover is not None else "-"
        rows.append((s.id, when, cloud, s.crs or "-", ",".join(s.band_names)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    return "\n".join(lines)


@click.command(
    "search",
    epilog="""Example:

\b
  geounet search --stac http://127.0.0.1:8081 --collection sentinel-2-l1c \\
      --bbox 14.55,45.86,14.57,45.88 --datetime 2015-07-01/2015-09-30 --max-cloud 10
  geounet search --stac earth-search --bbox 12.5,52.4,12.7,52.5 --datetime 2023-06-01/2023-06-30 --json
  geounet search --stac catalog/catalog.json --aoi aoi.gpkg --bands B02,B03,B04,B08
""",
)
@stac_options(required=True)
@click.option("--bands", metavar="B1,B2,...", help="Model bands: resolve and show their assets.")
@click.option("--json", "as_json", is_flag=True, help="Print a STAC ItemCollection (GeoJSON) for STAC tools.")
def search(as_json: bool, bands: str | None, **query: Any) -> None:
    """Search a STAC API or static catalog; print the matching scenes."""
    band_list = tuple(b.strip() for b in bands.split(",")) if bands else None
    if as_json:
        found = gsearch.search_items(query["stac"], **query_kwargs(**query))
        for it in found:  # fail like the table does when an item lacks one of --bands
            gsearch.from_item(it, bands=band_list)
        click.echo(gsearch.to_json(found))
        return
    scenes = run_search(bands=band_list, **query)
    click.echo(_table(scenes))
    click.echo(f"{len(scenes)} scene(s)", err=True)
