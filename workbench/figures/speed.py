"""Examples/s before and after pruning per batch size (Michel et al., Table 4), as a distribution."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from workbench.figures.style import COLORS, SINGLE, new_figure, paper_figure


@paper_figure
def speed_bars(rows: Sequence[Mapping[str, Any]], *, title: str) -> Figure:
    """rows: prune's data["speed"]: {batch_size, before, after, speedup}, each {median, q1, q3}.

    Bars are medians over the interleaved rounds, error bars span q1..q3 (the IQR), and the median
    speed-up is written above each pair.
    """
    sizes = [str(row["batch_size"]) for row in rows]
    x = np.arange(len(rows))
    width = 0.38
    figure = new_figure(SINGLE, 2.4)
    axes = figure.subplots()
    highs = []
    for offset, which, colour in ((-width / 2, "before", COLORS[0]), (width / 2, "after", COLORS[1])):
        medians = np.array([row[which]["median"] for row in rows], dtype=float)
        low = medians - np.array([row[which]["q1"] for row in rows], dtype=float)
        high = np.array([row[which]["q3"] for row in rows], dtype=float) - medians
        axes.bar(x + offset, medians, width, color=colour, label=which)
        errors = [np.maximum(low, 0), np.maximum(high, 0)]  # median - q1 below, q3 - median above
        axes.errorbar(x + offset, medians, yerr=errors, fmt="none", ecolor="black", elinewidth=0.6, capsize=1.5)
        highs.append(medians + np.maximum(high, 0))
    top = np.maximum(*highs) if len(highs) == 2 else highs[0]
    speeds = [(row.get("speedup") or {}).get("median") for row in rows]
    spread = max(top.max(), 1e-9) / max(min(top.min(), top.max()), 1e-9)
    if spread > 20:  # batch size 1 and 64 differ by orders of magnitude: keep both readable
        axes.set_yscale("log")
    for position, peak, speedup in zip(x, top, speeds):
        if speedup is not None and np.isfinite(speedup):
            axes.annotate(
                f"{speedup:.2f}x", (position, peak), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=6
            )
    axes.set_ylim(top=top.max() * (3 if spread > 20 else 1.15))
    axes.set_xticks(x, sizes)
    axes.set_xlabel("batch size")
    axes.set_ylabel("examples/s (median, IQR)")
    axes.set_title(title)
    figure.legend(loc="outside lower center", ncols=2)  # outside the axes: never over a speed-up label
    return figure
