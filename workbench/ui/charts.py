"""Small terminal charts: horizontal bars for per-layer values, a line plot for curves."""

from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text

BAR_WIDTH = 40
BLOCKS = " ▏▎▍▌▋▊▉█"


def bar_chart(rows: list[tuple[str, float | None]], title: str, *, width: int = BAR_WIDTH) -> Table:
    """One labelled bar per row, scaled between min(0, values) and max(values)."""
    values = [v for _, v in rows if v is not None and math.isfinite(v)]
    low = min([0.0, *values])
    high = max([*values, low + 1e-12])
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column("label", style="dim", no_wrap=True)
    table.add_column("bar", no_wrap=True)
    table.add_column("value", justify="right")
    for label, value in rows:
        if value is None or not math.isfinite(value):
            table.add_row(label, "", "-")
            continue
        table.add_row(label, _bar((value - low) / (high - low) * width), _format(value))
    return table


def line_plot(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    *,
    width: int = 60,
    height: int = 12,
    x_label: str = "",
    y_label: str = "",
) -> Text:
    """A character plot of one or more (x, y) series, each with its own marker."""
    markers = "●▲■◆✚"
    points = [(x, y) for line in series.values() for x, y in line if math.isfinite(y)]
    if not points:
        return Text(f"{title}: no data", style="dim")
    x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
    y_low, y_high = min(p[1] for p in points), max(p[1] for p in points)
    if y_high == y_low:
        y_high = y_low + 1
    if x_high == x_low:
        x_high = x_low + 1
    canvas = [[" "] * width for _ in range(height)]
    for marker, line in zip(markers, series.values()):
        for x, y in line:
            if not math.isfinite(y):
                continue
            column = round((x - x_low) / (x_high - x_low) * (width - 1))
            row = height - 1 - round((y - y_low) / (y_high - y_low) * (height - 1))
            canvas[row][column] = marker
    text = Text(f"{title}\n", style="bold")
    for index, row in enumerate(canvas):
        label = _format(y_high) if index == 0 else _format(y_low) if index == height - 1 else ""
        text.append(f"{label:>8} │", style="dim")
        text.append("".join(row) + "\n", style="cyan")
    text.append(" " * 9 + "└" + "─" * width + "\n", style="dim")
    text.append(f"{'':9} {_format(x_low):<{width // 2}}{_format(x_high):>{width - width // 2}}\n", style="dim")
    legend = "   ".join(f"{marker} {name}" for marker, name in zip(markers, series))
    text.append(f"{'':9} {x_label}   {legend}   {y_label}".rstrip(), style="dim")
    return text


def _bar(length: float) -> str:
    full = int(length)
    remainder = BLOCKS[int((length - full) * (len(BLOCKS) - 1))]
    return "█" * full + (remainder if remainder != " " else "")


def _format(value: float) -> str:
    if abs(value) >= 1000 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}" if value != int(value) else str(int(value))
