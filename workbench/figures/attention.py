"""A saved attention map, token x token, with the tokens on both axes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from workbench.figures.style import ATTENTION, SINGLE, new_figure, paper_figure

MAX_TOKEN_LABELS = 48  # beyond this, every n-th token is labelled so that labels stay legible


@paper_figure
def attention_map(weights: np.ndarray, tokens: Sequence[str], *, title: str) -> Figure:
    """weights: [seq, seq], row = the attending token (from), column = the attended one (to)."""
    grid = np.asarray(weights, dtype=float)  # [seq, seq]
    size = grid.shape[0]
    labels = [str(token) for token in tokens][:size]
    figure = new_figure(SINGLE, SINGLE * 0.92)
    axes = figure.subplots()
    image = axes.imshow(grid, cmap=ATTENTION, vmin=0, vmax=max(float(grid.max()), 1e-12), interpolation="nearest")
    step = max(1, int(np.ceil(size / MAX_TOKEN_LABELS)))
    font = 6 if size <= 24 else 4.5
    ticks = list(range(0, len(labels), step))
    axes.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=font)
    axes.set_yticks(ticks, [labels[i] for i in ticks], fontsize=font)
    axes.tick_params(length=0)
    axes.set_xlabel("to (attended token)")
    axes.set_ylabel("from (attending token)")
    axes.set_title(title)
    bar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02)
    bar.set_label("attention weight")
    bar.outline.set_linewidth(0.4)
    return figure
