"""Michel et al.'s head ablations: the distribution of single-head changes (Fig. 1), one head per layer (Table 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workbench.figures.style import COLORS, SINGLE, new_figure, paper_figure


@paper_figure
def ablation_histogram(deltas: Sequence[float], *, metric: str, original: float | None, title: str) -> Figure:
    """deltas: score with one head masked - original score, one per head (pruned heads left out)."""
    values = np.array([d for d in deltas if d is not None and np.isfinite(d)], dtype=float)
    figure = new_figure(SINGLE, 2.2)
    axes = figure.subplots()
    bins = min(30, max(5, int(np.sqrt(values.size)) * 2))
    if values.size and values.max() == values.min():  # every head changes the score alike
        bins = 1
    axes.hist(values, bins=bins, color=COLORS[0], edgecolor="white", linewidth=0.4)
    axes.axvline(0, color="black", linewidth=0.6, linestyle="--")
    axes.set_xlabel(f"{metric} change when the head is masked")
    axes.set_ylabel("heads")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    original_text = f", original {original:.4f}" if original is not None else ""
    axes.set_title(f"{title}{original_text}")
    return figure


@paper_figure
def keep_best_bars(rows: Sequence[Mapping[str, Any]], *, metric: str, title: str) -> Figure:
    """rows: {layer, head, score, delta}: per layer, the head whose sole survival scores best."""
    layers = [int(row["layer"]) for row in rows]
    deltas = [float(row["delta"]) for row in rows]
    figure = new_figure(SINGLE, 2.3)
    axes = figure.subplots()
    colours = [COLORS[0] if d >= 0 else COLORS[1] for d in deltas]
    bars = axes.bar(layers, deltas, color=colours, width=0.7)
    axes.bar_label(bars, labels=[f"h{row['head']}" for row in rows], padding=1.5, fontsize=6)
    axes.axhline(0, color="black", linewidth=0.6)
    axes.set_xlabel("layer")
    axes.set_ylabel(f"{metric} change")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    low, high = min([0.0, *deltas]), max([0.0, *deltas])
    margin = 0.15 * (high - low or 1.0)  # room for the head labels above and below the bars
    axes.set_ylim(low - margin, high + margin)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3, linewidth=0.4)
    return figure
