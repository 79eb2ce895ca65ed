"""QGIS and OGC style XML, written in one place (pure: strings in, strings out).

Vector styles (categorized on ``class_id``: :func:`categorized_qml`, and its OGC SLD twin
:func:`categorized_sld` for the GeoPackage ``layer_styles`` table), raster styles (a
paletted one per class: :func:`paletted_qml`; a pseudo-color gradient: :func:`gradient_qml`),
the ``<spatialrefsys>`` of a CRS and the document frame QGIS writes (:func:`document`),
and the class names as GDAL metadata items stored inside a GeoTIFF (:func:`class_tags`).
:mod:`geounet.publish` builds its GeoPackage styles and QGIS project from these.
"""

from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from pyproj import CRS

from geounet.model import ClassInfo

#: The QGIS version the documents declare (what QGIS 3.22+ reads without conversion).
QGIS_VERSION = "3.22.0"
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
_GRADIENT = ("#d7191c", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641")


def class_tags(classes: Sequence[ClassInfo]) -> dict[str, str]:
    """GDAL band metadata naming the classes, kept inside the TIFF (``GDAL_METADATA`` tag).

    The ``.aux.xml`` category names are lost when a COG is copied alone; these travel with it
    (``gdalinfo`` shows them, ``rasterio``'s ``tags(1)`` reads them).

    Example:
        >>> class_tags([ClassInfo(1, "water", "#1f78b4")])["CLASS_1"]
        'water'
    """
    tags = {f"CLASS_{c.id}": c.name for c in classes}
    tags["CLASSES"] = json.dumps([{"value": c.id, "name": c.name, "color": c.color} for c in classes])
    return tags


def categorized_qml(classes: Sequence[ClassInfo], *, field: str = "class_id") -> str:
    """QGIS vector style: categorized renderer on ``field``, one filled symbol per class.

    Example:
        >>> 'attr="class_id"' in categorized_qml([ClassInfo(1, "water", "#1f78b4")])
        True
    """
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories")
    root.append(categorized_renderer(classes, field))
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "2"
    return document(root)


def categorized_sld(classes: Sequence[ClassInfo], layer: str, *, field: str = "class_id") -> str:
    """The same style as OGC SLD 1.1 (for tools other than QGIS that read ``styleSLD``)."""
    ns = "http://www.opengis.net/sld"
    se, ogc = "http://www.opengis.net/se", "http://www.opengis.net/ogc"
    ET.register_namespace("", ns)
    ET.register_namespace("se", se)
    ET.register_namespace("ogc", ogc)
    root = ET.Element(f"{{{ns}}}StyledLayerDescriptor", version="1.1.0")
    style = ET.SubElement(
        ET.SubElement(ET.SubElement(root, f"{{{ns}}}NamedLayer"), f"{{{ns}}}UserStyle"),
        f"{{{se}}}FeatureTypeStyle",
    )
    root[0].insert(0, _text(f"{{{se}}}Name", layer))
    for c in classes:
        rule = ET.SubElement(style, f"{{{se}}}Rule")
        rule.append(_text(f"{{{se}}}Name", c.name))
        filt = ET.SubElement(ET.SubElement(rule, f"{{{ogc}}}Filter"), f"{{{ogc}}}PropertyIsEqualTo")
        filt.append(_text(f"{{{ogc}}}PropertyName", field))
        filt.append(_text(f"{{{ogc}}}Literal", str(c.id)))
        sym = ET.SubElement(rule, f"{{{se}}}PolygonSymbolizer")
        fill = ET.SubElement(sym, f"{{{se}}}Fill")
        fill.append(_text(f"{{{se}}}SvgParameter", c.color, name="fill"))
        stroke = ET.SubElement(sym, f"{{{se}}}Stroke")
        stroke.append(_text(f"{{{se}}}SvgParameter", "#232323", name="stroke"))
        stroke.append(_text(f"{{{se}}}SvgParameter", "0.26", name="stroke-width"))
    return ET.tostring(root, "unicode")


def categorized_renderer(classes: Sequence[ClassInfo], field: str) -> ET.Element:
    """The ``renderer-v2`` element of a categorized vector style (in a QML or a project's layer)."""
    renderer = ET.Element(
        "renderer-v2",
        type="categorizedSymbol",
        attr=field,
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
        referencescale="-1",
    )
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for i, c in enumerate(classes):
        ET.SubElement(cats, "category", value=str(c.id), symbol=str(i), label=c.name, render="true")
        symbols.append(_fill_symbol(str(i), c.rgb))
    return renderer


def _fill_symbol(name: str, rgb: tuple[int, int, int]) -> ET.Element:
    symbol = ET.Element("symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(
        symbol, "layer", {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"}
    )
    props = {
        "color": "{},{},{},255".format(*rgb),
        "style": "solid",
        "outline_color": "35,35,35,255",
        "outline_style": "solid",
        "outline_width": "0.1",
        "outline_width_unit": "MM",
        "joinstyle": "bevel",
    }
    options = ET.SubElement(layer, "Option", type="Map")
    for k, v in props.items():
        ET.SubElement(options, "Option", name=k, value=v, type="QString")
    for k, v in props.items():  # the pre-3.26 form, for older QGIS
        ET.SubElement(layer, "prop", k=k, v=v)
    return symbol


def _text(tag: str, text: str, **attrib: str) -> ET.Element:
    el = ET.Element(tag, attrib)
    el.text = text
    return el


def paletted_qml(classes: Sequence[ClassInfo]) -> str:
    """QGIS layer style: paletted renderer with one labelled entry per class, nodata transparent.

    Example:
        >>> 'label="water"' in paletted_qml([ClassInfo(1, "water", "#1f78b4")])
        True
    """
    root, pipe = _qml_root()
    renderer = _raster_renderer(pipe, "paletted")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in classes:
        ET.SubElement(palette, "paletteEntry", value=str(c.id), color=c.color, alpha="255", label=c.name)
    _qml_tail(pipe, root)
    return document(root)


def gradient_qml(value_range: tuple[float, float]) -> str:
    """QGIS layer style: single-band pseudo-color, red (low) → green (high), over ``value_range``.

    Example:
        >>> 'type="singlebandpseudocolor"' in gradient_qml((0.0, 100.0))
        True
    """
    lo, hi = value_range
    root, pipe = _qml_root()
    renderer = _raster_renderer(
        pipe, "singlebandpseudocolor", classificationMin=_num(lo), classificationMax=_num(hi)
    )
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader")
    shader.attrib.update(
        colorRampType="INTERPOLATED",
        classificationMode="1",
        clip="0",
        minimumValue=_num(lo),
        maximumValue=_num(hi),
    )
    n = len(_GRADIENT)
    for i, color in enumerate(_GRADIENT):
        value = lo + (hi - lo) * i / (n - 1)
        ET.SubElement(shader, "item", value=_num(value), color=color, alpha="255", label=_num(value))
    _qml_tail(pipe, root)
    return document(root)


def _raster_renderer(pipe: ET.Element, kind: str, **attributes: str) -> ET.Element:
    """The ``<rasterrenderer>`` of band 1 (QGIS's attribute order kept) with its empty transparency."""
    attrib = {"type": kind, "band": "1", "opacity": "1", "alphaBand": "-1", **attributes, "nodataColor": ""}
    renderer = ET.SubElement(pipe, "rasterrenderer", attrib)
    ET.SubElement(renderer, "rasterTransparency")
    return renderer


def _qml_root() -> tuple[ET.Element, ET.Element]:
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    return root, pipe


def _qml_tail(pipe: ET.Element, root: ET.Element) -> None:
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"


def document(root: ET.Element) -> str:
    """A QGIS XML document (style or project): the DOCTYPE QGIS writes, then ``root`` indented."""
    ET.indent(root)
    return f"{DOCTYPE}\n" + ET.tostring(root, "unicode") + "\n"


def srs_element(crs: str) -> ET.Element:
    """QGIS's ``<spatialrefsys>`` of a CRS (WKT, PROJ string, authority id, name)."""
    c = CRS.from_user_input(crs)
    srs = ET.Element("spatialrefsys")
    ET.SubElement(srs, "wkt").text = c.to_wkt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PROJ.4 strings are lossy; QGIS wants one anyway
        ET.SubElement(srs, "proj4").text = c.to_proj4()
    auth = c.to_authority()
    ET.SubElement(srs, "authid").text = f"{auth[0]}:{auth[1]}" if auth else ""
    ET.SubElement(srs, "description").text = c.name
    ET.SubElement(srs, "geographicflag").text = "true" if c.is_geographic else "false"
    return srs


def _num(x: float) -> str:
    return f"{x:g}"
