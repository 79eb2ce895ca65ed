"""Run/monitor configs: the shipped YAMLs load; typos and bad values fail in one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from geounet.config import (
    MonitorConfig,
    RunConfig,
    load_monitor_config,
    load_run_config,
)
from geounet.errors import ConfigError, InputNotFoundError
from geounet.overrides import parse_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUNS = ["region-landcover.yaml", "region-landcover-pc.yaml", "demo.yaml"]


@pytest.mark.parametrize("name", RUNS)
def test_shipped_run_configs_load(name: str) -> None:
    cfg = load_run_config(CONFIGS / name)
    assert isinstance(cfg, RunConfig) and cfg.outputs.dir


def test_shipped_monitor_config_loads(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOUNET_DATA", str(data_dir))
    cfg = load_monitor_config(CONFIGS / "crop-monitoring.yaml")
    assert isinstance(cfg, MonitorConfig)
    assert cfg.parcels.file == data_dir / "parcels" / "aze_beylagan_crop_parcels.geojson"
    assert cfg.parcels.file.exists() and cfg.bands.mask_kind == "scl"


def test_presets_differ_only_in_source_and_output() -> None:
    es = load_run_config(CONFIGS / "region-landcover.yaml").model_dump()
    pc = load_run_config(CONFIGS / "region-landcover-pc.yaml").model_dump()
    diff = {k for k in es if es[k] != pc[k]}
    assert diff == {"stac", "outputs"}
    assert (es["stac"]["source"], pc["stac"]["source"]) == ("earth-search", "planetary-computer")


def _write(tmp: Path, cfg: dict) -> Path:
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _base() -> dict:
    return yaml.safe_load((CONFIGS / "region-landcover.yaml").read_text())


def test_a_typo_fails_with_the_field_path(tmp_path: Path) -> None:
    cfg = _base()
    cfg["predict"]["hallo"] = 32
    with pytest.raises(ConfigError, match=r"unknown field predict\.hallo=32; check its spelling"):
        load_run_config(_write(tmp_path, cfg))


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("predict.batch_size=0", r"predict\.batch_size=0: Input should be greater than or equal to 1"),
        ("predict.tile=64", r"predict: tile=64 must be > 2\*halo=64"),
        ("stac.max_cloud=120", r"stac\.max_cloud=120: Input should be less than or equal to 100"),
        ("aoi.file=x.gpkg", r"aoi: give exactly one of bbox, file, wkt \(got \['bbox', 'file'\]\)"),
        ("aoi.bbox=[10, 50, 9, 51]", r"aoi: bbox \[10.0, 50.0, 9.0, 51.0\] must be west<east"),
        ("execution.executor=dask", r"execution\.executor='dask': Input should be 'auto', 'ray' or 'local'"),
    ],
)
def test_bad_values_fail_in_one_line(tmp_path: Path, override: str, pattern: str) -> None:
    cfg = _base()
    cfg["predict"]["halo"] = 32
    with pytest.raises(ConfigError, match=pattern) as err:
        load_run_config(_write(tmp_path, cfg), overrides=parse_overrides([override]))
    assert "\n" not in str(err.value) and "--set" in str(err.value)


def test_missing_field_and_bad_yaml(tmp_path: Path) -> None:
    cfg = _base()
    del cfg["model"]
    with pytest.raises(ConfigError, match=r"model is required"):
        load_run_config(_write(tmp_path, cfg))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_run_config(bad)
    with pytest.raises(InputNotFoundError, match="not found"):
        load_run_config(tmp_path / "nope.yaml")


def test_set_overrides_nested_values(tmp_path: Path) -> None:
    cfg = load_run_config(
        CONFIGS / "region-landcover.yaml",
        overrides=parse_overrides(["predict.halo=48", "stac.collections=[a, b]", "grid.crs=EPSG:3035"]),
    )
    assert cfg.predict.halo == 48 and cfg.stac.collections == ["a", "b"] and cfg.grid.crs == "EPSG:3035"
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_overrides(["predict.halo"])
    with pytest.raises(ConfigError, match=r"--set name\.x: name .* is not a section"):
        load_run_config(CONFIGS / "region-landcover.yaml", overrides={"name.x": 1})


@given(st.integers(min_value=16, max_value=2048), st.integers(min_value=0, max_value=1024))
def test_tile_halo_rule(tile: int, halo: int) -> None:

    from geounet.config import PredictSection

    if tile > 2 * halo:
        assert PredictSection(tile=tile, halo=halo).tile == tile
    else:
        with pytest.raises(ValueError, match="must be > 2\\*halo"):
            PredictSection(tile=tile, halo=halo)
