"""Small widgets the screens share: a table that also takes hjkl, a one-line status bar."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import DataTable, Static


class KeyTable(DataTable):
    """A DataTable with vi keys (j/k/h/l, g/G) besides the arrows, home and end."""

    BINDINGS = [
        Binding("j", "cursor_down", "down", show=False),
        Binding("k", "cursor_up", "up", show=False),
        Binding("h", "cursor_left", "left", show=False),
        Binding("l", "cursor_right", "right", show=False),
        Binding("g", "scroll_top", "top", show=False),
        Binding("G", "scroll_bottom", "bottom", show=False),
    ]

    def row_key_at_cursor(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # an empty table after a refresh
            return None

    def move_to_key(self, key: str | None) -> None:
        """Put the cursor back on the row with this key (after the table was rebuilt)."""
        if key is None or not self.row_count:
            return
        try:
            index = self.get_row_index(key)
        except Exception:  # the row is gone
            return
        self.move_cursor(row=index, animate=False, scroll=True)


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; width: 1fr; color: $text-muted; padding: 0 1; }
    """
