"""``geounet model init`` / ``geounet model info`` through the real CLI entry points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from geounet import model
from geounet.cli import cli, main

SMALL = ["--depth", "2", "--width", "4"]


def init_args(out: Path, *extra: str) -> list[str]:
    return [
        "model",
        "init",
        "--bands",
        "red,green,blue",
        "--classes",
        "background:#000000,crack:#FF0000",
        *SMALL,
        "--out",
        str(out),
        *extra,
    ]


def test_init_then_info(tmp_path: Path) -> None:
    out = tmp_path / "crack.safetensors"
    runner = CliRunner()
    result = runner.invoke(
        cli, init_args(out, "--arch", "attention-unet", "--scale", "1/255", "--mean", "0.5")
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "receptive field 23 px" in result.output
    bundle = model.load(out)
    assert bundle.spec.arch == "attention-unet" and bundle.spec.depth == 2
    assert bundle.normalization.scale == pytest.approx(1 / 255)
    assert bundle.normalization.mean == (0.5, 0.5, 0.5)
    assert [c.color for c in bundle.classes] == ["#000000", "#ff0000"]

    result = runner.invoke(cli, ["model", "info", str(out)])
    assert result.exit_code == 0, result.output
    text = result.output
    for expected in (
        "Attention U-Net (attention-unet), depth 2, width 4",
        "red, green, blue (3, float32)",
        "0  background  #000000",
        "1  crack       #ff0000",
        "23 px radius (stride 4)",
        "tile 304 px, halo 24 px, core 256 px",
        "OK",
        "source=random-init",
    ):
        assert expected in text, expected


def test_info_json(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    runner = CliRunner()
    assert runner.invoke(cli, init_args(out, "--half", "--seed", "3")).exit_code == 0
    result = runner.invoke(cli, ["model", "info", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["checksum_ok"] is True and doc["size_bytes"] == out.stat().st_size
    meta = doc["metadata"]
    assert meta["mlm:input"][0]["bands"] == ["red", "green", "blue"]
    assert [c["name"] for c in meta["mlm:output"][0]["classification:classes"]] == ["background", "crack"]
    assert meta["geounet:weights_dtype"] == "float16" and meta["geounet:provenance"]["seed"] == 3


def test_classes_without_color_get_palette(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    args = ["model", "init", "--bands", "B1", "--classes", "a,b,c", *SMALL, "--out", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert len({c.color for c in model.load(out).classes}) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bands", "red,,blue"], "ConfigError: --bands 'red,,blue' has an empty band name"),
        (["--bands", "red,red"], "ConfigError: --bands 'red,red' repeats red"),
        (["--classes", "bg:#00000,x:#ffffff"], "ConfigError: --classes item 'bg:#00000' has color '#00000'"),
        (["--classes", "bg:#000000,bg:#ffffff"], "ConfigError: --classes 'bg:#000000,bg:#ffffff' repeats bg"),
        (["--classes", ":#000000"], "ConfigError: --classes item ':#000000' has no class name"),
        (["--mean", "1,2"], "ConfigError: --mean '1,2' has 2 values for 3 bands"),
        (["--scale", "1/0"], "ConfigError: --scale '1/0' is not a number"),
        (["--halo", "6"], "ConfigError: halo=6 must be a multiple of the model's down-sampling factor 4"),
    ],
)
def test_init_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    base = {"--bands": "red,green,blue", "--classes": "background:#000000,crack:#ff0000"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["model", "init", *[x for kv in base.items() for x in kv], *SMALL, "--out", str(tmp_path / "m.st")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "m.st").exists()


def test_info_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.safetensors"
    assert CliRunner().invoke(cli, init_args(out)).exit_code == 0
    data = bytearray(out.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    for path, message in (
        (tmp_path / "missing.safetensors", "InputNotFoundError: model bundle"),
        (bad, "BundleError: " + str(bad) + " fails its weights checksum"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["model", "info", str(path)])
        assert exc.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err


def test_verbose_shows_traceback(tmp_path: Path) -> None:
    from geounet.errors import InputNotFoundError

    with pytest.raises(InputNotFoundError):
        main(["-v", "model", "info", str(tmp_path / "missing.safetensors")])


@pytest.mark.parametrize("command", [["model"], ["model", "init"], ["model", "info"]])
def test_help_has_examples(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "geounet model" in result.output
