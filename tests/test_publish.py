"""Products of a run: vector formats, the GeoPackage's QGIS style, areas, STAC Item, quicklook.

The run is the land-use stand-in of ``tests/fixtures_qgis.py`` (real OSM land use on the
real Sentinel-2 grid, written as COGs tile by tile).
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import pytest
from fixtures_qgis import PROVENANCE
from PIL import Image

from geounet import publish, stac_validate, vectorize
from geounet.errors import ConfigError, InputError, WriteError


def canonical(gdf: gpd.GeoDataFrame) -> pd.DataFrame:
    frame = gdf.assign(wkb=[g.normalize().wkb_hex for g in gdf.geometry])
    frame = frame.sort_values(["class_id", "wkb"]).reset_index(drop=True)
    return pd.DataFrame(frame.drop(columns="geometry"))


def test_all_vector_formats_hold_the_same_features(tmp_path: Path, run_outputs, landuse) -> None:
    gdf = vectorize.polygons(
        run_outputs["classes"], classes=landuse.classes, confidence_path=run_outputs["confidence"]
    )
    gdf = publish.with_attributes(gdf, PROVENANCE)
    read = {"gpkg": gpd.read_file(run_outputs["polygons"], layer="polygons")}
    for fmt, ext in (("parquet", ".parquet"), ("fgb", ".fgb")):
        path = publish.write_vectors(gdf, tmp_path / f"polygons{ext}", classes=landuse.classes, fmt=fmt)
        read[fmt] = gpd.read_parquet(path) if fmt == "parquet" else gpd.read_file(path)
    reference = canonical(read["gpkg"])
    assert list(read["gpkg"].columns) == [*vectorize.COLUMNS[:-1], *PROVENANCE, "geometry"]
    assert (read["gpkg"].date == "2017-02-16").all()
    assert len(reference) == len(gdf) > 100
    for fmt in ("parquet", "fgb"):
        assert read[fmt].crs == read["gpkg"].crs == gdf.crs
        pd.testing.assert_frame_equal(canonical(read[fmt]), reference, check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["polygons.fgb", "polygons.parquet"]  # no temp left


def test_geopackage_style_row_as_qgis_needs_it(run_outputs, landuse) -> None:
    with sqlite3.connect(run_outputs["polygons"]) as db:
        geom_col = db.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = 'polygons'"
        ).fetchone()[0]
        rows = db.execute(
            "SELECT f_table_catalog, f_table_schema, f_table_name, f_geometry_column, useAsDefault, styleQML "
            "FROM layer_styles"
        ).fetchall()
        contents = db.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
        rtree = db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = ?", (f"rtree_polygons_{geom_col}",)
        ).fetchone()[0]
    assert rtree == 1  # spatial index
    assert contents == ("attributes",)
    assert len(rows) == 1
    catalog, schema, table, column, default, qml = rows[0]
    assert (catalog, schema, table, column, default) == ("", "", "polygons", geom_col, 1)
    renderer = ET.fromstring(qml.split("\n", 1)[1]).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_id"
    cats = [(c.get("value"), c.get("label")) for c in renderer.iter("category")]
    assert cats == [(str(c.id), c.name) for c in landuse.classes]


def test_area_table_matches_raster(run_outputs, landuse) -> None:
    with open(run_outputs["areas"], newline="") as f:
        rows = list(csv.DictReader(f))
    counts = np.bincount(landuse.array.ravel(), minlength=256)
    valid = counts.sum() - counts[255]
    for row, c in zip(rows, landuse.classes, strict=True):
        assert (int(row["class_id"]), row["class_name"]) == (c.id, c.name)
        assert int(row["pixels"]) == counts[c.id]
        assert float(row["area_km2"]) == pytest.approx(counts[c.id] * landuse.grid.pixel_area / 1e6)
        assert float(row["percent"]) == pytest.approx(100 * counts[c.id] / valid, abs=1e-4)
    assert sum(float(r["percent"]) for r in rows) == pytest.approx(100, abs=1e-2)


def test_stac_item_validates_offline_and_describes_the_outputs(run_outputs, landuse, stac_schemas) -> None:
    """Valid against the published projection, classification, raster and file schemas (shipped by pystac's extension packages)."""
    used = publish.validate_item(run_outputs["item"], schemas=stac_schemas, offline=True)
    item = pystac.Item.from_file(str(run_outputs["item"]))
    assert {u.split("/")[3] for u in item.stac_extensions} == {
        "projection",
        "classification",
        "raster",
        "file",
    }
    assert set(item.stac_extensions) <= set(used) and any(u.endswith("item.json") for u in used)
    root = run_outputs["item"].parent
    for key in ("classes", "confidence", "polygons", "areas", "quicklook", "project", "manifest"):
        assert (root / item.assets[key].href).is_file(), key
    assert item.properties["proj:code"] == "EPSG:32633"
    assert item.properties["proj:shape"] == list(landuse.grid.shape)
    assert item.properties["proj:transform"] == list(landuse.grid.transform)[:6]
    classes = item.assets["classes"].extra_fields["classification:classes"]
    expected = [
        {"value": c.id, "name": c.name, "title": c.name, "color_hint": c.color[1:].upper()}
        for c in landuse.classes
    ]
    assert classes[:-1] == expected
    assert classes[-1]["value"] == 255 and classes[-1]["nodata"] is True
    assert [a["class_name"] for a in item.properties["geounet:areas"]] == [c.name for c in landuse.classes]
    lon, lat = item.geometry["coordinates"][0][0]
    assert 12 < lon < 13 and 52 < lat < 53  # Brandenburg
    assert json.loads(run_outputs["manifest"].read_text())["model"] == "none (labels)"


def test_stac_validation_catches_a_broken_item(run_outputs, stac_schemas) -> None:
    """Each extension's published schema catches its own broken field, named in the one-line error."""
    good = json.loads(run_outputs["item"].read_text())
    breaks = {
        "classification": lambda d: d["assets"]["classes"]["classification:classes"][0].update(
            color_hint="#zz0000"
        ),
        "raster": lambda d: d["assets"]["classes"]["raster:bands"][0].update(data_type="uint7"),
        "file": lambda d: d["assets"]["classes"].update({"file:checksum": "not-hex"}),
        "projection": lambda d: d["properties"].update({"proj:shape": [-1]}),
    }
    for name, apply in breaks.items():
        bad = json.loads(json.dumps(good))
        apply(bad)
        with pytest.raises(InputError, match=rf"breaks https://stac-extensions.github.io/{name}/"):
            publish.validate_item(pystac.Item.from_dict(bad), schemas=stac_schemas, offline=True)
    del good["properties"]["datetime"]
    with pytest.raises(InputError, match="not a valid STAC Item"):
        stac_validate.validate(good, stac_schemas)


def test_offline_validation_never_fetches_and_names_what_is_missing(run_outputs, stac_schemas) -> None:
    raster = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
    without = {u: s for u, s in stac_schemas.items() if u != raster}
    with pytest.raises(
        ConfigError,
        match=re.escape("no offline schema for STAC extension 'https://stac-extensions.github.io/raster/"),
    ):
        publish.validate_item(run_outputs["item"], schemas=without, offline=True)


def test_stac_item_links_its_sources_and_model_and_takes_their_dates(
    tmp_path: Path, run_outputs, landuse
) -> None:
    bundle = tmp_path / "lc.safetensors"
    bundle.write_bytes(b"weights")
    (tmp_path / "lc.json").write_text("{}")  # the MLM Item `geounet model export-stac` writes beside it
    sources = [
        {"id": "S2_a", "href": "http://127.0.0.1:1/items/S2_a", "datetime": "2015-07-11T10:00:08+00:00"},
        {"id": "S2_b", "href": "http://127.0.0.1:1/items/S2_b", "datetime": "2015-09-09T10:00:17+00:00"},
    ]
    assets = {"classes": run_outputs["classes"], "confidence": run_outputs["confidence"]}
    item = publish.stac_item(
        run_outputs["classes"], classes=landuse.classes, assets=assets, item_id="run",
        sources=sources, model={"path": str(bundle), "sha256": "ab" * 32},
    )  # fmt: skip
    derived = [link for link in item.links if link.rel == "derived_from"]
    assert [link.href for link in derived] == [s["href"] for s in sources] + [
        str((tmp_path / "lc.json").resolve())
    ]
    assert derived[-1].extra_fields["file:checksum"] == "1220" + "ab" * 32
    assert item.datetime is None and item.properties["start_datetime"] == "2015-07-11T10:00:08Z"
    assert item.properties["end_datetime"] == "2015-09-09T10:00:17Z"
    assert item.properties["geounet:source_items"] == ["S2_a", "S2_b"]
    raster = item.assets["classes"].extra_fields["raster:bands"][0]
    assert raster["data_type"] == "uint8" and raster["nodata"] == 255
    assert item.assets["confidence"].extra_fields["raster:bands"][0]["unit"] == "%"
    size = run_outputs["classes"].stat().st_size
    assert item.assets["classes"].extra_fields["file:size"] == size
    assert any("/file/" in e for e in item.stac_extensions) and any(
        "/raster/" in e for e in item.stac_extensions
    )
    one = publish.stac_item(run_outputs["classes"], classes=landuse.classes, assets=assets, item_id="one",
                            sources=sources[:1])  # fmt: skip
    assert one.datetime is not None and one.datetime.isoformat() == "2015-07-11T10:00:08+00:00"
    local = publish.stac_item(run_outputs["classes"], classes=landuse.classes, assets=assets, item_id="file",
                              source="/data/T33UUU_20170216T102101_B02.jp2")  # fmt: skip
    assert local.datetime is not None and local.datetime.isoformat() == "2017-02-16T10:21:01+00:00"
    unknown = publish.stac_item(run_outputs["classes"], classes=landuse.classes, assets=assets, item_id="x")
    assert unknown.properties["geounet:datetime_is_processing"] is True


def test_quicklook_is_small_and_shows_the_classes(tmp_path: Path, run_outputs, landuse) -> None:
    blended = np.asarray(Image.open(run_outputs["quicklook"]))
    assert blended.shape == (512, 1024, 4) and (blended[..., 3] == 255).all()
    alone = publish.quicklook(run_outputs["classes"], tmp_path / "q.png", classes=landuse.classes, size=256)
    image = np.asarray(Image.open(alone))
    assert image.shape == (128, 256, 4)
    colors = {tuple(px) for px in image[image[..., 3] == 255][:, :3]}
    assert colors <= {c.rgb for c in landuse.classes}
    assert len(colors) >= 6
    assert (image[..., 3] == 0).mean() > 0.3  # the unlabelled east is transparent


def test_quicklook_preview_drawn_ahead_is_the_same_png(tmp_path: Path, run_outputs, landuse) -> None:
    """A run draws the input's RGB while the model works (publishing.start_preview): same quicklook bytes."""
    source = run_outputs["classes"].parent / "preview.tif"
    ahead = publish.preview_rgb(source, landuse.grid)
    assert ahead.shape == (512, 1024, 3) and ahead.std() > 10  # a real stretched image, not a blank
    drawn = publish.quicklook(
        run_outputs["classes"], tmp_path / "a.png", classes=landuse.classes, preview=ahead
    )
    assert drawn.read_bytes() == run_outputs["quicklook"].read_bytes()
    other = np.zeros((256, 512, 3))  # drawn for another grid: ignored, drawn again from the file
    again = publish.quicklook(
        run_outputs["classes"],
        tmp_path / "b.png",
        classes=landuse.classes,
        preview=other,
        preview_path=source,
    )
    assert again.read_bytes() == run_outputs["quicklook"].read_bytes()


def test_bad_format_and_unwritable_path(tmp_path: Path, landuse) -> None:
    gdf = vectorize.from_array(
        landuse.array[:64, :64],
        grid=landuse.grid.window_grid(vectorize.Window(0, 0, 64, 64)),
        classes=landuse.classes,
    )
    with pytest.raises(ConfigError, match="gpkg, parquet, fgb"):
        publish.write_vectors(gdf, tmp_path / "x.shp", classes=landuse.classes, fmt="shp")
    with pytest.raises(WriteError, match="cannot write gpkg"):
        publish.write_vectors(gdf, tmp_path / "missing" / "x.gpkg", classes=landuse.classes)
    assert list(tmp_path.iterdir()) == []


def test_photo_products_without_georeferencing(photo, stac_schemas) -> None:
    array, paths = photo
    used = publish.validate_item(paths["item"], schemas=stac_schemas, offline=True)
    assert not any("projection" in uri for uri in used)
    item = json.loads(paths["item"].read_text())
    assert item["geometry"] is None and "bbox" not in item
    gdf = gpd.read_file(paths["polygons"], layer="polygons")
    assert gdf.crs is None
    areas = {int(r["class_id"]): int(r["pixels"]) for r in csv.DictReader(paths["areas"].open())}
    assert areas == {int(v): int(n) for v, n in zip(*np.unique(array, return_counts=True), strict=True)}
    assert gdf.groupby("class_id").area_m2.sum().to_dict() == pytest.approx(
        {k: float(v) for k, v in areas.items()}, rel=0.005
    )


def test_geopackage_style_row_holds_the_categorized_sld(run_outputs, landuse) -> None:
    """styleSLD (for tools other than QGIS): one SE rule per class, filter class_id = id, its fill color."""
    with sqlite3.connect(run_outputs["polygons"]) as db:
        [(sld,)] = db.execute("SELECT styleSLD FROM layer_styles").fetchall()
    assert sld == publish.categorized_sld(landuse.classes, "polygons")
    ns = {
        "sld": "http://www.opengis.net/sld",
        "se": "http://www.opengis.net/se",
        "ogc": "http://www.opengis.net/ogc",
    }
    root = ET.fromstring(sld)
    assert root.tag == "{http://www.opengis.net/sld}StyledLayerDescriptor" and root.get("version") == "1.1.0"
    assert root.find("sld:NamedLayer/se:Name", ns).text == "polygons"
    rules = root.findall("sld:NamedLayer/sld:UserStyle/se:FeatureTypeStyle/se:Rule", ns)
    got = [
        (
            r.find("se:Name", ns).text,
            r.find("ogc:Filter/ogc:PropertyIsEqualTo/ogc:PropertyName", ns).text,
            r.find("ogc:Filter/ogc:PropertyIsEqualTo/ogc:Literal", ns).text,
            r.find("se:PolygonSymbolizer/se:Fill/se:SvgParameter[@name='fill']", ns).text,
        )
        for r in rules
    ]
    assert got == [(c.name, "class_id", str(c.id), c.color) for c in landuse.classes]
    other = ET.fromstring(publish.categorized_sld(landuse.classes[:2], "fields", field="crop"))
    assert [e.text for e in other.iter("{http://www.opengis.net/ogc}PropertyName")] == ["crop", "crop"]
    assert other.find("sld:NamedLayer/se:Name", ns).text == "fields"


def test_geopackage_chunks_stream_into_one_layer_with_its_index(tmp_path: Path, landuse) -> None:
    """Chunks (some empty, with other dtypes) → the same layer as one frame; the R-tree holds every row."""
    gdf = vectorize.from_array(
        landuse.array[:256, :256],
        grid=landuse.grid.window_grid(vectorize.Window(0, 0, 256, 256)),
        classes=landuse.classes,
    )
    assert len(gdf) > 50
    empty = gdf.iloc[:0].astype({"class_id": "int64"})
    parts = [empty, gdf.iloc[:10], empty, gdf.iloc[10:37], gdf.iloc[37:]]
    streamed = publish.write_vector_chunks(parts, tmp_path / "s.gpkg", classes=landuse.classes)
    whole = publish.write_vectors(gdf, tmp_path / "w.gpkg", classes=landuse.classes)
    got, want = gpd.read_file(streamed, layer="s"), gpd.read_file(whole, layer="w")
    assert got.crs == gdf.crs and list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(canonical(got), canonical(want))
    with sqlite3.connect(streamed) as db:
        assert db.execute("SELECT count(*) FROM rtree_s_geom").fetchone() == (len(gdf),)
        assert db.execute("SELECT count(*) FROM layer_styles WHERE f_table_name = 's'").fetchone() == (1,)


def test_a_chunk_stream_that_fails_leaves_no_geopackage(tmp_path: Path, landuse) -> None:
    """The producer's own exception comes out (not pyarrow's wrapper) and no file is left."""
    gdf = vectorize.from_array(
        landuse.array[:64, :64],
        grid=landuse.grid.window_grid(vectorize.Window(0, 0, 64, 64)),
        classes=landuse.classes,
    )

    def chunks():
        yield gdf
        raise KeyError("the raster stage died")

    with pytest.raises(KeyError, match="raster stage died"):
        publish.write_vector_chunks(chunks(), tmp_path / "p.gpkg", classes=landuse.classes)
    assert list(tmp_path.iterdir()) == []
