"""Training on real data with tiny models: loss goes down, --resume is exact, fine-tuning, Ray Train, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from geounet import checkpoint, datasets, evaluate, model, train
from geounet.cli import cli
from geounet.config import TrainConfig, load_train_config
from geounet.errors import ConfigError, InputNotFoundError
from geounet.model import networks

REPO = Path(__file__).resolve().parents[1]
CRACK = REPO / "configs" / "train-crack-uav75.yaml"
LANDCOVER = REPO / "configs" / "train-landcover-brandenburg.yaml"

TINY: dict[str, Any] = {
    "data.train.limit": 3,
    "data.val.limit": 1,
    "model.depth": 2,
    "model.width": 8,
    "train.chip": 64,
    "train.batch_size": 4,
    "train.lr": 0.01,
    "train.warmup": 2,
    "train.threads": 1,
}


def _cfg(data_dir: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch, **over: Any) -> TrainConfig:
    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    return load_train_config(CRACK, overrides={**TINY, "output": str(tmp), **over})


@pytest.fixture(scope="module")
def crack_data(data_dir: Path) -> datasets.Data:
    mp = pytest.MonkeyPatch()
    mp.setenv("GEOUNET_DATA", str(data_dir))
    cfg = load_train_config(CRACK, overrides=TINY)
    mp.undo()
    return datasets.load_data(cfg)


def test_recipes_parse_and_expand_geounet_data(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    lc = load_train_config(LANDCOVER)
    assert lc.data.kind == "scene" and all(p.exists() for p in lc.data.bands.values())
    cr = load_train_config(CRACK)
    assert cr.data.kind == "pairs" and cr.data.train.images.is_dir()
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        load_train_config(CRACK, overrides={"train.stepz": 3})


def test_short_run_loss_goes_down_on_real_data(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crack_data: datasets.Data
) -> None:
    cfg = _cfg(data_dir, tmp_path, monkeypatch, **{"train.steps": 40, "train.eval_every": 40})
    out = train.run(cfg, data=crack_data)
    losses = json.loads((tmp_path / "checkpoint" / "state.json").read_text())["losses"]
    assert len(losses) == 40 and out.step == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])
    b = model.load(tmp_path / "model.safetensors")
    assert b.classes[1].name == "crack" and b.provenance["recipe"] == "crack-uav75"
    assert len(b.normalization.mean) == 3 and b.normalization.scale == pytest.approx(1 / 255)


def test_time_budget_stops_with_checkpoint_and_bundle(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crack_data: datasets.Data
) -> None:
    cfg = _cfg(data_dir, tmp_path, monkeypatch, **{"train.steps": 500, "train.max_minutes": 1e-6})
    out = train.run(cfg, data=crack_data)
    assert out.step == 10  # the budget is checked every 10 steps
    assert (
        out.bundle is not None
        and json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 10
    )


def test_resume_continues_with_same_step_and_optimizer_state(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crack_data: datasets.Data
) -> None:
    over = {"train.steps": 6, "train.eval_every": 100}
    straight = _cfg(data_dir, tmp_path / "a", monkeypatch, **over)
    train.run(straight, data=crack_data)
    broken = _cfg(data_dir, tmp_path / "b", monkeypatch, **over)
    first = train.run(broken, data=crack_data, stop_after=3)
    assert first.step == 3
    state3 = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state3["step"] == 3 and len(state3["losses"]) == 3
    opt3 = load_file(tmp_path / "b" / "checkpoint" / "optimizer.safetensors")
    assert float(opt3["0.step"]) == 3.0
    # the restored optimizer holds exactly the saved tensors
    net = networks.build(model.ModelSpec(3, 3, depth=2, width=8))
    opt = torch.optim.AdamW(net.parameters())
    checkpoint.load_checkpoint(tmp_path / "b", net=net, opt=opt)
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            assert torch.equal(v, opt3[f"{pid}.{k}"])
    resumed = train.run(broken, data=crack_data, resume=True)
    assert resumed.step == 6
    sa = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    sb = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert sa["losses"] == pytest.approx(sb["losses"], rel=1e-5)
    for name in ("model.safetensors", "optimizer.safetensors"):
        wa, wb = (
            load_file(tmp_path / "a" / "checkpoint" / name),
            load_file(tmp_path / "b" / "checkpoint" / name),
        )
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_ema_bundle_holds_the_average_and_resume_is_exact(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crack_data: datasets.Data
) -> None:
    over = {"train.steps": 6, "train.eval_every": 6, "train.ema": 0.5}
    straight = train.run(_cfg(data_dir, tmp_path / "a", monkeypatch, **over), data=crack_data)
    ck = tmp_path / "a" / "checkpoint"
    raw, avg = load_file(ck / "model.safetensors"), load_file(ck / checkpoint.EMA)
    saved = model.load(straight.bundle or tmp_path / "missing").weights
    key = "head.weight"
    # the bundle holds the average (AveragedModel keys its copy "module."), not the last iterate
    np.testing.assert_allclose(saved[key], avg[f"module.{key}"].numpy(), rtol=1e-6)
    assert not np.allclose(saved[key], raw[key].numpy())
    assert float(avg["n_averaged"]) == 6
    broken = _cfg(data_dir, tmp_path / "b", monkeypatch, **over)
    train.run(broken, data=crack_data, stop_after=3)
    train.run(broken, data=crack_data, resume=True)
    resumed = load_file(tmp_path / "b" / "checkpoint" / checkpoint.EMA)
    for k in avg:
        torch.testing.assert_close(avg[k], resumed[k], rtol=1e-5, atol=1e-6)
    plain = _cfg(data_dir, tmp_path / "b", monkeypatch, **{**over, "train.ema": None})
    (tmp_path / "b" / "checkpoint" / checkpoint.EMA).unlink()
    with pytest.raises(InputNotFoundError, match=r"train\.ema"):
        train.run(_cfg(data_dir, tmp_path / "b", monkeypatch, **over), data=crack_data, resume=True)
    assert train.run(plain, data=crack_data, resume=True).step == 6


def test_init_from_bundle_new_head_and_frozen_encoder(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crack_data: datasets.Data
) -> None:
    spec = model.ModelSpec(3, 2, depth=2, width=8)
    src = networks.init_bundle(
        bands=("red", "green", "blue"),
        classes=(model.ClassInfo(0, "a", "#000000"), model.ClassInfo(1, "b", "#ffffff")),
        spec=spec,
        seed=3,
    )
    path = model.save(src, tmp_path / "src.safetensors")
    cfg = _cfg(data_dir, tmp_path / "ft", monkeypatch, **{"train.steps": 3, "train.freeze_encoder_steps": 3})
    out = train.run(cfg, data=crack_data, init_bundle=path)
    tuned = model.load(out.bundle or tmp_path / "missing")
    assert tuned.spec.n_classes == 3 and tuned.weights["head.weight"].shape[0] == 3
    convs = [
        k
        for k in src.weights
        if k.startswith("encoder.") and k.endswith("weight") and src.weights[k].ndim == 4
    ]
    assert convs
    for k in convs:  # frozen encoder: convolution weights unchanged
        np.testing.assert_array_equal(tuned.weights[k], src.weights[k])
    changed = [k for k in tuned.weights if k.startswith("decoder.") and k.endswith("weight")]
    assert any(not np.array_equal(tuned.weights[k], src.weights[k]) for k in changed)
    bad = networks.init_bundle(
        bands=("a",), classes=src.classes, spec=model.ModelSpec(1, 2, depth=2, width=8)
    )
    with pytest.raises(ConfigError, match="input bands"):
        train.run(cfg, data=crack_data, init_bundle=model.save(bad, tmp_path / "bad.safetensors"))


def test_report_with_threshold_baselines_and_plots(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crack_data: datasets.Data
) -> None:
    cfg = _cfg(data_dir, tmp_path, monkeypatch, **{"train.steps": 4, "train.eval_every": 2})
    out = train.run(cfg, data=crack_data)
    assert out.bundle is not None
    doc = evaluate.report(out.bundle, cfg, out=tmp_path / "report", history=out.history, data=crack_data)
    assert {"U-Net", "threshold otsu"} <= set(doc["results"])
    r = doc["results"]["U-Net"]
    assert np.asarray(r["confusion"]).sum() == 512 * 512
    assert set(r["tolerant"]) == {"crack"}
    for f in (
        "report.md",
        "metrics.json",
        "confusion.png",
        "curves.png",
        "confusion-threshold-otsu.png",
        "confusion-threshold-adaptive.png",
    ):
        assert (tmp_path / "report" / f).stat().st_size > 0, f
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| U-Net |" in md and "tolerant" in md.lower() and "planking" in md


def test_cli_train_and_evaluate(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    runner = CliRunner()
    assert "Example:" in runner.invoke(cli, ["train", "--help"]).output
    assert "Example:" in runner.invoke(cli, ["evaluate", "--help"]).output
    sets = [
        a for k, v in {**TINY, "train.steps": 2, "train.eval_every": 2}.items() for a in ("--set", f"{k}={v}")
    ]
    res = runner.invoke(cli, ["train", str(CRACK), "--out", str(tmp_path / "run"), "--no-report", *sets])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "model.safetensors").exists()
    res = runner.invoke(
        cli,
        [
            "evaluate",
            "--model",
            str(tmp_path / "run" / "model.safetensors"),
            str(CRACK),
            "--out",
            str(tmp_path / "ev"),
            "--no-baseline",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "crack-uav75 U-Net: mIoU=" in res.output and (tmp_path / "ev" / "metrics.json").exists()


def test_cli_evaluate_image_folders(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`geounet evaluate --model M IMAGES --masks MASKS`: raw folders, classes from the bundle."""
    cfg = _cfg(data_dir, tmp_path / "run", monkeypatch, **{"train.steps": 2, "train.eval_every": 2})
    bundle = train.run(cfg).bundle
    assert bundle is not None
    src = data_dir / "crack-uav75"
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    for p in sorted((src / "val_img").iterdir())[:2]:  # links, not copies: the data stays in GEOUNET_DATA
        (imgs / p.name).symlink_to(p)
        (masks / f"{p.stem}.png").symlink_to(src / "val_lab" / f"{p.stem}.png")
    runner = CliRunner()
    base = [
        "evaluate",
        "--model",
        str(bundle),
        str(imgs),
        "--masks",
        str(masks),
        "--out",
        str(tmp_path / "ev"),
    ]
    res = runner.invoke(cli, [*base, "--mask-values", "0,255,204", "--tolerant", "crack", "--no-baseline"])
    assert res.exit_code == 0, res.output
    assert "imgs U-Net: mIoU=" in res.output and "tolerant-F1[crack]=" in res.output
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    r = doc["results"]["U-Net"]
    assert (
        r["classes"] == ["background", "crack", "planking"] and np.asarray(r["confusion"]).sum() == 2 * 512**2
    )
    assert np.asarray(r["confusion"])[1].sum() > 0  # value 255 mapped to crack
    assert "2 images as given" in (tmp_path / "ev" / "report.md").read_text()
    for extra, msg in (
        (["--mask-values", "0,255"], "2 values for the model's 3 classes"),
        (["--mask-values", "0,x,1"], "not a comma-separated list"),
        (["--tolerant", "pothole"], "'pothole' is not one of the model's classes"),
    ):
        res = runner.invoke(cli, [*base, *extra])
        assert res.exit_code != 0 and msg in res.output + str(res.exception), res.output
    res = runner.invoke(cli, ["evaluate", "--model", str(bundle), str(imgs)])
    assert res.exit_code != 0 and "give one --masks per image folder" in res.output
    b = model.load(bundle)
    with_baseline = evaluate.folder_config(b, imgs, masks, mask_values=[0, 255, 204], dark_class="crack")
    assert (
        with_baseline.evaluate.baseline == "threshold" and with_baseline.data.train == with_baseline.data.val
    )


