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


# --------------------------------------------------------------------------- issue 13 benchmarks


def test_bench_doctests() -> None:
    """The examples in the benchmarks' docstrings (bench/ is outside the suite's doctest paths)."""
    import doctest

    from bench import ceiling, compare, predict_cli, proctree, runners

    for module in (common, baseline, compare, ceiling, predict_cli, proctree, runners):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_run_tree_sums_the_memory_of_all_descendants() -> None:
    """A parent that starts a child holding 300 MB: the tree's peak counts the child's memory."""
    from bench import proctree

    child = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    run = proctree.run_tree([sys.executable, "-c", parent], env=proctree.child_env())
    assert run.processes >= 2
    assert run.peak_rss_mb >= 300
    alone = proctree.run_tree([sys.executable, "-c", "pass"], env=proctree.child_env())
    assert alone.peak_rss_mb < 200 and alone.processes == 1


def test_predict_cli_uses_the_flags_it_finds_and_falls_back_without() -> None:
    from bench import predict_cli

    src, m, out = Path("s.tif"), Path("m.safetensors"), Path("o")
    new = predict_cli.PredictCli("  --outputs TEXT  classes,confidence,polygons\n  --memory SIZE\n")
    assert new.command(src, m, out, rasters_only=True)[-2:] == ["--outputs", "classes,confidence"]
    assert "--memory" in new.note and "FALLBACK" not in new.note
    flag = predict_cli.PredictCli("  --no-polygons  rasters only\n  --executor [ray|local] [default: local]")
    assert flag.command(src, m, out, rasters_only=True)[-1] == "--no-polygons"
    assert flag.command(src, m, out)[2:4] == ["geounet", "predict"]
    old = predict_cli.PredictCli("  --executor [ray|local]  ray: actors  [default: ray]\n  --dry-run")
    cmd = old.command(src, m, out, rasters_only=True, extra=["--executor", "local"])
    assert cmd[2:4] == ["bench.runners", "rasters"] and cmd[-2:] == ["--executor", "local"]
    assert old.command(src, m, out, rasters_only=True)[-1] == "ray"  # the CLI's own default
    assert "FALLBACK" in old.note


def _loop_vs_whole(tmp_path: Path, workdir: Path, bundle: Path) -> tuple[int, int]:
    from bench import compare, runners

    src = common.mirror_scene(520, 1000, workdir=workdir)  # 2 x 3 windows, the last ones past the edge
    scripted = runners.export_torchscript(bundle, tmp_path / f"{bundle.stem}.pt")
    runners.hand_loop(src, scripted, tmp_path / f"{bundle.stem}.tif")
    # the loop runs torch's default layout: compare it with the whole-image pass in that layout
    runners.whole_image(src, bundle, tmp_path / f"{bundle.stem}.npy", channels_last=False)
    reference = np.load(tmp_path / f"{bundle.stem}.npy")
    with rasterio.open(tmp_path / f"{bundle.stem}.tif") as ds:
        assert ds.profile["tiled"] and ds.shape == (520, 1000)
        loop = ds.read(1)
    compare.check_structure(compare.histogram(reference))  # several classes: a diff can show
    return compare.interior_diff(loop, reference, runners.OVERLAP // 2)


def test_hand_loop_centre_crop_is_exact_when_the_margin_covers_the_receptive_field(
    tmp_path: Path, workdir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The near-free depth-1 model (receptive-field radius < the 32-px margin): the loop's
    windows at stride 448 reproduce the whole-image pass inside; depth 3 (radius > 32): seams."""
    from bench import ceiling

    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    diff, total = _loop_vs_whole(tmp_path, workdir, ceiling.band_head_bundle(tmp_path / "d1.safetensors"))
    assert total > 0 and diff == 0
    deep = common.make_bundle(tmp_path / "d3.safetensors", width=8, depth=3)
    diff, _ = _loop_vs_whole(tmp_path, workdir, deep)
    assert diff > 0


def test_rasters_fallback_writes_the_two_cogs_and_no_polygons(
    tmp_path: Path, workdir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import runners

    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    src = common.mirror_scene(200, workdir=workdir)
    m = common.make_bundle(tmp_path / "m.safetensors", width=2, depth=1)
    runners.geounet_rasters(src, m, tmp_path / "o", executor="local")
    assert (tmp_path / "o" / "classes.tif").exists() and (tmp_path / "o" / "confidence.tif").exists()
    assert not list((tmp_path / "o").glob("polygons.*"))


@pytest.mark.slow
def test_compare_smoke(results: Path, workdir: Path) -> None:
    from bench import compare

    args = compare.parser().parse_args(
        ["--sizes", "256", "--repeats", "1", "--width", "8", "--depth", "2", "--threads", "1",
         "--executor", "local", "--no-record", "--workdir", str(workdir)]
    )  # fmt: skip
    out = compare.run(args)
    (m,) = out["measured"]
    assert {k: len(v) for k, v in m["runs"].items()} == {"loop": 1, "whole": 1, "geounet": 1, "rasters": 1}
    assert m["diffs"]["geounet"][0] == 0 and m["diffs"]["rasters"][0] == 0  # exact seams
    assert all(r.peak_rss_mb > 0 for v in m["runs"].values() for r in v)
    assert "256² geounet/loop" in out["figures"] and len(out["acceptance"]) == 3
    assert not results.exists()  # --no-record


@pytest.mark.slow
def test_ceiling_smoke(results: Path, workdir: Path) -> None:
    from bench import ceiling

    args = ceiling.parser().parse_args(
        ["--size", "256", "--repeats", "1", "--threads", "1", "--executor", "local", "--no-record",
         "--workdir", str(workdir)]
    )  # fmt: skip
    out = ceiling.run(args)
    assert out["polygons_per_mpx"] >= 20000  # the near-free model has the scene's structure
    assert out["figures"]["geounet polygons"] == out["figures"]["GDAL polygons"]  # connected components
    assert out["floors"][0].seconds > 0 and not results.exists()


@pytest.mark.slow
def test_photo_smoke(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import photo

    # The CLI's default executor via its env var: local here, so the smoke run does not start Ray.
    monkeypatch.setenv("GEOUNET_EXECUTOR", "local")
    args = photo.parser().parse_args(
        ["--repeats", "1", "--width", "4", "--depth", "2", "--threads", "1", "--no-record"]
    )
    out = photo.run(args)
    assert out["ratio"].median > 0 and len(out["runs"]["default"]) == 1
    assert not results.exists()
