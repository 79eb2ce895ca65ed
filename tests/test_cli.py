"""The command line: every command documents an example; errors are one line with exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from geounet.cli import cli


def torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _all_commands(
    group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        found.append((*prefix, name))
        if isinstance(cmd, click.Group):
            found.extend(_all_commands(cmd, ctx, (*prefix, name)))
    return found


def test_top_level_help_lists_every_command_with_an_example() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    for name in cli.list_commands(click.Context(cli)):
        assert name in result.output


def test_every_sub_command_help_shows_an_example() -> None:
    commands = _all_commands(cli, click.Context(cli))
    assert ("predict",) in commands and ("model", "init") in commands
    for path in commands:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output, f"`geounet {' '.join(path)} --help` has no example"


def _predict_missing(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`geounet [flags] predict` on a file that does not exist, in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "geounet", *flags, "predict", str(tmp_path / "missing.tif"), "--model",
         str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )  # fmt: skip


def test_geounet_error_is_one_line_and_exit_code_1(tmp_path: Path) -> None:
    proc = _predict_missing(tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "does not exist" in lines[0] and "Traceback" not in proc.stderr


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    proc = _predict_missing(tmp_path, "-v")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr


@pytest.fixture(scope="module")
def real_input(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real raster and a real model, so an exit code 1 can only come from the flag under test."""
    from geounet import model
    from geounet.model import ClassInfo, ModelSpec, networks

    bundle = networks.init_bundle(
        bands=("red", "green", "blue"),
        classes=(ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ffffff")),
        spec=ModelSpec(in_channels=3, n_classes=2, depth=2, width=4),
    )
    path = model.save(bundle, tmp_path_factory.mktemp("cli-model") / "m.safetensors")
    return data_dir / "landsat7-rgb" / "RGB.byte.tif", path


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        ("a,b", "--bands 'a,b' must be comma-separated 1-based band numbers, e.g. 3,2,1"),
        ("1,2", "--bands 1,2 must name 3 band(s) in 1..3 for the model's bands red,green,blue"),
        ("1,2,9", "--bands 1,2,9 must name 3 band(s) in 1..3"),
    ],
)
def test_bad_bands_name_the_value(
    real_input: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bands: str,
    message: str,
) -> None:
    from geounet.cli import main

    scene, bundle = real_input
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(scene), "--model", str(bundle), "--out", str(out), "--bands", bands])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_the_same_call_with_good_bands_runs(real_input: tuple[Path, Path], tmp_path: Path) -> None:
    """The control of the test above: its input and model are fine."""
    from geounet.cli import main

    scene, bundle = real_input
    main(["predict", str(scene), "--model", str(bundle), "--out", str(tmp_path), "--bands", "3,2,1"])
    assert (tmp_path / "classes.tif").exists()


def test_predict_dry_run_prints_the_tile_plan_and_writes_nothing(
    real_input: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from geounet.cli import main

    scene, bundle = real_input
    out = tmp_path / "o"
    main(["predict", str(scene), "--model", str(bundle), "--out", str(out), "--tile", "96", "--halo", "16",
          "--bands", "3,2,1", "--dry-run"])  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    # the Landsat scene is 718 rows × 791 cols; cores of 96 - 2*16 = 64 px
    assert plan["grid"]["rows"] == 718 and plan["grid"]["cols"] == 791 and plan["pixels"] == 718 * 791
    assert (plan["tile_rows"], plan["tile_cols"], plan["tiles"]) == (12, 13, 156)
    assert (plan["tile"], plan["core"], plan["halo"], plan["bands"]) == (96, 64, 16, [3, 2, 1])
    assert plan["grid"]["crs"] == "EPSG:32618" and plan["merge"] == "crop" and plan["source"] == str(scene)
    assert not out.exists()


@pytest.mark.skipif(torch_cuda_available(), reason="plans a GPU where there is none")
def test_dry_run_plans_a_gpu_without_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13, acceptance 2: network px per output px of the default plans of a 6000² scene."""
    import json

    import rasterio
    from affine import Affine

    from geounet import model
    from geounet.cli import main
    from geounet.model import ClassInfo, ModelSpec, networks

    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=6000, height=6000, count=1, dtype="uint16",
                       tiled=True, sparse_ok=True, crs="EPSG:32633",
                       transform=Affine(10, 0, 300000, 0, -10, 5900000)):  # fmt: skip
        pass  # a sparse file: the plan needs the grid only
    spec = ModelSpec(in_channels=1, n_classes=2, depth=4, width=16)
    bundle = networks.init_bundle(bands=["nir"], classes=(ClassInfo(0, "a", "#000000"), ClassInfo(1, "b", "#ffffff")),
                                  spec=spec, seed=0)  # fmt: skip
    path = model.save(bundle, tmp_path / "m.safetensors")
    args = [
        "predict",
        str(scene),
        "--model",
        str(path),
        "--out",
        str(tmp_path / "o"),
        "--bands",
        "1",
        "--dry-run",
    ]
    main([*args, "--device", "cuda", "--memory", "48GB"])  # 60% of an 80 GB GPU
    gpu = json.loads(capsys.readouterr().out)
    assert gpu["planned_for"].startswith("cuda") and gpu["exact"] and not gpu["streamed"]
    assert gpu["network_px_per_output_px"] <= 1.15 and gpu["memory_estimate_mb"] <= 48 * 1024
    main([*args, "--device", "cpu"])
    cpu = json.loads(capsys.readouterr().out)
    assert cpu["exact"] and cpu["streamed"] and cpu["network_px_per_output_px"] <= 1.35
    with pytest.raises(SystemExit):
        main([*args, "--device", "cuda"])
    assert "ConfigError" in (err := capsys.readouterr().err) and "pass --memory, e.g. --memory 48GB" in err
    assert not (tmp_path / "o").exists()


_ENTRY = """
import atexit, sys
atexit.register(lambda: print("atexit ran", flush=True))
sys.argv = ["geounet", *sys.argv[1:]]
from geounet.cli import entry
entry()
"""


def test_the_command_exits_quickly_after_success_and_normally_after_an_error(
    real_input: tuple[Path, Path], tmp_path: Path
) -> None:
    """entry() ends a successful command with os._exit (no teardown: atexit hooks do not run) once its
    output is flushed; an error takes the ordinary exit, with its one-line message and exit code 1."""
    _, bundle = real_input
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ok = subprocess.run(
        [sys.executable, "-c", _ENTRY, "model", "info", str(bundle)], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert "red" in ok.stdout and "atexit ran" not in ok.stdout  # all printed; the teardown skipped
    bad = subprocess.run(
        [sys.executable, "-c", _ENTRY, "model", "info", str(tmp_path / "missing.safetensors")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1 and "missing.safetensors" in bad.stderr
    assert "atexit ran" in bad.stdout