@pytest.mark.slow
def test_ray_train_two_cpu_workers_writes_loadable_bundle(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cfg = _cfg(
        data_dir,
        tmp_path / "ray",
        monkeypatch,
        **{"train.steps": 3, "train.eval_every": 3, "data.train.limit": 2},
    )
    out = train.fit(cfg, workers=2, report=False)
    assert out.step == 3 and out.bundle is not None
    b = model.load(out.bundle)
    net = networks.module_from_bundle(b)
    assert tuple(net(torch.zeros(1, 3, 64, 64)).shape) == (1, 3, 64, 64)
    state = json.loads((tmp_path / "ray" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3


def test_committed_landcover_bundle_matches_its_recipe(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    cfg = load_train_config(LANDCOVER)
    b = model.load(REPO / "geounet" / "data" / "landcover-brandenburg.safetensors")
    assert b.bands == tuple(cfg.data.bands) and [c.name for c in b.classes] == [
        c.name for c in cfg.data.classes
    ]
    assert 16 <= b.spec.width <= 32 and b.normalization.scale == pytest.approx(1e-4)
    prov = b.provenance["val_metrics_vs_baseline"]
    assert prov["U-Net"]["miou"] > prov["RandomForest"]["miou"]
    assert "OpenStreetMap" in (REPO / "geounet" / "data" / "MODEL_CARD.md").read_text()
