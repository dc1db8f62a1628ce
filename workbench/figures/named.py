"""A figure with the stable name its file gets: `<step>__<figure>`, only [A-Za-z0-9_.-]."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from matplotlib.figure import Figure

UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class NamedFigure:
    name: str  # the file name without its extension, e.g. "attention__heads-entropy_smoothed"
    step: str | None  # the step it draws (None for figures of no single step)
    kind: str  # the figure function that drew it: "head_heatmap", "pruning_curve", ...
    figure: Figure


def file_part(text: str) -> str:
    """Score names may hold ':' '@' '%' '+' '=' (dep_to_head:nsubj); file names keep [A-Za-z0-9_.-]."""
    return UNSAFE.sub("_", text).strip(".") or "_"


def figure_name(step_id: str, figure: str) -> str:
    return f"{file_part(step_id)}__{file_part(figure)}"


def unique(figures: Iterable[NamedFigure]) -> list[NamedFigure]:
    """Two names that only differed in unsafe characters ("a:b", "a_b") get "-2", "-3", ... in order."""
    seen: set[str] = set()
    named = []
    for item in figures:
        name, count = item.name, 1
        while name in seen:
            count += 1
            name = f"{item.name}-{count}"
        seen.add(name)
        named.append(item if name == item.name else NamedFigure(name, item.step, item.kind, item.figure))
    return named
