"""Probe figures by layer (Tenney et al. 2019; Hewitt & Liang 2019).

Layers are hidden-state indices (0 = embeddings), the probe step's own numbering; every series is
given aligned with `layers` (the indices probed, possibly a subset).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workbench.figures.grids import as_line
from workbench.figures.style import COLORS, SINGLE, new_figure, paper_figure

LAYER_LABEL = "layer (0 = embeddings)"


@paper_figure
def probe_accuracy(
    layers: Sequence[int],
    accuracy: Sequence[float | None],
    *,
    task: str,
    scored_on: str = "test",
    macro_f1: Sequence[float | None] | None = None,
    control: Sequence[float | None] | None = None,
    selectivity: Sequence[float | None] | None = None,
    best_layer: float | None = None,
    majority: float | None = None,
) -> Figure:
    """Accuracy (and macro-F1), control-task accuracy and selectivity = accuracy - control, by layer."""
    x = np.asarray(layers, dtype=float)
    figure = new_figure(SINGLE, 2.9)
    axes = figure.subplots()
    axes.plot(x, as_line(accuracy), marker="o", color=COLORS[0], label="accuracy")
    if macro_f1:
        axes.plot(x, as_line(macro_f1), marker=".", linestyle=":", color=COLORS[0], label="macro-F1")
    if control:
        axes.plot(x, as_line(control), marker="s", color=COLORS[1], label="control task")
    if selectivity:
        axes.plot(x, as_line(selectivity), marker="^", color=COLORS[2], label="selectivity")
    if majority is not None:
        axes.axhline(majority, color="#4d4d4d", linewidth=0.7, linestyle="--", label="majority class")
    if best_layer is not None:
        axes.axvline(best_layer, color="#4d4d4d", linewidth=0.7, linestyle=":", label=f"best on dev: {best_layer:g}")
    axes.set_xlabel(LAYER_LABEL)
    axes.set_ylabel(f"{scored_on} accuracy")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(f"{task} probes by layer")
    axes.grid(alpha=0.3, linewidth=0.4)
    figure.legend(loc="outside lower center", ncols=3)  # below: the curves cross the whole axes
    return figure


@paper_figure
def probe_layer_use(
    layers: Sequence[int],
    *,
    task: str,
    mix_weights: Sequence[float | None] | None = None,
    center_of_gravity: float | None = None,
    deltas: Sequence[float | None] | None = None,
    expected_layer: float | None = None,
    cumulative_metric: str = "accuracy",
) -> Figure:
    """Tenney et al.'s Fig. 2: scalar-mix weights s_l with their center of gravity, and the
    cumulative gain Delta(l) = score(P(0..l)) - score(P(0..l-1)) with the expected layer.

    deltas: one per layer after the first (layers[1:]).
    """
    panels = [name for name, given in (("mix", mix_weights), ("delta", deltas)) if given]
    figure = new_figure(SINGLE, 1.3 + 1.1 * len(panels))
    axes_list = np.atleast_1d(figure.subplots(len(panels), 1, sharex=True))
    x = np.asarray(layers, dtype=float)
    for axes, panel in zip(axes_list, panels):
        if panel == "mix":
            axes.bar(x, np.nan_to_num(as_line(mix_weights or [])), width=0.7, color=COLORS[0])
            axes.set_ylabel("mix weight")
            _mark(axes, center_of_gravity, "center of gravity", COLORS[1])
        else:
            values = as_line(deltas or [])
            axes.bar(x[1 : 1 + len(values)], np.nan_to_num(values), width=0.7, color=COLORS[2])
            axes.axhline(0, color="black", linewidth=0.5)
            axes.set_ylabel(f"Δ {cumulative_metric}")
            _mark(axes, expected_layer, "expected layer", COLORS[1])
        axes.grid(axis="y", alpha=0.3, linewidth=0.4)
        if axes.get_legend_handles_labels()[1]:  # the marker is absent when undefined (no gain anywhere)
            axes.legend(loc="upper right")
    axes_list[-1].set_xlabel(LAYER_LABEL)
    axes_list[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes_list[0].set_title(f"{task}: which layers the probes use")
    return figure


def _mark(axes, value: float | None, label: str, colour: str) -> None:  # type: ignore[no-untyped-def]
    if value is not None and np.isfinite(value):
        axes.axvline(value, color=colour, linewidth=1.0, linestyle="--", label=f"{label} {value:.2f}")
