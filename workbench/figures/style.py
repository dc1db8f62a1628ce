"""The look of every figure: sizes and fonts for a two-column paper, colour-blind-safe colours.

Settings are applied per figure with `matplotlib.rc_context` (the `paper_figure` decorator when a
figure is built, `saving()` when it is written), never to matplotlib's global rcParams: a program
that imports the workbench keeps its own matplotlib defaults.
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SINGLE = 3.4  # in: one column of a two-column paper (ACL, NeurIPS, IEEE are 3.25-3.5)
DOUBLE = 7.0  # in: the full text width

# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
SEQUENTIAL = "viridis"  # head scores
ATTENTION = "cividis"  # attention maps: another perceptually uniform map, so the two never read alike
DIVERGING = "RdBu_r"  # signed scores (ColorBrewer's, colour-blind safe), always centred at 0
MISSING = "#d9d9d9"  # a cell without a value
HATCH = "////"  # a pruned head

PAPER_RC: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # ships with matplotlib: the same metrics everywhere
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 9,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=COLORS),
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "hatch.linewidth": 0.6,
    "hatch.color": "#4d4d4d",
    "image.cmap": SEQUENTIAL,
    # Labels come from data (relation names, tokens such as "$"): never read them as mathtext.
    "text.parse_math": False,
    "text.usetex": False,
    # Vector output keeps text as text: selectable, searchable, and editable in the camera-ready.
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.hashsalt": "workbench",  # stable element ids: the same figure writes the same bytes
    "savefig.dpi": 300,
    "figure.dpi": 100,
}

F = TypeVar("F", bound=Callable[..., Figure])


def paper_figure(function: F) -> F:
    """Build the figure under PAPER_RC (fonts and line widths are read when artists are created);
    the figure's label names the function that drew it ("head_heatmap"), its kind."""

    @functools.wraps(function)
    def build(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(PAPER_RC):
            figure = function(*args, **kwargs)
            wrap_titles(figure)
        figure.set_label(function.__name__)
        return figure

    return build  # type: ignore[return-value]


@contextmanager
def saving() -> Iterator[None]:
    """The same settings again while writing: font types and hatch widths are read at save time."""
    with matplotlib.rc_context(PAPER_RC):
        yield


def wrap_titles(figure: Figure) -> None:
    """Break titles that would run past the figure's edge (step ids and score names come from recipes);
    constrained layout makes room for extra lines, never for a line wider than the figure."""
    width_pt = figure.get_figwidth() * 72
    for axes in figure.axes:
        title = axes.title
        text = title.get_text()
        characters = max(20, int(width_pt / (title.get_fontsize() * 0.6)))  # DejaVu Sans: about 0.55 em per character
        if text and max(len(line) for line in text.splitlines()) > characters:
            lines = [textwrap.fill(line, characters, break_on_hyphens=False) for line in text.splitlines()]
            title.set_text("\n".join(lines))


def new_figure(width: float = SINGLE, height: float = 2.4) -> Figure:
    """An Agg-backed Figure outside pyplot (no global state, nothing to close), laid out by constraints."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
