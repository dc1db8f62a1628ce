"""Renderers for `workbench runs`, `show` and `compare`. They read records; they never load models."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from workbench.db.records import HeadScores, RunDetail, RunSummary, StepRecord
from workbench.ui.charts import bar_chart
from workbench.ui import analysis_views, head_views  # noqa: F401  (they register step views)
from workbench.ui.heatmap import heatmap
from workbench.ui.registry import STEP_VIEWS, VIEWS_WITH_METRICS

MAX_HEATMAPS = 12  # per step in `show`, unless --score names them

STATUS_STYLE = {
    "finished": "green",
    "done": "green",
    "cached": "cyan",
    "running": "yellow",
    "failed": "red",
    "interrupted": "magenta",
}


def runs_table(runs: list[RunSummary]) -> Table:
    table = Table(title="Runs", title_justify="left")
    for column in ("id", "recipe", "status", "started", "duration", "device", "steps"):
        table.add_column(column, justify="right" if column in ("id", "duration") else "left")
    for run in runs:
        steps = f"{run.steps_total}" + (f" ({run.steps_cached} cached)" if run.steps_cached else "")
        if run.steps_failed:
            steps += f" [red]{run.steps_failed} failed[/red]"
        table.add_row(
            str(run.id),
            run.name,
            status_text(run.status),
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            _duration(run.duration_s),
            run.device or "",
            steps,
        )
    return table


def run_view(run: RunDetail, *, step_ids: list[str] | None = None, scores: list[str] | None = None) -> Group:
    """Everything about a run: its steps, then each step's metrics, heatmaps and charts."""
    parts: list[RenderableType] = [_run_header(run), steps_table(run.steps)]
    for step in run.steps:
        if step_ids and step.step_id not in step_ids:
            continue
        body = list(step_body(step, scores=scores))
        if body:
            parts.append(Panel(Group(*body), title=f"[bold]{step.step_id}[/bold] ({step.kind})", title_align="left", expand=False))
    return Group(*parts)


def step_body(step: StepRecord, *, scores: list[str] | None = None) -> Iterable[RenderableType]:
    if step.error:
        yield Text(step.error.splitlines()[-1], style="red")
    yield from warnings_text(step)
    if step.metrics:
        yield metrics_table(step.metrics)
    if step.kind in STEP_VIEWS:
        yield from STEP_VIEWS[step.kind](step)
    grids = [grid for grid in step.head_scores if scores is None or grid.name in scores]
    if scores is None and len(grids) > MAX_HEATMAPS:  # e.g. one per dependency relation and direction
        hidden = [grid.name for grid in grids[MAX_HEATMAPS:]]
        grids = grids[:MAX_HEATMAPS]
    else:
        hidden = []
    for grid in grids:
        yield heatmap(grid.values, f"{grid.name} (layer x head)", diverging=is_signed(grid.name))
    if hidden:
        yield Text(f"{len(hidden)} more head scores; pick with --score NAME: {', '.join(hidden)}", style="dim")
    for line in step.layer_scores:
        if scores is None or line.name in scores:
            yield bar_chart([(f"layer {i}", v) for i, v in enumerate(line.values)], f"{line.name} by layer")


def warnings_text(step: StepRecord) -> Iterable[Text]:
    """A step's warnings (data['warnings']): figures that are not what they seem, in plain words."""
    for warning in step.data.get("warnings") or []:
        yield Text(f"warning: {warning}", style="yellow")


def is_signed(score_name: str) -> bool:
    """Scores that are differences (an ablation's change): drawn with a diverging colour map."""
    return "delta" in score_name


def steps_table(steps: list[StepRecord]) -> Table:
    table = Table(title="Steps", title_justify="left")
    for column in ("step", "kind", "status", "time", "key"):
        table.add_column(column)
    for step in steps:
        table.add_row(step.step_id, step.kind, status_text(step.status), _duration(step.duration_s), step.key[:12])
    return table


def metrics_table(metrics: dict[str, float | None], title: str = "metrics") -> Group:
    table = Table(show_header=False, box=None)
    table.add_column("name", style="bold")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, format_number(value))
    return Group(Text(title, style="bold underline"), table)


def compare_view(a: RunDetail, b: RunDetail) -> Group:
    """Metric deltas of steps both runs have, and head-score difference heatmaps (b - a)."""
    parts: list[RenderableType] = [Text(f"run {a.summary.id} ({a.recipe_name})  vs  run {b.summary.id} ({b.recipe_name})", style="bold")]
    table = Table(title="Metrics (b - a)", title_justify="left")
    for column in ("step", "metric", f"run {a.summary.id}", f"run {b.summary.id}", "delta"):
        table.add_column(column, justify="left" if column in ("step", "metric") else "right")
    heatmaps: list[RenderableType] = []
    for step_a in a.steps:
        step_b = b.step(step_a.step_id)
        if step_b is None:
            continue
        for name in step_a.metrics.keys() & step_b.metrics.keys():
            left, right = step_a.metrics[name], step_b.metrics[name]
            delta = right - left if left is not None and right is not None else None
            table.add_row(step_a.step_id, name, format_number(left), format_number(right), _signed(delta))
        for grid_a in step_a.head_scores:
            grid_b = next((g for g in step_b.head_scores if g.name == grid_a.name), None)
            if grid_b is not None and grid_b.shape == grid_a.shape:
                difference = difference_grid(grid_a, grid_b)
                heatmaps.append(heatmap(difference, f"{step_a.step_id} {grid_a.name}: b - a", diverging=True))
    parts.append(table)
    parts.extend(heatmaps)
    only_a = [s.step_id for s in a.steps if b.step(s.step_id) is None]
    only_b = [s.step_id for s in b.steps if a.step(s.step_id) is None]
    if only_a or only_b:
        parts.append(Text(f"only in run {a.summary.id}: {', '.join(only_a) or '-'}; only in run {b.summary.id}: {', '.join(only_b) or '-'}", style="dim"))
    return Group(*parts)


