"""Layer x head heatmaps in the terminal: one coloured cell per head, value printed inside."""

from __future__ import annotations

import math

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

# A perceptual ramp (viridis-like) for values, and a diverging one for differences.
SEQUENTIAL = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"]
DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"]


def heatmap(
    grid: list[list[float | None]],
    title: str,
    *,
    diverging: bool = False,
    row_label: str = "layer",
    column_label: str = "head",
    row_names: list[str] | None = None,
    column_names: list[str] | None = None,
) -> Group:
    """A table whose cells are coloured by value; None (e.g. a pruned head) shows as '·'.

    `row_names` / `column_names` label rows and columns (tokens of an attention map) instead of
    their indices; they are data, shown as plain text, column names cut to the cell width.
    """
    values = [v for row in grid for v in row if v is not None and math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if diverging:
        bound = max(abs(low), abs(high)) or 1.0
        low, high = -bound, bound
    palette = DIVERGING if diverging else SEQUENTIAL
    width = max((len(row) for row in grid), default=0)

    table = Table(show_edge=False, pad_edge=False, padding=(0, 0), box=None)
    table.add_column(f"{row_label}\\{column_label}", justify="right", style="dim", no_wrap=True)
    for column in range(width):
        name = column_names[column][:6] if column_names and column < len(column_names) else str(column)
        table.add_column(Text(name), justify="center", no_wrap=True, min_width=6, max_width=6)
    for index, row in enumerate(grid):
        cells = [_cell(row[c] if c < len(row) else None, low, high, palette) for c in range(width)]
        name = row_names[index] if row_names and index < len(row_names) else str(index)
        table.add_row(Padding(Text(name), (0, 1, 0, 0)), *cells)  # a space between the label and the first cell
    scale = f"min {format_value(low)}  max {format_value(high)}" if values else "no values"
    return Group(Text(title, style="bold"), table, Text(scale, style="dim"))


def _cell(value: float | None, low: float, high: float, palette: list[str]) -> Text:
    if value is None or not math.isfinite(value):
        return Text(f"{'·':^6}", style="dim")
    fraction = 0.5 if high == low else (value - low) / (high - low)
    colour = palette[min(int(fraction * len(palette)), len(palette) - 1)]
    foreground = "black" if fraction > 0.55 or (palette is DIVERGING and 0.3 < fraction < 0.7) else "white"
    return Text(f"{format_value(value):^6}", style=f"{foreground} on {colour}")


def format_value(value: float) -> str:
    """A heatmap cell's text, at most 6 characters: ".53", "-.003", "1e-04", "12.3", "7"."""
    if value == int(value) and abs(value) < 100_000:
        return str(int(value))  # masks, counts and ranks read better without decimals
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01:
        return _no_leading_zero(f"{value:.2f}")  # ".53", "-.53" keep cells narrow
    if abs(value) >= 0.0005:
        return _no_leading_zero(f"{value:.3f}")  # an accuracy change of -.003
    return f"{value:.0e}"


def _no_leading_zero(text: str) -> str:
    return text.replace("0.", ".", 1) if text.lstrip("-").startswith("0.") else text
