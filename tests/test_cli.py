"""The command line: every command documents an example; errors are one line with exit code 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from geounet.cli import cli


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


@pytest.mark.parametrize("bad", [["predict", "x.tif", "--model", "m", "--out", "o", "--bands", "a,b"]])
def test_bad_arguments_name_the_value(bad: list[str]) -> None:
    from geounet.cli import main

    with pytest.raises(SystemExit) as exc:
        main(bad)
    assert exc.value.code == 1