def difference_grid(a: HeadScores, b: HeadScores) -> list[list[float | None]]:
    return [
        [y - x if x is not None and y is not None else None for x, y in zip(row_a, row_b)]
        for row_a, row_b in zip(a.values, b.values)
    ]


def run_json(run: RunDetail) -> dict[str, Any]:
    """Every metric, head score and layer score of a run, machine-readable."""
    summary = run.summary
    return {
        "id": summary.id,
        "recipe": run.recipe_name,
        "recipe_path": run.recipe_path,
        "status": summary.status,
        "started_at": summary.started_at.isoformat(),
        "finished_at": summary.finished_at.isoformat() if summary.finished_at else None,
        "device": summary.device,
        "seed": run.seed,
        "overrides": run.overrides,
        "environment": run.environment,
        "error": run.error,
        "steps": [
            {
                "id": step.step_id,
                "kind": step.kind,
                "status": step.status,
                "key": step.key,
                "duration_s": step.duration_s,
                "params": step.params,
                "metrics": step.metrics,
                "head_scores": {grid.name: grid.values for grid in step.head_scores},
                "layer_scores": {line.name: line.values for line in step.layer_scores},
                "data": step.data,
                "artifacts": [vars(artifact) for artifact in step.artifacts],
                "error": step.error,
            }
            for step in run.steps
        ],
    }


def runs_json(runs: list[RunSummary]) -> list[dict[str, Any]]:
    return [
        {
            "id": run.id,
            "recipe": run.name,
            "status": run.status,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "duration_s": run.duration_s,
            "device": run.device,
            "steps": run.steps_total,
            "cached": run.steps_cached,
            "failed": run.steps_failed,
        }
        for run in runs
    ]


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def format_number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if float(value).is_integer() and abs(value) < 1e12:
        return f"{int(value)}"
    if abs(value) >= 1000 or abs(value) < 1e-3:
        return f"{value:.4g}"
    return f"{value:.4f}"


def _signed(value: float | None) -> Text:
    if value is None:
        return Text("-")
    style = "green" if value > 0 else "red" if value < 0 else ""
    return Text(f"{value:+.4g}", style=style)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _run_header(run: RunDetail) -> Text:
    s = run.summary
    text = Text()
    text.append(f"run {s.id}", style="bold")
    text.append(f"  {run.recipe_name}  ")
    text.append_text(status_text(s.status))
    text.append(f"  started {s.started_at:%Y-%m-%d %H:%M:%S}  {_duration(s.duration_s)}  device {s.device}  seed {run.seed}")
    if run.overrides:
        text.append(f"\n--set {' --set '.join(run.overrides)}", style="dim")
    if run.error:
        text.append(f"\n{run.error.splitlines()[-1]}", style="red")
    return text


def run_summary(run: RunDetail) -> Group:
    """The end-of-run summary: steps, their metrics, and the first heatmap of each step."""
    parts: list[RenderableType] = [_run_header(run), steps_table(run.steps)]
    for step in run.steps:
        if step.metrics and step.kind not in VIEWS_WITH_METRICS:
            parts.append(metrics_table(step.metrics, title=f"{step.step_id} ({step.kind})"))
        elif step.kind in STEP_VIEWS:
            parts.append(Text(f"{step.step_id} ({step.kind})", style="bold underline"))
        parts.extend(warnings_text(step))
        if step.kind in STEP_VIEWS:
            parts.extend(STEP_VIEWS[step.kind](step))
        if step.head_scores:
            grid = step.head_scores[0]
            parts.append(heatmap(grid.values, f"{step.step_id}: {grid.name} (layer x head)"))
    parts.append(Text(f"workbench show {run.summary.id}  for every score and chart", style="dim"))
    return Group(*parts)


def plan_table(outcome: Any) -> Table:
    """The plan of a dry run: each step, its key, and whether it would come from the cache."""
    table = Table(title="Plan (dry run: nothing is computed)", title_justify="left")
    for column in ("#", "step", "kind", "key", "would"):
        table.add_column(column)
    for number, step in enumerate(outcome.steps, 1):
        would = Text("load from cache", style="cyan") if step.status == "cached" else Text("run", style="yellow")
        table.add_row(str(number), step.step_id, step.kind, step.key[:12], would)
    return table
