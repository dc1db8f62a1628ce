"""Renderers for `workbench runs`, `show` and `compare`. They read records; they never load models.

Everything a record holds is data (a relation name from a treebank can be `[/red]`): it is shown
through `Text` objects or a console with markup off (`cli.out`), never parsed as rich markup.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from workbench.db.records import RunDetail, RunSummary, StepRecord
from workbench.durations import duration_text
from workbench.scores import layer_json
from workbench.sweeps import SEPARATOR as SWEEP_SEPARATOR
from workbench.sweeps import sweep_of
from workbench.ui.attention_maps import attention_map_views
from workbench.ui.charts import bar_chart
from workbench.ui.comparison import DEFAULT_TOLERANCE, compare_runs
from workbench.ui import analysis_views, head_views  # noqa: F401  (they register step views)
from workbench.ui.heatmap import heatmap
from workbench.ui.registry import STEP_VIEWS, VIEWS_WITH_METRICS

if TYPE_CHECKING:
    from workbench.sweeps import Grid, SweepOutcome

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
        rerun = run.steps_total > 0 and run.steps_cached == run.steps_total  # nothing computed: a replay
        steps = Text("all cached" if rerun else f"{run.steps_total}" + (f" ({run.steps_cached} cached)" if run.steps_cached else ""))
        if run.steps_failed:
            steps.append(f" {run.steps_failed} failed", style="red")
        if run.imported_from:
            steps.append(" imported", style="cyan")
        if sweep_of(run.name):
            steps.append(" sweep", style="blue")
        table.add_row(
            str(run.id),
            run_name_text(run.name),
            status_text(run.status),
            run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            duration_text(run.duration_s),
            run.device or "",
            steps,
            style="dim" if rerun else None,
        )
    return table


def run_name_text(name: str) -> Text:
    """A run's name; a sweep point's (`recipe--key_value--...`) with its point dimmed after the recipe."""
    swept = sweep_of(name)
    if swept is None:
        return Text(name)
    return Text.assemble(swept[0], (SWEEP_SEPARATOR + swept[1], "dim"))


def run_view(
    run: RunDetail,
    *,
    step_ids: list[str] | None = None,
    scores: list[str] | None = None,
    cache_dir: Path | None = None,
    maps: list[str] | None = None,
) -> Group:
    """Everything about a run: its steps, then each step's metrics, heatmaps and charts.

    `cache_dir` lets views read files of cache entries (saved attention maps); `maps` picks them.
    """
    parts: list[RenderableType] = [_run_header(run), steps_table(run.steps)]
    for step in run.steps:
        if step_ids and step.step_id not in step_ids:
            continue
        body = list(step_body(step, scores=scores, cache_dir=cache_dir, maps=maps))
        if body:
            title = Text.assemble((step.step_id, "bold"), f" ({step.kind})")  # a Text: never read as markup
            parts.append(Panel(Group(*body), title=title, title_align="left", expand=False))
    return Group(*parts)


def step_body(
    step: StepRecord, *, scores: list[str] | None = None, cache_dir: Path | None = None, maps: list[str] | None = None
) -> Iterable[RenderableType]:
    if step.error:
        yield Text(step.error, style="red")  # the whole error: its last line can be a bare column list
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
    if cache_dir is not None and step.kind == "attention" and scores is None:
        yield from attention_map_views(step, cache_dir, maps)


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
        table.add_row(step.step_id, step.kind, status_text(step.status), duration_text(step.duration_s), step.key[:12])
    return table


def metrics_table(metrics: dict[str, float | None], title: str = "metrics") -> Group:
    table = Table(show_header=False, box=None)
    table.add_column("name", style="bold")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, format_number(value))
    return Group(Text(title, style="bold underline"), table)


def compare_view(a: RunDetail, b: RunDetail, *, changed_only: bool = False, tolerance: float = DEFAULT_TOLERANCE) -> Group:
    """Metric deltas of steps both runs have, and head- and layer-score differences (b - a)."""
    comparison = compare_runs(a, b, changed_only=changed_only, tolerance=tolerance)
    header = Text(f"run {a.summary.id} ({a.summary.name})  vs  run {b.summary.id} ({b.summary.name})", style="bold")
    parts: list[RenderableType] = [header]
    table = Table(title="Metrics (b - a)" + (" that changed" if changed_only else ""), title_justify="left")
    for column in ("step", "metric", f"run {a.summary.id}", f"run {b.summary.id}", "delta"):
        table.add_column(column, justify="left" if column in ("step", "metric") else "right")
    charts: list[RenderableType] = []
    identical = []
    for step in comparison.steps:
        for row in step.metrics:
            table.add_row(step.step_id, row["name"], format_number(row["a"]), format_number(row["b"]), _signed(row["delta"]))
        if step.same_key:
            identical.append(step.step_id)
        for grid in step.head_scores:
            if grid["max_abs_delta"] > tolerance:
                charts.append(heatmap(grid["delta"], f"{step.step_id} {grid['name']}: b - a", diverging=True))
        for line in step.layer_scores:
            if line["max_abs_delta"] > tolerance:
                rows = [(f"layer {i}", value) for i, value in enumerate(line["delta"])]
                charts.append(bar_chart(rows, f"{step.step_id} {line['name']} by layer: b - a"))
    parts.append(table)
    parts.extend(charts)
    if identical:
        parts.append(Text(f"identical (one cache entry, same inputs): {', '.join(identical)}", style="dim"))
    if comparison.only_a or comparison.only_b:
        parts.append(
            Text(
                f"only in run {a.summary.id}: {', '.join(comparison.only_a) or '-'}; "
                f"only in run {b.summary.id}: {', '.join(comparison.only_b) or '-'}",
                style="dim",
            )
        )
    return Group(*parts)


def run_json(run: RunDetail) -> dict[str, Any]:
    """Every metric, head score and layer score of a run, machine-readable."""
    summary = run.summary
    return {
        "id": summary.id,
        "recipe": run.recipe_name,
        "name": summary.name,  # the run's name: the recipe's, or a sweep point's (`recipe--key_value`)
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
                "layer_scores": layer_json(step.layer_scores),
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
            "imported_from": run.imported_from,
            "sweep": (sweep_of(run.name) or (None, None))[0],  # the recipe a sweep point belongs to
            "point": (sweep_of(run.name) or (None, None))[1],  # 'id_bert-tiny--seed_1'
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


def _run_header(run: RunDetail) -> Text:
    s = run.summary
    text = Text()
    text.append(f"run {s.id}", style="bold")
    text.append("  ")
    text.append_text(run_name_text(s.name))  # the run's own name (a sweep point's), not its recipe row's
    text.append("  ")
    text.append_text(status_text(s.status))
    text.append(f"  started {s.started_at:%Y-%m-%d %H:%M:%S}  {duration_text(s.duration_s)}  device {s.device}  seed {run.seed}")
    if run.overrides:
        text.append(f"\n--set {' --set '.join(run.overrides)}", style="dim")
    if s.imported_from:
        text.append(f"\nimported from {s.imported_from}", style="cyan")
    if run.error:
        text.append(f"\n{run.error}", style="red")
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


# ---- sweeps (workbench/sweeps.py) -------------------------------------------------------------------

SWEEP_STATUS_STYLE = {**STATUS_STYLE, "queued": "dim", "not started": "dim"}
MAX_LIVE_POINTS = 20  # a bigger sweep's live table shows the points running and those that failed


def grid_table(grid: "Grid") -> Table:
    """`run --sweep ... --dry-run`: the points, numbered as `--point` and a Slurm array index take them."""
    table = Table(title=f"Sweep of {grid.recipe}: {len(grid.points)} points ({grid.shape})", title_justify="left")
    for column in ("#", "point", "run name"):
        table.add_column(column, justify="right" if column == "#" else "left")
    for point in grid.points:
        table.add_row(str(point.index), Text(point.label), Text(point.name))
    return table


def sweep_table(outcome: "SweepOutcome", *, live: bool = False) -> Table:
    """The points of a sweep: what each sets, how it ended (or is doing), its run and its time."""
    counts: dict[str, int] = {}
    for point in outcome.points:
        counts[point.status] = counts.get(point.status, 0) + 1
    total = len(outcome.points)
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    title = f"Sweep: {total} points ({outcome.grid.shape}): {tally}"
    table = Table(title=title, title_justify="left")
    for column in ("#", "point", "status", "run", "steps" if live else "name", "duration"):
        right = column in ("#", "run", "duration")
        # a narrow terminal folds a point or a name onto more lines rather than cut what one types
        table.add_column(column, justify="right" if right else "left", overflow="fold", no_wrap=right)
    shown = outcome.points
    if live and total > MAX_LIVE_POINTS:
        shown = [p for p in outcome.points if p.status in ("running", "failed")][-MAX_LIVE_POINTS:]
    for point in shown:
        status = Text(point.status, style=SWEEP_STATUS_STYLE.get(point.status, ""))
        if point.status == "failed" and point.returncode is not None and point.returncode not in (1, 2):
            status.append(f" ({point.ending})")  # a crash, not an error the run reported
        steps = f"{point.steps_done}/{outcome.grid.steps}" if point.started is not None else ""
        table.add_row(
            str(point.point.index),
            Text(point.point.label),
            status,
            str(point.run_id) if point.run_id is not None else "-",
            Text(steps if live else point.point.name),
            duration_text(point.duration_s) if point.started is not None else "-",
        )
    return table


def sweep_failures(outcome: "SweepOutcome") -> list[Text]:
    """For each point that failed: what it said, and where its whole log is."""
    lines = []
    for point in outcome.points:
        if point.status == "failed":
            lines.append(Text.assemble((f"point {point.index} ({point.point.label}) failed", "red"), f": log {point.log}"))
            for line in (point.error or "").splitlines():
                lines.append(Text("  " + line))
    return lines
