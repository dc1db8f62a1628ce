"""Layer x head figures: a heatmap of any head score, and a map of kept vs removed heads.

Rows are layers (layer 0 at the top, as in `workbench show`), columns are heads. Signed scores
(differences) get a diverging map centred at 0, so white always means "no change"; other scores a
sequential, colour-blind-safe map. Pruned heads are hatched; cells without a value are grey.
"""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from workbench.figures.grids import as_grid
from workbench.figures.style import DIVERGING, DOUBLE, HATCH, MISSING, SEQUENTIAL, SINGLE, clamp, new_figure, paper_figure

ANNOTATE_CELLS = 48  # grids this small get their values written in the cells


def is_signed(score_name: str) -> bool:
    """Differences (an ablation's change, compare's b - a) are drawn around 0."""
    return "delta" in score_name


@paper_figure
def head_heatmap(
    values: Any,
    *,
    name: str,
    title: str | None = None,
    pruned: Any = None,
    signed: bool | None = None,
    annotate: bool | None = None,
) -> Figure:
    """values: [layers][heads] (None/NaN = no value); pruned: bool [layers, heads], True = pruned (hatched)."""
    grid = as_grid(values)  # [layers, heads]
    layers, heads = grid.shape
    removed = np.zeros(grid.shape, dtype=bool) if pruned is None else np.asarray(pruned, dtype=bool)[:layers, :heads]
    signed = is_signed(name) if signed is None else signed
    figure, axes = _head_axes(layers, heads)
    known = grid[np.isfinite(grid)]
    if signed:
        limit = float(np.abs(known).max()) if known.size and np.abs(known).max() > 0 else 1.0
        norm = Normalize(-limit, limit)  # symmetric: 0 sits at the map's neutral middle
        cmap = DIVERGING
    else:
        low, high = (float(known.min()), float(known.max())) if known.size else (0.0, 1.0)
        constant = high <= low
        if constant:  # every head the same: a range around the value, and one tick that says it
            pad = abs(low) * 0.01 or 1.0
            low, high = low - pad, low + pad
        norm = Normalize(low, high)
        cmap = SEQUENTIAL
    colours = matplotlib.colormaps[cmap].with_extremes(bad=MISSING)
    image = axes.imshow(np.ma.masked_invalid(grid), cmap=colours, norm=norm, aspect="auto", interpolation="nearest")
    _hatch(axes, removed)
    if annotate if annotate is not None else grid.size <= ANNOTATE_CELLS:
        _annotate(axes, grid, image)
    bar = figure.colorbar(image, ax=axes, fraction=0.05, pad=0.02, aspect=20)
    bar.set_label(name)
    bar.outline.set_linewidth(0.4)
    bar.formatter = ScalarFormatter(useOffset=False)  # "1e-5+2.206" above a bar is unreadable in print
    if not signed and known.size and float(known.min()) == float(known.max()):
        bar.set_ticks([float(known.min())], labels=[f"{float(known.min()):.4g}"])
    axes.set_title(title or f"{name} (layer x head)")
    _legend(figure, pruned_shown=bool(removed.any()), missing_shown=bool((~np.isfinite(grid) & ~removed).any()))
    return figure


@paper_figure
def head_mask(kept: Any, *, title: str, removed_label: str = "masked") -> Figure:
    """kept: [layers][heads], truthy = kept; removed heads are hatched (a mask, or the pruned heads)."""
    grid = as_grid(kept)  # [layers, heads], 1 = kept
    layers, heads = grid.shape
    removed = ~(np.nan_to_num(grid) > 0)
    figure, axes = _head_axes(layers, heads)
    colours = ListedColormap(["white", "#56B4E9"])
    axes.imshow((~removed).astype(float), cmap=colours, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    _hatch(axes, removed)
    _grid_lines(axes, layers, heads)
    axes.set_title(f"{title}: {int(removed.sum())} of {removed.size} heads {removed_label}")
    handles = [
        Patch(facecolor="#56B4E9", edgecolor="#4d4d4d", linewidth=0.4, label="kept"),
        Patch(facecolor=MISSING, edgecolor="#4d4d4d", hatch=HATCH, linewidth=0.4, label=removed_label),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=2)
    return figure


def _head_axes(layers: int, heads: int) -> tuple[Figure, Any]:
    """A figure sized so that cells stay near-square: one column up to 24 heads, two beyond."""
    width = SINGLE if heads <= 24 else DOUBLE
    cell = min(0.26, (width - 1.1) / max(heads, 1))
    figure = new_figure(width, clamp(layers * cell + 1.0, 1.8, 8.0))
    axes = figure.subplots()
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    for axis, count in ((axes.xaxis, heads), (axes.yaxis, layers)):
        if count <= 16:
            axis.set_ticks(range(count))
        else:
            axis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    return figure, axes


def _hatch(axes: Any, removed: np.ndarray) -> None:
    for layer, head in zip(*np.nonzero(removed)):
        axes.add_patch(
            Rectangle((head - 0.5, layer - 0.5), 1, 1, facecolor=MISSING, edgecolor="#4d4d4d", hatch=HATCH, linewidth=0)
        )


def _grid_lines(axes: Any, layers: int, heads: int) -> None:
    axes.set_xticks(np.arange(-0.5, heads, 1), minor=True)
    axes.set_yticks(np.arange(-0.5, layers, 1), minor=True)
    axes.grid(which="minor", color="#4d4d4d", linewidth=0.3)
    axes.tick_params(which="minor", length=0)


def _annotate(axes: Any, grid: np.ndarray, image: Any) -> None:
    """The value in each cell, dark on light colours and light on dark ones."""
    for (layer, head), value in np.ndenumerate(grid):
        if not np.isfinite(value):
            continue
        red, green, blue, _ = image.cmap(image.norm(value))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue > 0.55
        text = f"{value:.2g}" if abs(value) < 0.01 and value != 0 else f"{value:.2f}"
        axes.text(head, layer, text, ha="center", va="center", fontsize=5.5, color="black" if dark else "white")


def _legend(figure: Figure, *, pruned_shown: bool, missing_shown: bool) -> None:
    handles = []
    if pruned_shown:
        handles.append(Patch(facecolor=MISSING, edgecolor="#4d4d4d", hatch=HATCH, linewidth=0, label="pruned head"))
    if missing_shown:
        handles.append(Patch(facecolor=MISSING, label="no value"))
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
