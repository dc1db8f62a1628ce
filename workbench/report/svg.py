"""A matplotlib figure as an SVG element that can sit inline in an HTML page, among others.

matplotlib writes a standalone document: an XML prolog, a DOCTYPE and RDF metadata that name
w3.org and matplotlib.org addresses, namespace declarations, and element ids that repeat from one
figure to the next (`figure_1`, `axes_1`, clip paths hashed from their content). In HTML the
parser puts `<svg>` in the SVG namespace by itself (and maps `xlink:href`), so the prolog, the
metadata and the declarations go; every id (and every `#id` reference) gets a per-figure prefix,
so the ids of a page are unique and one figure's `<use>` never draws another figure's marker.
Text stays text (style.PAPER_RC: svg.fonttype none) and is already escaped by matplotlib.
"""

from __future__ import annotations

import io
import re

from matplotlib.figure import Figure

from workbench.figures.style import saving
from workbench.report.markup import Html, text

# Raster parts (heatmap cells, attention maps) are embedded as PNG at this resolution; the page
# draws them with image-rendering: pixelated, so cells stay sharp when scaled, and the file stays small.
IMAGE_DPI = 100
# None drops each key from matplotlib's <metadata> (a date would make every report differ).
METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}

_START = re.compile(r"<svg\b")
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_NAMESPACE = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_TAG = re.compile(r"<[^>]*>")  # matplotlib escapes < and > in text and attribute values
_ID = re.compile(r'\bid="([^"]+)"')
_URL_REF = re.compile(r"url\(#([^)]+)\)")
_HREF = re.compile(r'\b((?:xlink:)?href)="#([^"]+)"')
_SIZE = re.compile(r'<svg([^>]*?)\s+width="([\d.]+)pt"\s+height="([\d.]+)pt"')


def inline_svg(figure: Figure, prefix: str, *, label: str | None = None) -> Html:
    """The figure as an `<svg>` element; `prefix` (unique in the page, [A-Za-z0-9_-]) is put
    before every id; `label` becomes its accessible name."""
    document = _svg_document(figure)
    start = _START.search(document)
    if start is None:
        raise ValueError("matplotlib wrote no <svg> element")
    body = _METADATA.sub("", document[start.start() :]).strip()
    body = _TAG.sub(lambda tag: _rewrite_tag(tag.group(0), prefix), body)
    body = _scalable(body)
    if label:
        body = body.replace("<svg", f'<svg role="img" aria-label="{text(label)}"', 1)
    return Html(body)


def _svg_document(figure: Figure) -> str:
    buffer = io.BytesIO()
    with saving():
        figure.savefig(buffer, format="svg", dpi=IMAGE_DPI, metadata=METADATA)
    return buffer.getvalue().decode("utf-8")


def _rewrite_tag(tag: str, prefix: str) -> str:
    """Inside one tag (never in text): drop namespace declarations, prefix ids and references."""
    if tag.startswith("<svg"):
        tag = _NAMESPACE.sub("", tag)
    tag = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', tag)
    tag = _URL_REF.sub(lambda m: f"url(#{prefix}-{m.group(1)})", tag)
    return _HREF.sub(lambda m: f'{m.group(1)}="#{prefix}-{m.group(2)}"', tag)


def _scalable(body: str) -> str:
    """Width and height in points become a max-width: the figure shrinks with the page (print, a
    narrow window) but is never blown up past the size its fonts were set for."""

    def replace(match: re.Match[str]) -> str:
        width, height = float(match.group(2)), float(match.group(3))
        style = f"width:100%;max-width:{width:g}pt;height:auto;aspect-ratio:{width:g}/{height:g}"
        return f'<svg{match.group(1)} width="{width:g}pt" height="{height:g}pt" style="{style}"'

    return _SIZE.sub(replace, body, count=1)
