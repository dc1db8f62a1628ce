"""An interactive heatmap: a layer x head (or token x token) grid with a cursor.

Arrows or hjkl move the cursor, n/p page through the grids it holds (every head score of a step,
every saved attention map), N/P jump to the next group (the next layer's maps); a click moves the
cursor too. The line under the title says what the cursor is on (pages.describe). Grids wider or
taller than the widget scroll with the cursor, so 80 x 24 shows every cell one way or another.
Colours are the terminal heatmaps' (workbench/ui/heatmap.py); without colour (NO_COLOR) the values
are printed in every cell and the cursor cell is shown in reverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.message import Message
from textual.widget import Widget

from workbench.browse.pages import GridPage, describe
from workbench.ui.heatmap import DIVERGING, SEQUENTIAL
from workbench.ui.heatmap import format_value as cell_format  # the terminal heatmaps' cell text: ".53", "-.003"

MAX_ROWS = 16  # rows shown at once at most; more (or more than fit the pane) scroll with the cursor
MIN_ROWS = 3
HEADER_LINES = 3  # title, the cursor's readout, column names
WIDE_CELL, NARROW_CELL = 6, 5


def scale(values: Sequence[Sequence[float | None]], diverging: bool) -> tuple[float, float, bool]:
    finite = [v for row in values for v in row if v is not None and math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if diverging:
        bound = max(abs(low), abs(high)) or 1.0
        low, high = -bound, bound
    return low, high, bool(finite)


def cell_text(value: float, width: int) -> str:
    """The terminal heatmaps' cell text, shortened to leave a space between cells: "2e-07" -> "2e-7"."""
    text = cell_format(value)
    if len(text) < width:
        return text
    mantissa, _, exponent = f"{value:.0e}".partition("e")
    return f"{mantissa}e{int(exponent)}"[:width]


def cell_style(value: float, low: float, high: float, diverging: bool) -> str:
    palette = DIVERGING if diverging else SEQUENTIAL
    fraction = 0.5 if high == low else (value - low) / (high - low)
    colour = palette[min(max(int(fraction * len(palette)), 0), len(palette) - 1)]
    foreground = "black" if fraction > 0.55 or (diverging and 0.3 < fraction < 0.7) else "white"
    return f"{foreground} on {colour}"


