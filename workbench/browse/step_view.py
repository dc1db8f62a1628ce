"""The right-hand (or lower) half of the run view: everything about one step.

In order: what the step is (status, time, error, warnings), its head scores as an interactive
heatmap (n/p through every score), its saved attention maps (tokens on both axes), then the views
`workbench show` draws for its kind (workbench/ui: loss curve, pruning curve, mask-search table,
prune before/after with spreads, probe curves and tables, relation x best-head table, CAT by layer,
ablations), its metrics, and a bar chart per layer score.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from workbench.browse.formatting import params_text, status_text
from workbench.browse.grid import HeatGrid
from workbench.browse.pages import head_pages, map_pages
from workbench.db.records import RunDetail, StepRecord
from workbench.durations import duration_text
from workbench.ui.charts import bar_chart
from workbench.ui.registry import STEP_VIEWS
from workbench.ui.views import metrics_table, warnings_text


def step_header(step: StepRecord | None, pending: str | None = None) -> Text:
    if step is None:
        return Text(f"{pending} (pending: not started yet)" if pending else "no steps", style="dim")
    text = Text()
    text.append(step.step_id, style="bold")
    text.append(f" ({step.kind})  ")
    text.append_text(status_text(step.status))
    text.append(f"  {duration_text(step.duration_s, hours=True)}  key {step.key[:12]}", style="dim")
    if step.error:
        text.append(f"\n{step.error}", style="red")
    for warning in warnings_text(step):
        text.append("\n")
        text.append_text(warning)
    return text


def step_parts(step: StepRecord) -> list[RenderableType]:
    """The static views of a step, after its heatmaps: the kind's own views, metrics, layer scores."""
    parts: list[RenderableType] = []
    if step.kind in STEP_VIEWS:
        parts.extend(STEP_VIEWS[step.kind](step))
    if step.metrics:
        parts.append(metrics_table(step.metrics))
    for line in step.layer_scores:
        parts.append(bar_chart([(f"layer {i}", v) for i, v in enumerate(line.values)], f"{line.name} by layer", width=30))
    if step.params:
        parts.append(Text(f"params: {params_text(step.params)}", style="dim"))
    return parts


class StepDetail(VerticalScroll):
    """One step of a run. `show(run, step)` swaps the content; the same step again keeps the
    heatmaps' page and cursor (a live refresh must not throw the reader off)."""

    DEFAULT_CSS = """
    StepDetail { height: 1fr; padding: 0 0 0 1; }
    StepDetail > Static { width: 1fr; margin: 0 0 1 0; }
    StepDetail > HeatGrid { margin: 0 0 1 0; }
    """

    def __init__(self, cache_dir: Path | None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.cache_dir = cache_dir
        self.run: RunDetail | None = None
        self.step: StepRecord | None = None
        self.pending: str | None = None

    def compose(self) -> ComposeResult:
        step = self.step
        yield Static(step_header(step, self.pending), id="step-header")
        if step is None or self.run is None:
            return
        heads = head_pages(self.run, step)
        if heads:
            yield HeatGrid(heads, id="heads")
        maps, note = map_pages(step, self.cache_dir)
        if maps:
            yield HeatGrid(maps, id="maps")
        if note:
            yield Static(Text(note, style="dim"))
        for part in step_parts(step):
            yield Static(part)

    async def show(self, run: RunDetail, step: StepRecord | None, pending: str | None = None) -> None:
        same = self.step is not None and step is not None and self.step.step_id == step.step_id
        if same and step == self.step:
            self.run = run
            return
        kept = {grid.id: (grid.page_index, grid.row, grid.column) for grid in self.query(HeatGrid)} if same else {}
        focused = self.app.focused.id if same and isinstance(self.app.focused, HeatGrid) else None
        self.run, self.step, self.pending = run, step, pending
        await self.recompose()
        for grid in self.query(HeatGrid):
            if grid.id in kept:
                grid.show(*kept[grid.id])
            if grid.id == focused:
                grid.focus()
        if not same:
            self.scroll_home(animate=False)

    def grids(self) -> list[HeatGrid]:
        return list(self.query(HeatGrid))
