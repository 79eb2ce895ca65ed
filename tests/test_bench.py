"""Smoke runs of every benchmark at tiny sizes: they run, print, and append their row (no timing asserts)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is beside the package, not in it

from bench import baseline, common, efficiency, flops, gpu, scaling, vectorize


@pytest.fixture
def results(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the results log at a temp file (the real bench/RESULTS.md stays untouched)."""
    path = tmp_path / "RESULTS.md"
    monkeypatch.setenv("GEOUNET_BENCH_RESULTS", str(path))
    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One input cache for all smoke runs (building inputs decodes the JPEG2000 scene)."""
    return tmp_path_factory.mktemp("bench-work")


def _rows(path: Path, name: str) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.startswith("| 20") and f"| {name} |" in ln]


def test_mirror_scene_tiles_the_real_scene(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    scene, _ = common.real_scene()
    path = common.mirror_scene(900, 1700, workdir=tmp_path)
    with rasterio.open(path) as ds:
        assert ds.shape == (900, 1700) and ds.count == 4 and ds.crs is not None
        assert ds.descriptions == common.S2_BANDS
        big = ds.read()
    np.testing.assert_array_equal(big[:, :768, :1536], scene)
    np.testing.assert_array_equal(big[:, 768:900, :1536], scene[:, ::-1][:, :132])  # reflected rows
    np.testing.assert_array_equal(big[:, :768, 1536:], scene[:, :, ::-1][:, :, :164])  # reflected cols
    assert common.mirror_scene(900, 1700, workdir=tmp_path) == path  # cached


def test_append_result_writes_a_dated_row_with_the_machine(results: Path) -> None:
    common.append_result("demo", settings={"a": 1}, results={"x": "2 | 3"})
    common.append_result("demo", settings={"a": 2}, results={"x": 4})
    text = results.read_text()
    assert text.startswith("# Benchmark results")
    rows = _rows(results, "demo")
    assert len(rows) == 2 and common.cpu_model() in rows[0] and "torch" in rows[0]
    assert rows[0].count(" | ") == 4  # five cells: a '|' inside a value is escaped


def test_efficiency_smoke(results: Path, workdir: Path) -> None:
    args = efficiency.parser().parse_args(
        [
            "--size",
            "200",
            "--width",
            "2",
            "--depth",
            "1",
            "--repeats",
            "1",
            "--profile",
            "--workdir",
            str(workdir),
        ]
    )
    out = efficiency.run(args)
    assert out["ratio"] > 0
    assert out["settings"]["tiles"] >= 1
    row = _rows(results, "efficiency")[0]
    assert "ratio (b)/(a)" in row and "vectorize polygons" in row  # the stage profile made it in


def test_vectorize_smoke(results: Path, workdir: Path) -> None:
    args = vectorize.parser().parse_args(
        [
            "--size",
            "300",
            "--repeats",
            "1",
            "--block",
            "128",
            "--workers",
            "1",
            "2",
            "--workdir",
            str(workdir),
        ]
    )
    out = vectorize.run(args)
    assert out["settings"]["polygons"] > 100  # real structure, every variant gave exactly this many
    assert [r["variant"] for r in out["rows"]] == ["gdal", "geounet w=1", "geounet w=2"]
    row = _rows(results, "vectorize")[0]
    assert "geounet w=2/gdal" in row and "polygons=" in row


def test_flops_counts_a_conv(results: Path) -> None:
    import torch

    conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)
    assert flops.count(conv, (1, 2, 8, 8)) == 2 * 2 * 3 * 9 * 64  # 2 FLOPs per multiply-add
    assert (
        flops.main(["--widths", "2", "--depth", "1", "--tile", "64", "--batch", "1", "--repeats", "1"]) == 0
    )
    assert len(_rows(results, "flops")) == 1


def test_baseline_smoke(results: Path, workdir: Path) -> None:
    args = baseline.parser().parse_args(
        [
            "--in-process",
            "--size",
            "200",
            "--width",
            "8",
            "--depth",
            "2",
            "--tile",
            "96",
            "--repeats",
            "1",
            "--workdir",
            str(workdir),
        ]
    )
    out = baseline.run(args)
    # geounet's overlap tiles reproduce the whole-image prediction; the naive loop has seams.
    assert out["errors"]["geounet"] < 0.001
    assert out["errors"]["naive"] > out["errors"]["geounet"]
    assert "speed geounet/naive" in _rows(results, "baseline")[0]


def test_scaling_smoke(results: Path, workdir: Path) -> None:
    args = scaling.parser().parse_args(
        [
            "--no-overhead",
            "--actors",
            "1",
            "--nodes",
            "1",
            "--cpus-per-node",
            "1",
            "--size",
            "128",
            "--width",
            "2",
            "--depth",
            "1",
            "--tile",
            "64",
            "--batch",
            "1",
            "--repeats",
            "1",
            "--workdir",
            str(workdir),
        ]
    )
    out = scaling.run(args)
    assert [r["actors"] for r in out["rows"]] == [1]
    assert "overhead bound" in _rows(results, "scaling")[0]


def test_per_tile_excludes_the_first_batch() -> None:
    # 10 tiles; the first batch (2 tiles) arrived after 5 s of start-up, the last 4 s later.
    assert scaling.per_tile((9.0, 4.0, 10, 2)) == pytest.approx(0.5)
    assert scaling.per_tile((9.0, None, 10, 10)) == pytest.approx(0.9)  # one batch: wall per tile


def test_gpu_skips_cleanly_without_cuda(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: bench.gpu runs for real here (python -m bench.gpu)")
    assert gpu.run(gpu.parser().parse_args(["--workdir", str(tmp_path)])) is None
    assert "skipped" in capsys.readouterr().out
    assert not results.exists()


def test_memory_smoke(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench.memory on a tiny mirror-tiled input, the whole predict (rasters + publish), no row logged."""
    from bench import memory

    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    memory.main(
        ["--sizes", "300", "--executors", "local", "--publish", "--no-log", "--tile", "128", "--halo", "32"]
    )
    out = capsys.readouterr().out
    assert "size=300x300" in out and "executor=local" in out
    peak = int(out.split("peak_rss_sum_mb=")[1].split()[0])
    assert peak > 0
