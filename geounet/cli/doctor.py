"""``geounet doctor``: check the installation (GDAL drivers, PROJ, torch, Ray, write access).

Each check prints one line, ``ok``, ``warn`` or ``FAIL``, with what was found; a failing
check adds how to fix it. The exit code is 1 when any check fails, so ``geounet doctor``
can gate a container image or a cluster node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import click

#: GDAL drivers geounet needs, and what each is for.
DRIVERS: dict[str, str] = {
    "GTiff": "reading and writing GeoTIFF",
    "COG": "writing Cloud-Optimized GeoTIFF outputs",
    "JP2OpenJPEG": "reading Sentinel-2 JPEG2000 bands",
    "GPKG": "writing GeoPackage polygons",
}

#: Free space below which the output folder gets a warning.
MIN_FREE_BYTES = 1 << 30


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ``status`` is ok, warn or fail; ``fix`` says what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""


def check_gdal() -> Check:
    """The GDAL drivers of :data:`DRIVERS` are present (through rasterio's GDAL)."""
    try:
        import rasterio

        with rasterio.Env() as env:
            drivers = env.drivers()
    except Exception as exc:  # a broken GDAL install raises anything
        return Check(
            "gdal", "fail", f"rasterio/GDAL cannot start ({exc})", "reinstall rasterio: pip install rasterio"
        )
    missing = [d for d in DRIVERS if d not in drivers]
    version = f"GDAL {rasterio.__gdal_version__}"
    if missing:
        needs = "; ".join(f"{d} for {DRIVERS[d]}" for d in missing)
        return Check(
            "gdal",
            "fail",
            f"{version} lacks driver(s) {', '.join(missing)} ({needs})",
            "install a GDAL with them: the rasterio wheel (pip install --force-reinstall rasterio) "
            "or apt-get install gdal-bin libopenjp2-7",
        )
    return Check("gdal", "ok", f"{version}, drivers {', '.join(DRIVERS)}")


def check_proj() -> Check:
    """PROJ's database is found and a UTM transform works (pyproj and GDAL's own PROJ)."""
    try:
        import pyproj
        from rasterio.crs import CRS
        from rasterio.warp import transform

        datadir = pyproj.datadir.get_data_dir()
        if not (Path(datadir) / "proj.db").exists():
            raise FileNotFoundError(f"no proj.db in {datadir}")
        xs, _ = transform(CRS.from_epsg(4326), CRS.from_epsg(32633), [15.0], [52.0])
        if abs(xs[0] - 500000.0) > 1.0:
            raise ValueError(f"EPSG:4326 → EPSG:32633 gave x={xs[0]:.1f}, expected 500000")
    except Exception as exc:
        return Check(
            "proj",
            "fail",
            f"PROJ data missing or broken ({exc})",
            "set PROJ_DATA to the folder holding proj.db (e.g. /usr/share/proj) or reinstall pyproj/rasterio",
        )
    return Check("proj", "ok", f"PROJ {pyproj.proj_version_str}, data {datadir}")


def check_torch() -> Check:
    """torch imports; reports the device predictions will use (a CPU is a warning, not a failure)."""
    try:
        import torch
    except Exception as exc:
        return Check("torch", "fail", f"torch cannot be imported ({exc})", "pip install torch")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("torch", "ok", f"torch {torch.__version__}, CUDA {torch.version.cuda}: {names}")
    return Check(
        "torch",
        "warn",
        f"torch {torch.__version__}, no CUDA GPU: predictions run on the CPU (slow on large areas)",
        "for a GPU install the CUDA build of torch and check nvidia-smi",
    )


#: What the Ray check runs in a child process (Ray's start/stop must not touch this process).
_RAY_PROBE = (
    "from geounet.distributed import RayExecutor\nfrom geounet.pool import RayOptions\n"
    "RayExecutor(RayOptions(num_cpus=1, fallback=False))._connect()\n"
    "print('ray-started')\n"
)


def check_ray(*, timeout: float = 120.0) -> Check:
    """A local Ray starts (in a child process, stopped again at its exit)."""
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RAY_PROBE], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return Check(
            "ray",
            "fail",
            f"a local Ray did not start within {timeout:.0f} s",
            "check free memory and /tmp space (Ray needs both), or use --executor local",
        )
    if done.returncode != 0 or "ray-started" not in done.stdout:
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit code {done.returncode}"
        return Check(
            "ray",
            "fail",
            f"a local Ray cannot start ({why[:300]})",
            "pip install 'ray[default]'; check /tmp space and that RAY_ADDRESS (if set) is reachable; "
            "or use --executor local",
        )
    return Check("ray", "ok", "a local Ray starts and stops")


def check_write(folder: Path) -> Check:
    """``folder`` can be created and written (a temp file is written, read back, removed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".geounet-doctor-") as f:
            f.write(b"geounet")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return Check(
            "write",
            "fail",
            f"cannot write into {str(folder)!r} ({exc.strerror or exc})",
            "choose a writable --out folder, or fix its permissions/mount",
        )
    free = shutil.disk_usage(folder).free
    detail = f"{str(folder)!r} is writable, {free / 2**30:.1f} GiB free"
    if free < MIN_FREE_BYTES:
        return Check("write", "warn", detail, "free some space: a region run needs GBs for its COGs")
    return Check("write", "ok", detail)


def run_checks(*, out: Path, ray: bool = True) -> list[Check]:
    """All checks, in order; ``ray=False`` leaves the (slowest) Ray check out."""
    checks: list[Callable[[], Check]] = [check_gdal, check_proj, check_torch]
    if ray:
        checks.append(check_ray)
    checks.append(lambda: check_write(out))
    return [c() for c in checks]


def report(checks: list[Check]) -> str:
    """One line per check (and an indented ``fix:`` line when it is not ok)."""
    lines = []
    for c in checks:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[c.status]
        lines.append(f"{mark} {c.name:<6} {c.detail}")
        if c.fix and c.status != "ok":
            lines.append(f"     {'':<6} fix: {c.fix}")
    return "\n".join(lines)


@click.command(
    epilog="""Example:

\b
  geounet doctor
  geounet doctor --out /data/outputs --no-ray
  geounet doctor --json
"""
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder whose write access and free space are checked.",
)
@click.option("--ray/--no-ray", default=True, show_default=True, help="Check that a local Ray starts.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(out: Path, ray: bool, as_json: bool) -> None:
    """Check GDAL drivers (COG, JP2OpenJPEG, GPKG), PROJ data, torch device, Ray and write access.

    Prints what is wrong and how to fix it; exits with 1 when a check fails.
    """
    checks = run_checks(out=out, ray=ray)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        click.echo(report(checks))
    if any(c.status == "fail" for c in checks):
        raise click.exceptions.Exit(1)
