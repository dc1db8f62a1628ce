"""Clark et al. (2019): the best head per relation vs the offset baseline, and the heads in 2-D (MDS)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure

from workbench.figures.style import COLORS, SEQUENTIAL, SINGLE, clamp, new_figure, paper_figure


@paper_figure
def relation_bars(rows: Sequence[Mapping[str, Any]], *, title: str) -> Figure:
    """rows: syntax_heads' data["table"]: per relation its best head {direction, layer, head, accuracy}
    and the best fixed offset {offset, accuracy}. Horizontal bars, relations top to bottom in table order.
    """
    names = [str(row["relation"]) + (" (rare)" if row.get("rare") else "") for row in rows]
    best = [_accuracy(row.get("best")) for row in rows]
    baseline = [_accuracy(row.get("baseline")) for row in rows]
    y = np.arange(len(rows))
    height = 0.38
    figure = new_figure(SINGLE, clamp(0.8 + 0.2 * len(rows), 1.8, 9.0))
    axes = figure.subplots()
    explained = "best head, layer-head\n(→ dependent attends to head, ← the reverse)"
    heads = axes.barh(y - height / 2, best, height, color=COLORS[0], label=explained)
    axes.barh(y + height / 2, baseline, height, color=COLORS[4], label="best fixed offset (the offset is written in)")
    labels = []
    for row in rows:
        chosen = row.get("best") or {}
        arrow = "→" if str(chosen.get("direction", "")).startswith("dep") else "←"  # dep→head or head→dep
        labels.append(f"{chosen.get('layer')}-{chosen.get('head')} {arrow}" if chosen.get("layer") is not None else "")
    axes.bar_label(heads, labels=labels, padding=1.5, fontsize=5.5)
    for position, row in zip(y, rows):
        offset = (row.get("baseline") or {}).get("offset")
        if offset is not None:
            axes.text(0.005, position + height / 2, f"{int(offset):+d}", va="center", ha="left", fontsize=5.5)
    axes.set_yticks(y, names)
    axes.set_ylim(len(rows) - 0.5, -0.5)  # the first row ("all") on top, as in the table
    axes.set_xlim(0, 1.12)
    axes.set_xlabel("accuracy")
    axes.set_title(title)
    figure.legend(loc="outside lower center", ncols=1)
    axes.grid(axis="x", alpha=0.3, linewidth=0.4)
    return figure


@paper_figure
def mds_scatter(points: Sequence[Mapping[str, Any]], *, title: str) -> Figure:
    """points: {layer, head, x, y}: an MDS embedding of the heads' Jensen-Shannon distances, by layer."""
    layers = np.array([int(point["layer"]) for point in points])
    xs = np.array([float(point["x"]) for point in points])
    ys = np.array([float(point["y"]) for point in points])
    count = int(layers.max()) + 1 if layers.size else 1
    norm = BoundaryNorm(np.arange(-0.5, count + 0.5), matplotlib.colormaps[SEQUENTIAL].N)  # one colour per layer
    figure = new_figure(SINGLE, 2.9)
    axes = figure.subplots()
    dots = axes.scatter(xs, ys, c=layers, cmap=SEQUENTIAL, norm=norm, s=12, edgecolors="black", linewidths=0.2)
    bar = figure.colorbar(dots, ax=axes, ticks=range(count) if count <= 12 else None, fraction=0.05, pad=0.02)
    bar.set_label("layer")
    bar.outline.set_linewidth(0.4)
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_xlabel("MDS dimension 1")
    axes.set_ylabel("MDS dimension 2")
    axes.set_title(title)
    return figure


def _accuracy(cell: Mapping[str, Any] | None) -> float:
    value = (cell or {}).get("accuracy")
    return float(value) if value is not None and np.isfinite(value) else 0.0
