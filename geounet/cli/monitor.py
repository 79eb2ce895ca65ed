"""``geounet monitor run|schedule CONFIG``: nightly per-parcel crop monitoring.

Exit codes a scheduler can act on: 0 done, 0 with "nothing-new", 0 with "locked" (another
run of the same monitor is in progress, so this one did nothing), 2 when a scene failed (it
stays unprocessed and is retried next run), 1 on any other error.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from geounet.errors import ConfigError, GeounetError

log = logging.getLogger("geounet.monitor")


@click.group(
    epilog="""Example:

\b
  geounet monitor run configs/crop-monitoring.yaml
  geounet monitor schedule configs/crop-monitoring.yaml --cron "0 2 * * *"
"""
)
def monitor() -> None:
    """Per-parcel NDVI, cloud screening and class fractions from the scenes that appeared since the last run."""
    logging.getLogger("pyogrio").setLevel(logging.WARNING)  # one INFO line per appended layer otherwise


_set = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable)."
)


@monitor.command(
    "run",
    epilog="""Example:

\b
  geounet monitor run configs/crop-monitoring.yaml
  geounet monitor run configs/crop-monitoring.yaml --set state.url=postgresql://geounet@db/geounet
""",
)
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@_set
def run_cmd(config: Path, overrides: tuple[str, ...]) -> None:
    """Process the new scenes once; exit 0 (done / nothing new / another run holds the lock) or 2 (a scene failed)."""
    code = _run_once(config, overrides)
    if code:
        sys.exit(code)


def _run_once(config: Path, overrides: tuple[str, ...]) -> int:
    from geounet.config import load_monitor_config
    from geounet.overrides import parse_overrides
    from workflows import crop_monitoring

    cfg = load_monitor_config(config, overrides=parse_overrides(overrides))
    result = crop_monitoring.run(cfg)
    click.echo(crop_monitoring.summary(result))
    return result.exit_code


@monitor.command(
    "schedule",
    epilog="""Example:

\b
  geounet monitor schedule configs/crop-monitoring.yaml --cron "0 2 * * *"
  geounet monitor schedule configs/crop-monitoring.yaml --cron "*/30 * * * *" --max-runs 4
""",
)
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--cron", "expr", required=True, help='Cron expression (UTC), e.g. "0 2 * * *" for 02:00 nightly.'
)
@click.option("--max-runs", type=int, default=None, help="Stop after this many runs [run forever].")
@_set
def schedule(config: Path, expr: str, max_runs: int | None, overrides: tuple[str, ...]) -> None:
    """Run the monitor on a cron schedule on this machine (a simple loop; logs each run).

    A failing run is logged and the loop goes on to the next slot; for clusters use the
    Kubernetes CronJob or the systemd timer in infra/cron/.
    """
    from croniter import croniter

    if not croniter.is_valid(expr):
        raise ConfigError(f'--cron {expr!r} is not a valid cron expression; e.g. "0 2 * * *"')
    from geounet.config import load_monitor_config
    from geounet.overrides import parse_overrides

    load_monitor_config(config, overrides=parse_overrides(overrides))  # fail now, not at 02:00
    it = croniter(expr, datetime.now(UTC))
    done = 0
    while max_runs is None or done < max_runs:
        slot = it.get_next(datetime)
        wait = (slot - datetime.now(UTC)).total_seconds()
        log.info("next run at %s (in %.0f s)", slot.isoformat(), max(wait, 0))
        if wait > 0:
            time.sleep(wait)
        started = time.time()
        try:
            code = _run_once(config, overrides)
        except GeounetError as exc:
            log.error("run failed: %s: %s", type(exc).__name__, exc)
            code = 1
        log.info("run finished with exit code %d in %.1f s", code, time.time() - started)
        done += 1
