"""A tiny HTML builder that escapes at the boundary.

Everything a run record holds is data: a relation name from a treebank can be `<script>`, a step
error can hold `</table>`. `Html` marks a string as markup already built here; anything else
given to `element` or `join` is text and is escaped. So escaping is never a call someone can
forget: raw text cannot become markup without passing through `Html(...)` in this package.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from typing import Any, Union

# Names of tags and attributes are written by this package, never taken from data.
_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
VOID = {"br", "col", "hr", "img", "meta", "wbr"}


class Html(str):
    """Markup built by this package (or an inline SVG it cleaned): inserted as is."""

    __slots__ = ()


Content = Union["Html", str, int, float, None, Iterable[Any]]


def text(value: Any) -> Html:
    """Any value as escaped text (None: empty)."""
    if isinstance(value, Html):
        return value
    return Html("" if value is None else html.escape(str(value), quote=True))


def join(parts: Iterable[Content], separator: str = "") -> Html:
    return Html(separator.join(_content(part) for part in parts))


def element(tag: str, *children: Content, **attributes: Any) -> Html:
    """`<tag attr="...">children</tag>`; attribute names use `_` for `-` and a trailing `_` for
    reserved words (`class_`); a None or False attribute is left out, True is written bare."""
    assert _NAME.match(tag), tag
    parts = [tag]
    for name, value in attributes.items():
        name = name.rstrip("_").replace("_", "-")
        assert _NAME.match(name), name
        if value is None or value is False:
            continue
        parts.append(name if value is True else f'{name}="{text(value)}"')
    opening = f"<{' '.join(parts)}>"
    if tag in VOID:
        return Html(opening)
    return Html(f"{opening}{join(children)}</{tag}>")


def _content(part: Content) -> str:
    if isinstance(part, (str, int, float)) or part is None:
        return text(part)
    return join(part)  # a list or generator of parts


def anchor_id(prefix: str, name: str) -> str:
    """An id attribute value from a name (step ids are identifiers; old stores are not checked)."""
    return f"{prefix}-{_ID_UNSAFE.sub('_', name)}"


# --- numbers ------------------------------------------------------------------------------------------


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any, digits: int = 4) -> str:
    """A metric as the terminal shows it: integers whole, others to `digits` places; '-' when missing."""
    if isinstance(value, bool):
        return str(value).lower()
    if not finite(value):
        return "-" if value is None or isinstance(value, (int, float)) else str(value)
    if float(value).is_integer() and abs(value) < 1e12:
        return f"{int(value):,}" if abs(value) >= 10_000 else f"{int(value)}"  # 22,713,986 parameters
    if abs(value) >= 1000 or abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def signed(value: Any, digits: int = 4) -> str:
    return f"{value:+.{digits}f}" if finite(value) else "-"
