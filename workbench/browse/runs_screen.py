"""The first screen: the runs in the store, newest first, filtered as you type."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input

from workbench.browse.formatting import (
    SORT_COLUMNS,
    matches,
    run_duration,
    run_flags,
    run_line,
    short_name,
    sorted_runs,
    status_text,
    steps_text,
)
from workbench.browse.live import LiveScreen
from workbench.browse.source import MAX_RUNS, Poll
from workbench.browse.widgets import KeyTable, StatusBar
from workbench.db.records import RunSummary

COLUMNS = ("mark", "id", "recipe", "status", "started", "duration", "device", "steps")
RECIPE_WIDTH = 20

HELP = [
    ("enter, click", "open the run"),
    ("↑ ↓  j k", "move"),
    ("/", "filter as you type: words in the recipe, status, device or id (status:running, recipe:quick)"),
    ("escape", "clear the filter"),
    ("s  S", "sort by the next column / reverse the order (or click a column header)"),
    ("space  m", "mark for compare (two at most: A is the older, B the newer)"),
    ("c", "compare the two marked runs (or the marked run with the one under the cursor)"),
    ("d", "delete the marked runs, or the run under the cursor (asks first)"),
    ("e  f  r", "export a zip / write the figures / write the HTML report"),
    ("y", "the command that reproduces the run (copied to the clipboard)"),
    ("marks", "A, B: marked for compare; i: imported from a bundle; s: from a sweep"),
]


class RunsScreen(LiveScreen):
    BINDINGS = [
        Binding("slash", "filter", "filter"),
        Binding("escape", "clear_filter", "clear filter", show=False),
        Binding("space,m", "mark", "mark"),
        Binding("c", "compare", "compare"),
        Binding("s", "sort", "sort"),
        Binding("S", "reverse", "reverse", show=False),
        Binding("d", "delete", "delete"),
        Binding("e", "run_action('e')", "export", show=False),
        Binding("f", "run_action('f')", "figures", show=False),
        Binding("r", "run_action('r')", "report", show=False),
        Binding("y", "reproduce", "reproduce", show=False),
    ]
    DEFAULT_CSS = """
    RunsScreen #filter { height: 1; border: none; padding: 0 1; margin: 0; }
    RunsScreen #filter:focus { border: none; }
    RunsScreen #runs { height: 1fr; }
    RunsScreen #info { height: auto; max-height: 2; }
    """
    HELP = HELP

    def __init__(self) -> None:
        super().__init__()
        self.query_text = ""
        self.sort_column = "id"
        self.descending = True
        self.marked: list[int] = []
        self.shown: list[RunSummary] = []

    def compose(self) -> ComposeResult:
        yield StatusBar(Text(self.app.source.description), id="store")  # type: ignore[attr-defined]
        yield Input(placeholder="/ filter: recipe, status, device (status:running)", id="filter")
        table = KeyTable(id="runs", cursor_type="row", zebra_stripes=False)
        for column in COLUMNS:
            table.add_column("" if column == "mark" else column, key=column)
        yield table
        yield StatusBar(id="info")
        yield Footer()

    def on_mount(self) -> None:
        self.fill()
        self.query_one("#runs").focus()

    # ---- the table ------------------------------------------------------------------------------

    @property
    def table(self) -> KeyTable:
        return self.query_one("#runs", KeyTable)

    def fill(self) -> None:
        """Rebuild the rows from the source's runs: filtered, sorted, the cursor kept on its run."""
        table = self.table
        keep = table.row_key_at_cursor()
        runs = self.app.source.runs  # type: ignore[attr-defined]
        self.shown = sorted_runs([run for run in runs if matches(run, self.query_text)], self.sort_column, self.descending)
        table.clear()
        for run in self.shown:
            table.add_row(*self._cells(run), key=str(run.id))
        table.move_to_key(keep)
        self.update_info()

    def _cells(self, run: RunSummary) -> list[object]:
        ordered = sorted(self.marked)  # compare shows B - A with A the older run, as `workbench compare A B`
        mark = "A" if ordered[:1] == [run.id] else "B" if ordered[1:2] == [run.id] else " "
        name = short_name(run.name, RECIPE_WIDTH)  # a sweep point keeps its point visible
        return [
            Text(mark + run_flags(run), style="bold"),
            Text(str(run.id), justify="right"),
            Text(name),  # a Text: a recipe name is data, never markup
            status_text(run.status),
            run.started_at.strftime("%m-%d %H:%M"),
            Text(run_duration(run), justify="right"),
            Text(run.device or ""),
            steps_text(run),
        ]

    def current(self) -> RunSummary | None:
        key = self.table.row_key_at_cursor()
        return next((run for run in self.shown if str(run.id) == key), None)

    def update_info(self) -> None:
        run = self.current()
        total = len(self.app.source.runs)  # type: ignore[attr-defined]
        order = f"sorted by {self.sort_column} {'↓' if self.descending else '↑'}"
        counts = f"{len(self.shown)} of {total} runs" if self.query_text else f"{total} run{'' if total == 1 else 's'}"
        if self.app.source.truncated:  # type: ignore[attr-defined]
            counts += f" (the newest {MAX_RUNS})"
        line = f"  ·  {run_line(run)}" if run else ""
        self.query_one("#info", StatusBar).update(Text(f"{counts}, {order}{line}"))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.update_info()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.open_run(int(event.row_key.value))  # type: ignore[attr-defined]

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = event.column_key.value
        if column in SORT_COLUMNS:
            if column == self.sort_column:
                self.descending = not self.descending
            else:
                self.sort_column, self.descending = column, column in ("id", "started", "duration", "steps")
            self.fill()

    # ---- live refresh -------------------------------------------------------------------------

    def watched(self) -> dict[int, RunSummary | None]:
        return {}

    def apply_poll(self, poll: Poll) -> None:
        if poll.runs is not None:
            known = {run.id for run in poll.runs}
            self.marked = [run_id for run_id in self.marked if run_id in known]
            self.fill()

    def tick(self) -> None:
        """Once a second: a running run's time so far."""
        for run in self.shown:
            if run.status == "running":
                try:
                    self.table.update_cell(str(run.id), "duration", Text(run_duration(run), justify="right"))
                except Exception:  # the row went away meanwhile
                    pass

    # ---- actions --------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.value = ""
        self.table.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.query_text = event.value
            self.fill()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.table.focus()

    def action_sort(self) -> None:
        index = SORT_COLUMNS.index(self.sort_column)
        self.sort_column = SORT_COLUMNS[(index + 1) % len(SORT_COLUMNS)]
        self.descending = self.sort_column in ("id", "started", "duration", "steps")
        self.fill()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.fill()

    def action_mark(self) -> None:
        run = self.current()
        if run is None:
            return
        if run.id in self.marked:
            self.marked.remove(run.id)
        else:
            self.marked = (self.marked + [run.id])[-2:]
        self.fill()
        self.table.action_cursor_down()

    def action_compare(self) -> None:
        chosen = list(self.marked)
        current = self.current()
        if len(chosen) == 1 and current is not None and current.id not in chosen:
            chosen.append(current.id)
        if len(chosen) != 2:
            self.app.say("mark two runs with space (or one, and put the cursor on the other), then press c", "warning")  # type: ignore[attr-defined]
            return
        first, second = sorted(chosen)
        self.app.open_compare(first, second)  # type: ignore[attr-defined]

    def action_delete(self) -> None:
        ids = list(self.marked) or ([self.current().id] if self.current() else [])  # type: ignore[union-attr]
        if ids:
            self.app.confirm_delete(ids)  # type: ignore[attr-defined]

    def action_run_action(self, key: str) -> None:
        run = self.current()
        if run is not None:
            self.app.start_action(key, run.id)  # type: ignore[attr-defined]

    def action_reproduce(self) -> None:
        run = self.current()
        if run is not None:
            self.app.show_reproduce(run.id)  # type: ignore[attr-defined]
