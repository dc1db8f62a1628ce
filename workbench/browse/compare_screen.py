"""Two runs side by side: metric deltas, and head-score differences (B - A) as a heatmap with a
cursor; when the terminal is wide enough, run A's and run B's own grids stand beside it, their
cursors in step. Differences come from workbench.ui.comparison.compare_runs, as `workbench compare`."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.widgets import Footer, Static

from workbench.browse.formatting import signed
from workbench.browse.grid import WIDE_CELL, HeatGrid
from workbench.browse.live import LiveScreen
from workbench.browse.pages import GridPage, delta_pages, side_page
from workbench.browse.source import Poll
from workbench.browse.widgets import KeyTable
from workbench.db.records import RunDetail, RunSummary
from workbench.ui.charts import bar_chart
from workbench.ui.comparison import Comparison, compare_runs
from workbench.ui.views import format_number

HELP = [
    ("c", "changed only: hide what is equal in both runs (toggle)"),
    ("tab", "between the metrics and the difference heatmap"),
    ("← → ↑ ↓  h j k l", "on the heatmap: move the cursor (A, B and B - A at that head)"),
    ("n  p", "next / previous score that differs"),
    ("escape  backspace", "back"),
]


class CompareScreen(LiveScreen):
    BINDINGS = [
        Binding("escape,backspace", "back", "back"),
        Binding("c", "toggle_changed", "changed only"),
        Binding("n", "grid(1)", "next score", show=False),
        Binding("p", "grid(-1)", "prev score", show=False),
    ]
    DEFAULT_CSS = """
    CompareScreen #compare-header { height: auto; padding: 0 1; }
    CompareScreen #deltas { height: auto; max-height: 12; }
    CompareScreen #grids { height: auto; }
    CompareScreen .side { display: none; width: 1fr; }
    CompareScreen.wide .side { display: block; }
    CompareScreen #delta { width: 1fr; }
    CompareScreen #body > Static { margin: 1 0 0 0; }
    """
    HELP = HELP

    def __init__(self, a: RunDetail, b: RunDetail) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.changed_only = False
        self.comparison: Comparison = compare_runs(a, b)
        self.pages: list[GridPage] = []

    def compose(self) -> ComposeResult:
        yield Static(id="compare-header")
        with VerticalScroll(id="body"):
            table = KeyTable(id="deltas", cursor_type="row")
            for column in ("step", "metric", f"run {self.a.summary.id}", f"run {self.b.summary.id}", "Δ"):
                table.add_column(column, key=column)
            yield table
            with Horizontal(id="grids"):
                yield HeatGrid([], id="side-a", classes="side", follow=True)
                yield HeatGrid([], id="side-b", classes="side", follow=True)
                yield HeatGrid([], id="delta")
            yield Static(id="others")
        yield Footer()

    def on_mount(self) -> None:
        self.refill()
        self.query_one("#deltas").focus()

    def refill(self) -> None:
        a, b = self.a, self.b
        self.comparison = compare_runs(a, b, changed_only=self.changed_only)
        header = Text()
        header.append(f"run {a.summary.id} ({a.summary.name})", style="bold")
        header.append("  vs  ")
        header.append(f"run {b.summary.id} ({b.summary.name})", style="bold")
        header.append(f"   changed only: {'on' if self.changed_only else 'off'} (c)", style="dim")
        self.query_one("#compare-header", Static).update(header)

        table = self.query_one("#deltas", KeyTable)
        keep = table.row_key_at_cursor()
        table.clear()
        for step in self.comparison.steps:
            for row in step.metrics:
                style = "" if row["changed"] else "dim"
                table.add_row(
                    Text(step.step_id, style=style),
                    Text(row["name"], style=style),
                    Text(format_number(row["a"]), justify="right", style=style),
                    Text(format_number(row["b"]), justify="right", style=style),
                    Text(signed(row["delta"]) if row["delta"] is not None else "-", justify="right", style=style),
                    key=f"{step.step_id}\x00{row['name']}",
                )
        table.move_to_key(keep)

        self.pages = delta_pages(self.comparison, a, b)
        delta = self.query_one("#delta", HeatGrid)
        delta.set_pages(self.pages)
        delta.display = bool(self.pages)
        self.sync_sides()
        self.query_one("#others", Static).update(self._others())
        self._fit(self.size.width)

    def _others(self) -> RenderableType:
        parts: list[RenderableType] = []
        if not self.pages:
            parts.append(Text("no head score differs", style="dim"))
        for step in self.comparison.steps:
            for line in step.layer_scores:
                if line["max_abs_delta"] > self.comparison.tolerance:
                    rows = [(f"layer {i}", value) for i, value in enumerate(line["delta"])]
                    parts.append(bar_chart(rows, f"{step.step_id} {line['name']} by layer: b - a", width=30))
        identical = [step.step_id for step in self.comparison.steps if step.same_key]
        if identical:
            parts.append(Text(f"identical (one cache entry, same inputs): {', '.join(identical)}", style="dim"))
        if self.comparison.only_a or self.comparison.only_b:
            parts.append(
                Text(
                    f"only in run {self.a.summary.id}: {', '.join(self.comparison.only_a) or '-'}; "
                    f"only in run {self.b.summary.id}: {', '.join(self.comparison.only_b) or '-'}",
                    style="dim",
                )
            )
        return Group(*parts)

    def sync_sides(self) -> None:
        delta = self.query_one("#delta", HeatGrid)
        page = delta.page
        for which in ("a", "b"):
            side = self.query_one(f"#side-{which}", HeatGrid)
            side.pages = [side_page(page, which)] if page else []
            side.show(0, delta.row, delta.column)

    def on_heat_grid_moved(self, event: HeatGrid.Moved) -> None:
        if event.grid.id == "delta":
            self.sync_sides()

    def _fit(self, width: int) -> None:
        """Side grids only when all three fit next to each other."""
        columns = max((page.shape[1] for page in self.pages), default=0)
        needed = 3 * (4 + columns * WIDE_CELL + 1)
        self.set_class(bool(self.pages) and width >= needed, "wide")

    def on_resize(self, event: Resize) -> None:
        self._fit(event.size.width)

    # ---- live refresh -------------------------------------------------------------------------

    def watched(self) -> dict[int, RunSummary | None]:
        return {self.a.summary.id: self.a.summary, self.b.summary.id: self.b.summary}

    def apply_poll(self, poll: Poll) -> None:
        a = poll.details.get(self.a.summary.id, self.a)
        b = poll.details.get(self.b.summary.id, self.b)
        if (a, b) != (self.a, self.b) and a is not None and b is not None:
            self.a, self.b = a, b
            self.refill()

    # ---- actions --------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_changed(self) -> None:
        self.changed_only = not self.changed_only
        self.refill()

    def action_grid(self, step: int) -> None:
        self.query_one("#delta", HeatGrid).action_page(step)
