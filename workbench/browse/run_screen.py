"""One run: its steps (status and time, pending ones too while it runs) and the selected step."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from workbench.browse.formatting import pending_steps, run_duration, status_text
from workbench.browse.grid import HeatGrid
from workbench.browse.live import LiveScreen
from workbench.browse.source import Poll
from workbench.browse.step_view import StepDetail
from workbench.browse.widgets import KeyTable
from workbench.db.records import RunDetail, RunSummary
from workbench.durations import duration_text

HELP = [
    ("↑ ↓  j k", "choose a step (its metrics, tables, charts and heatmaps show below)"),
    ("enter  tab", "into the step's heatmap; tab again: the next heatmap, then the page"),
    ("← → ↑ ↓  h j k l", "on a heatmap: move the cursor (exact value, rank, pruned)"),
    ("n  p", "next / previous head score (or attention map)"),
    ("N  P", "attention maps: next / previous layer"),
    ("escape  backspace", "back to the runs"),
    ("e  f  r", "export a zip / write the figures / write the HTML report"),
    ("y", "the command that reproduces the run (copied to the clipboard)"),
    ("d", "delete this run (asks first)"),
]


def run_header(run: RunDetail, removed: bool = False) -> Text:
    s = run.summary
    text = Text()
    text.append(f"run {s.id}", style="bold")
    text.append(f"  {s.name}  ")  # the run's own name: a sweep point's, not its recipe row's
    text.append_text(status_text(s.status))
    done = sum(1 for step in run.steps if step.status not in ("running", "pending"))
    planned = len(run.steps) + len(pending_steps(run))
    text.append(f"  {done}/{planned} steps  {run_duration(s)}  {s.started_at:%Y-%m-%d %H:%M}  {s.device or '-'}  seed {run.seed}", style="")
    origin = getattr(s, "imported_from", None)
    if origin:
        text.append(f"\nimported from {origin}", style="dim")
    if run.overrides:
        text.append(f"\n--set {' --set '.join(run.overrides)}", style="dim")
    if run.error:
        text.append(f"\n{run.error.strip().splitlines()[-1]}", style="red")
    if removed:
        text.append("\nthis run has been removed from the store", style="red")
    return text


class RunScreen(LiveScreen):
    BINDINGS = [
        Binding("escape,backspace", "back", "back"),
        Binding("n", "grid('page', 1)", "next score", show=False),
        Binding("p", "grid('page', -1)", "prev score", show=False),
        Binding("N", "grid('group', 1)", "next layer", show=False),
        Binding("P", "grid('group', -1)", "prev layer", show=False),
        Binding("e", "run_action('e')", "export", show=False),
        Binding("f", "run_action('f')", "figures", show=False),
        Binding("r", "run_action('r')", "report", show=False),
        Binding("y", "reproduce", "reproduce", show=False),
        Binding("d", "delete", "delete", show=False),
    ]
    DEFAULT_CSS = """
    RunScreen #run-header { height: auto; max-height: 4; padding: 0 1; }
    RunScreen #steps { height: auto; max-height: 40%; }
    """
    HELP = HELP

    def __init__(self, run: RunDetail) -> None:
        super().__init__()
        self.run = run
        self.removed = False

    def compose(self) -> ComposeResult:
        yield Static(run_header(self.run), id="run-header")
        table = KeyTable(id="steps", cursor_type="row")
        for column in ("step", "kind", "status", "time"):
            table.add_column(column, key=column)
        yield table
        yield StepDetail(self.app.source.cache_dir, id="detail")  # type: ignore[attr-defined]
        yield Footer()

    async def on_mount(self) -> None:
        self.fill_steps()
        self.query_one("#steps").focus()
        await self.show_step()

    # ---- steps --------------------------------------------------------------------------------

    @property
    def steps_table(self) -> KeyTable:
        return self.query_one("#steps", KeyTable)

    def fill_steps(self) -> None:
        table = self.steps_table
        keep = table.row_key_at_cursor()
        table.clear()
        for step in self.run.steps:
            time = duration_text(step.duration_s, hours=True) if step.duration_s is not None else ("…" if step.status == "running" else "-")
            table.add_row(Text(step.step_id), step.kind, status_text(step.status), Text(time, justify="right"), key=step.step_id)
        for step_id in pending_steps(self.run):
            table.add_row(Text(step_id, style="dim"), "", Text("pending", style="dim"), "", key=step_id)
        table.move_to_key(keep)

    def selected_step_id(self) -> str | None:
        return self.steps_table.row_key_at_cursor()

    async def show_step(self) -> None:
        step_id = self.selected_step_id()
        step = self.run.step(step_id) if step_id else None
        await self.query_one("#detail", StepDetail).show(self.run, step, pending=step_id if step is None else None)

    async def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "steps":
            await self.show_step()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        grids = self.query_one("#detail", StepDetail).grids()
        (grids[0] if grids else self.query_one("#detail")).focus()

    def action_grid(self, what: str, step: int) -> None:
        grids = self.query_one("#detail", StepDetail).grids()
        focused = self.app.focused
        grid = focused if isinstance(focused, HeatGrid) else grids[0] if grids else None
        if grid is not None:
            grid.action_page(step) if what == "page" else grid.action_group(step)

    # ---- live refresh -------------------------------------------------------------------------

    def watched(self) -> dict[int, RunSummary | None]:
        return {} if self.removed else {self.run.summary.id: self.run.summary}

    async def apply_poll(self, poll: Poll) -> None:
        run_id = self.run.summary.id
        if run_id not in poll.details:
            return
        detail = poll.details[run_id]
        if detail is None:
            self.removed = True
            self.query_one("#run-header", Static).update(run_header(self.run, removed=True))
            return
        await self.update_run(detail)

    async def update_run(self, detail: RunDetail) -> None:
        changed_steps = [(s.step_id, s.status, s.duration_s) for s in detail.steps] != [
            (s.step_id, s.status, s.duration_s) for s in self.run.steps
        ] or pending_steps(detail) != pending_steps(self.run)
        self.run = detail
        self.query_one("#run-header", Static).update(run_header(detail))
        if changed_steps:
            self.fill_steps()
        await self.show_step()

    def tick(self) -> None:
        if self.run.summary.status == "running" and not self.removed:
            self.query_one("#run-header", Static).update(run_header(self.run))

    # ---- actions --------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_run_action(self, key: str) -> None:
        self.app.start_action(key, self.run.summary.id)  # type: ignore[attr-defined]

    def action_reproduce(self) -> None:
        self.app.show_reproduce(self.run.summary.id)  # type: ignore[attr-defined]

    def action_delete(self) -> None:
        self.app.confirm_delete([self.run.summary.id])  # type: ignore[attr-defined]
