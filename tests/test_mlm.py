"""``geounet model export-stac``: the bundle as a STAC MLM Item, validated by stac-model and pystac."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pystac
import pytest
from pystac.extensions.mlm import MLMExtension

from geounet import mlm, model, stac_validate
from geounet.errors import ConfigError, InputError
from geounet.model import ClassInfo, ModelSpec, networks

CONVENTION = {"input_convention": {"value_scaling": [{"type": "scale", "value": 0.0001}]}}


@pytest.fixture
def bundle_path(tmp_path: Path) -> Path:
    bundle = networks.init_bundle(
        bands=["B02", "B03", "B04", "B08"], classes=[ClassInfo(0, "water", "#1f78b4"), ClassInfo(1, "forest", "#33a02c")],
        spec=ModelSpec(in_channels=4, n_classes=2, depth=2, width=4), tile=128, halo=16, provenance=CONVENTION,
    )  # fmt: skip
    return model.save(bundle, tmp_path / "lc.safetensors")


def test_export_stac_writes_a_valid_mlm_item(
    bundle_path: Path, capsys: pytest.CaptureFixture[str], stac_schemas: dict[str, dict]
) -> None:
    from geounet.cli import main

    main(["model", "export-stac", str(bundle_path)])
    written = Path(capsys.readouterr().out.strip())
    assert written == bundle_path.with_suffix(".json")
    data = json.loads(written.read_text())
    used = mlm.validate(data, schemas=stac_schemas)
    assert any("item.json" in u for u in used) and any("stac-model" in u for u in used)
    assert mlm.FILE_SCHEMA in used  # the published file extension schema (pystac-ext-file's)
    item = pystac.Item.from_dict(data)
    props = item.properties
    assert props["mlm:input"][0]["bands"] == ["B02", "B03", "B04", "B08"]
    assert [c["name"] for c in props["mlm:output"][0]["classification:classes"]] == ["water", "forest"]
    assert props["geounet:input_convention"]["value_scaling"] == [{"type": "scale", "value": 0.0001}]
    asset = item.assets["model"]
    assert (written.parent / asset.href).resolve() == bundle_path.resolve()
    assert asset.extra_fields["file:size"] == bundle_path.stat().st_size
    assert (
        asset.extra_fields["file:checksum"] == "1220" + hashlib.sha256(bundle_path.read_bytes()).hexdigest()
    )
    assert any("/mlm/" in e for e in item.stac_extensions) and any(
        "/file/" in e for e in item.stac_extensions
    )


def test_broken_mlm_items_are_caught_by_the_package_schema(
    bundle_path: Path, stac_schemas: dict[str, dict]
) -> None:
    good = mlm.item(model.load(bundle_path), bundle_path).to_dict()
    mlm.validate(good, schemas=stac_schemas)
    bad = copy.deepcopy(good)
    bad["assets"]["model"]["file:size"] = -1
    with pytest.raises(
        InputError,
        match=re.escape(
            "breaks https://stac-extensions.github.io/file/v2.1.0/schema.json at assets/model/file:size"
        ),
    ):
        mlm.validate(bad, schemas=stac_schemas)
    for key, value in (("mlm:tasks", "segmentation"), ("mlm:input", [{"name": "chip"}]), ("mlm:name", "")):
        bad = copy.deepcopy(good)
        bad["properties"][key] = value
        with pytest.raises(InputError, match="breaks the MLM extension"):
            mlm.validate(bad)
    bad = copy.deepcopy(good)
    del bad["properties"]["datetime"]
    with pytest.raises(InputError, match="not a valid STAC Item"):
        mlm.validate(bad)


def test_the_mlm_json_schema_needs_a_schema_no_package_ships(
    bundle_path: Path, stac_schemas: dict[str, dict]
) -> None:
    """Why MLM properties are left to stac-model: MLM v1.4.0's published schema (pystac-ext-mlm's)
    ``$ref``s classification v1.1.0, which no package ships; offline validation says so instead of fetching."""
    data = mlm.item(model.load(bundle_path), bundle_path).to_dict()
    uri = MLMExtension.get_schema_uri()
    assert uri in stac_schemas
    with pytest.raises(
        ConfigError, match=r"its \$ref 'https://stac-extensions.github.io/classification/v1.1.0/"
    ):
        stac_validate.validate(data, stac_schemas, extensions=[uri])
