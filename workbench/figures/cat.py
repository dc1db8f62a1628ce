"""CAT-probing (Chen et al. 2022): per layer, the overlap of high attention and short syntax-tree distance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workbench.figures.grids import as_line
from workbench.figures.style import COLORS, SINGLE, new_figure, paper_figure


@paper_figure
def cat_by_layer(values: Sequence[float | None], *, title: str, best_layer: int | None = None) -> Figure:
    """values: [layers] CAT of each attention layer (0 = the first attention layer; None = no score)."""
    line = as_line(values)  # [layers]
    layers = np.arange(len(line))
    figure = new_figure(SINGLE, 2.2)
    axes = figure.subplots()
    axes.plot(layers, line, marker="o", color=COLORS[0], label="CAT")
    if best_layer is not None and 0 <= best_layer < len(line) and np.isfinite(line[best_layer]):
        axes.plot([best_layer], [line[best_layer]], marker="*", markersize=9, linestyle="none", color=COLORS[1], label="highest")
    axes.set_xlabel("layer (0 = first attention layer)")
    axes.set_ylabel("CAT")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    axes.grid(alpha=0.3, linewidth=0.4)
    axes.legend(loc="best")
    return figure