class HeatGrid(Widget, can_focus=True):
    DEFAULT_CSS = """
    HeatGrid { height: auto; width: 1fr; padding: 0 1 0 0; }
    HeatGrid:focus { background: $boost; }
    """
    BINDINGS = [
        Binding("up,k", "move(-1, 0)", "up", show=False),
        Binding("down,j", "move(1, 0)", "down", show=False),
        Binding("left,h", "move(0, -1)", "left", show=False),
        Binding("right,l", "move(0, 1)", "right", show=False),
        Binding("home", "jump('start')", "first cell", show=False),
        Binding("end", "jump('end')", "last cell", show=False),
        Binding("n", "page(1)", "next grid"),
        Binding("p", "page(-1)", "prev grid"),
        Binding("N", "group(1)", "next layer", show=False),
        Binding("P", "group(-1)", "prev layer", show=False),
    ]

    class Moved(Message):
        """The cursor or the page changed (the compare view keeps its side grids in step)."""

        def __init__(self, grid: "HeatGrid") -> None:
            super().__init__()
            self.grid = grid

    def __init__(self, pages: Sequence[GridPage], *, id: str | None = None, classes: str | None = None, follow: bool = False):
        super().__init__(id=id, classes=classes)
        self.pages = list(pages)
        self.page_index = 0
        self.row = 0
        self.column = 0
        self._row_offset = 0
        self._column_offset = 0
        self._fit_rows = MAX_ROWS  # rows that fit in the pane around it (get_content_height)
        if follow:  # a side grid: shows, never takes the keyboard
            self.can_focus = False

    # ---- state ----------------------------------------------------------------------------------

    @property
    def page(self) -> GridPage | None:
        return self.pages[self.page_index] if self.pages else None

    @property
    def readout(self) -> str:
        page = self.page
        return describe(page, self.row, self.column) if page else ""

    def set_pages(self, pages: Sequence[GridPage]) -> None:
        """New pages (a refresh): stay on the page of the same name and keep the cursor."""
        name = self.page.name if self.page else None
        self.pages = list(pages)
        names = [page.name for page in self.pages]
        self.page_index = names.index(name) if name in names else min(self.page_index, max(len(self.pages) - 1, 0))
        self._clip()
        self.refresh(layout=True)

    def show(self, page_index: int, row: int, column: int) -> None:
        self.page_index = max(0, min(page_index, len(self.pages) - 1))
        self.row, self.column = row, column
        self._clip()
        self.refresh(layout=True)

    def _clip(self) -> None:
        rows, columns = self.page.shape if self.page else (0, 0)
        self.row = max(0, min(self.row, rows - 1))
        self.column = max(0, min(self.column, columns - 1))

    def _changed(self) -> None:
        self._clip()
        self.refresh(layout=True)
        self.post_message(self.Moved(self))

    # ---- actions --------------------------------------------------------------------------------

    def action_move(self, rows: int, columns: int) -> None:
        self.row += rows
        self.column += columns
        self._changed()

    def action_jump(self, where: str) -> None:
        rows, columns = self.page.shape if self.page else (0, 0)
        self.row, self.column = (0, 0) if where == "start" else (rows - 1, columns - 1)
        self._changed()

    def action_page(self, step: int) -> None:
        if self.pages:
            self.page_index = (self.page_index + step) % len(self.pages)
            self._changed()

    def action_group(self, step: int) -> None:
        if not self.pages:
            return
        groups = list(dict.fromkeys(page.group for page in self.pages))
        current = groups.index(self.pages[self.page_index].group)
        wanted = groups[(current + step) % len(groups)]
        self.page_index = next(i for i, page in enumerate(self.pages) if page.group == wanted)
        self._changed()

    def on_click(self, event: Click) -> None:
        layout = self._layout(self.content_size.width)
        if layout is None:
            return
        label_width, cell, _, _ = layout
        row = event.y - HEADER_LINES  # below the title, the readout and the column header
        if 0 <= row < layout[3] and event.x >= label_width:
            self.row = self._row_offset + row
            self.column = self._column_offset + (event.x - label_width) // cell
            self.focus()
            self._changed()

    # ---- drawing --------------------------------------------------------------------------------

    def _layout(self, width: int) -> tuple[int, int, int, int] | None:
        """(label width, cell width, columns shown, rows shown) at this width."""
        page = self.page
        if page is None:
            return None
        rows, columns = page.shape
        names = page.row_names or [str(i) for i in range(rows)]
        label_width = min(max((len(str(name)) for name in names), default=1), 10) + 1
        room = max(width - label_width, NARROW_CELL)
        cell = WIDE_CELL if room >= columns * WIDE_CELL or room < columns * NARROW_CELL else NARROW_CELL
        return label_width, cell, max(1, min(columns, room // cell)), min(rows, MAX_ROWS, self._fit_rows)

    def get_content_height(self, container, viewport, width: int) -> int:  # type: ignore[no-untyped-def]
        """Title, readout, header, the rows that fit in the pane (the rest scroll with the cursor), scale."""
        page = self.page
        if page is None:
            return 1
        room = min(container.height, viewport.height) - HEADER_LINES - 2  # the scale line, a margin
        self._fit_rows = max(MIN_ROWS, min(MAX_ROWS, room)) if room > 0 else MAX_ROWS
        return HEADER_LINES + 1 + min(page.shape[0], self._fit_rows)

    def render(self) -> Text:
        page = self.page
        if page is None:
            return Text("no grid", style="dim")
        width = max(self.content_size.width, 20)
        label_width, cell, shown_columns, shown_rows = self._layout(width)  # type: ignore[misc]
        rows, columns = page.shape
        # Scroll so the cursor stays in view.
        if self.column < self._column_offset:
            self._column_offset = self.column
        elif self.column >= self._column_offset + shown_columns:
            self._column_offset = self.column - shown_columns + 1
        self._column_offset = max(0, min(self._column_offset, columns - shown_columns))
        if self.row < self._row_offset:
            self._row_offset = self.row
        elif self.row >= self._row_offset + shown_rows:
            self._row_offset = self.row - shown_rows + 1
        self._row_offset = max(0, min(self._row_offset, rows - shown_rows))
        low, high, any_value = scale(page.values, page.diverging)

        text = Text(no_wrap=True, overflow="crop")
        text.append(page.title, style="bold")
        if len(self.pages) > 1:
            text.append(f"  {self.page_index + 1}/{len(self.pages)}", style="dim")
            if self.can_focus:
                groups = len({p.group for p in self.pages})
                text.append("  n/p" + ("  N/P layer" if groups > 1 else ""), style="dim")
        text.append("\n")
        text.append(self.readout + "\n", style="bold")
        text.append(" " * label_width)
        visible_columns = range(self._column_offset, self._column_offset + shown_columns)
        for column in visible_columns:
            name = page.column_names[column] if page.column_names and column < len(page.column_names) else str(column)
            label = str(name)[: cell - 1].center(cell)
            text.append(label, style="bold reverse" if column == self.column else "dim")
        text.append("\n")
        for row in range(self._row_offset, self._row_offset + shown_rows):
            name = page.row_names[row] if page.row_names and row < len(page.row_names) else str(row)
            text.append(str(name)[: label_width - 1].rjust(label_width - 1) + " ", style="bold reverse" if row == self.row else "dim")
            for column in visible_columns:
                value = page.value(row, column)
                cursor = row == self.row and column == self.column
                if value is None or not math.isfinite(value):
                    shown, style = "·", "dim"
                else:
                    shown, style = cell_text(value, cell), cell_style(value, low, high, page.diverging)
                body = shown.center(cell)
                if cursor:
                    body = f"[{shown.center(cell - 2)}]" if len(shown) <= cell - 2 else body
                    style = f"{style} bold reverse"
                text.append(body, style=style)
            text.append("\n")
        line = f"min {cell_text(low, 8)}  max {cell_text(high, 8)}" if any_value else "no values"
        if any(v is None for r in page.values for v in r):
            line += "  · no value" + (" (pruned)" if page.kind == "heads" and page.pruned else "")
        if shown_columns < columns:
            line += f"  columns {visible_columns.start}-{visible_columns.stop - 1} of {columns}"
        if shown_rows < rows:
            line += f"  rows {self._row_offset}-{self._row_offset + shown_rows - 1} of {rows}"
        text.append(line, style="dim")
        return text
