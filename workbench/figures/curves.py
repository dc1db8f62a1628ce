"""Line figures: the pruning curve with the mask-search path, the training loss, a score by layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workbench.figures.grids import as_line
from workbench.figures.style import COLORS, SINGLE, new_figure, paper_figure

Point = tuple[float, float | None]


@paper_figure
def pruning_curve(
    curve: Sequence[Point] | None,
    *,
    metric: str,
    search: Sequence[Point] | None = None,
    kept: Point | None = None,
    threshold: float | None = None,
    rule: str | None = None,
    title: str,
) -> Figure:
    """Score vs % of heads masked (Michel et al., Fig. 3b).

    curve: (percent, score) of the k% least important heads masked; search: the mask search's
    iterations (percent masked, score), kept: the mask it kept; threshold: the score the search had
    to stay at (threshold x original, or original / threshold when lower is better).
    """
    figure = new_figure(SINGLE, 2.8)
    axes = figure.subplots()
    if curve:
        x, y = _xy(curve)
        axes.plot(x, y, marker="o", color=COLORS[0], label="pruning curve")
    if search:
        x, y = _xy(search)
        axes.plot(x, y, marker="s", linestyle="--", color=COLORS[1], label="mask search")
    if kept is not None and kept[1] is not None:
        axes.plot([kept[0]], [kept[1]], marker="*", markersize=9, linestyle="none", color=COLORS[2], label="mask kept")
    if threshold is not None and np.isfinite(threshold):
        label = f"threshold: {rule}" if rule else "threshold"
        axes.axhline(threshold, color="#4d4d4d", linewidth=0.8, linestyle=":", label=label)
    axes.set_xlabel("% of heads masked")
    axes.set_ylabel(metric)
    axes.set_xlim(left=min(-2.0, axes.get_xlim()[0]))
    axes.set_title(title)
    axes.grid(alpha=0.3, linewidth=0.4)
    figure.legend(loc="outside lower center", ncols=2)  # below the axes: curves fill every corner
    return figure


@paper_figure
def loss_curve(points: Sequence[Point], *, title: str) -> Figure:
    """points: (optimizer step, training loss); the loss is the mean of the last 20 steps."""
    figure = new_figure(SINGLE, 2.2)
    axes = figure.subplots()
    x, y = _xy(points)
    axes.plot(x, y, color=COLORS[0])
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss (mean of last 20 steps)")
    axes.set_title(title)
    axes.grid(alpha=0.3, linewidth=0.4)
    return figure


@paper_figure
def layer_profile(
    values: Sequence[float | None], *, name: str, title: str, first_layer: str = "0", signed: bool = False
) -> Figure:
    """values: [layers] of one layer score (None/NaN = no value); bars, around 0 when signed."""
    line = as_line(values)  # [layers]
    figure = new_figure(SINGLE, 2.2)
    axes = figure.subplots()
    layers = np.arange(len(line))
    colours = [COLORS[0] if not signed or v >= 0 else COLORS[1] for v in np.nan_to_num(line)]
    axes.bar(layers, np.nan_to_num(line), color=colours, width=0.7)
    for layer in layers[~np.isfinite(line)]:
        axes.text(layer, 0, "n/a", ha="center", va="bottom", fontsize=6, color="#4d4d4d")
    if signed or (np.isfinite(line).any() and np.nanmin(line) < 0):
        axes.axhline(0, color="black", linewidth=0.6)
    axes.set_xlabel(f"layer ({first_layer})")
    axes.set_ylabel(name)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3, linewidth=0.4)
    return figure


def _xy(points: Sequence[Point]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([float(p[0]) for p in points])
    y = as_line(p[1] for p in points)
    return x, y
