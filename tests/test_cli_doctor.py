"""``geounet doctor``: every check reports, a failing check says how to fix it and exits 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from geounet.cli import cli
from geounet.cli import doctor as doctor_mod


def test_doctor_passes_here_without_ray(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["doctor", "--out", str(tmp_path / "out"), "--no-ray", "--json"])
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.output)}
    assert set(checks) == {"gdal", "proj", "torch", "write"}
    assert checks["gdal"]["status"] == "ok" and "JP2OpenJPEG" in checks["gdal"]["detail"]
    assert checks["proj"]["status"] == "ok"
    assert checks["torch"]["status"] in {"ok", "warn"}  # a CPU-only machine is a warning
    assert checks["write"]["status"] == "ok"
    assert not list((tmp_path / "out").iterdir()), "the write probe must clean up after itself"


def test_missing_gdal_driver_fails_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(doctor_mod.DRIVERS, "NoSuchDriver", "a driver nobody has")
    result = CliRunner().invoke(cli, ["doctor", "--out", str(tmp_path), "--no-ray"])
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.startswith("FAIL gdal"))
    assert "NoSuchDriver" in line and "a driver nobody has" in line
    assert "fix: install a GDAL with them" in result.output


def test_unwritable_output_fails_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(cli, ["doctor", "--out", str(blocker / "out"), "--no-ray"])
    assert result.exit_code == 1
    assert "FAIL write" in result.output and str(blocker / "out") in result.output
    assert "fix: choose a writable --out folder" in result.output


def test_broken_ray_fails_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A `ray` package that cannot be imported, first on the child's path: the probe must report it.
    fake = tmp_path / "fake" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('ray is broken on purpose')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    check = doctor_mod.check_ray(timeout=60)
    assert check.status == "fail"
    assert "ray is broken on purpose" in check.detail
    assert "pip install 'ray[default]'" in check.fix


@pytest.mark.slow
def test_ray_starts_and_the_real_command_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "geounet", "doctor", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   ray" in done.stdout
