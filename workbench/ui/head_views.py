"""Views of the head steps' data: pruning curves, mask-search iterations, prune before/after."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import RenderableType
from rich.table import Table

from workbench.db.records import StepRecord
from workbench.ui.charts import line_plot
from workbench.ui.registry import step_view


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@step_view("prune_curve")
def prune_curve_view(step: StepRecord) -> Iterable[RenderableType]:
    metric = step.data.get("metric", "score")
    curve = step.data.get("curve", [])
    points = [(point["percent"], point["score"]) for point in curve]
    yield line_plot({metric: points}, f"Pruning curve: {metric} vs % of heads masked", x_label="% heads masked")


@step_view("mask_search")
def mask_search_view(step: StepRecord) -> Iterable[RenderableType]:
    metric = step.data.get("metric", "score")
    iterations = step.data.get("iterations", [])
    table = Table(title=f"Mask search (threshold {step.data.get('threshold')} x original {metric})", title_justify="left")
    for column in ("iteration", "heads masked", "% masked", metric):
        table.add_column(column, justify="right")
    kept = step.metrics.get("heads_masked")
    for row in iterations:
        style = "bold green" if row["heads_masked"] == kept else None
        table.add_row(
            str(row["iteration"]), str(row["heads_masked"]), f"{row['percent_masked']:.1f}", _number(row["score"]), style=style
        )
    yield table
    if len(iterations) > 1:
        yield line_plot(
            {metric: [(row["percent_masked"], row["score"]) for row in iterations]},
            f"Mask search: {metric} vs % of heads masked",
            x_label="% heads masked",
        )


@step_view("prune", shows_metrics=True)
def prune_view(step: StepRecord) -> Iterable[RenderableType]:
    data = step.data
    table = Table(title="Pruning: before / after", title_justify="left")
    for column in ("", "before", "after", "change"):
        table.add_column(column, justify="right" if column else "left")
    before, after = data.get("parameters_before"), data.get("parameters_after")
    if before and after:
        table.add_row("parameters", f"{before:,}", f"{after:,}", f"{100 * (after - before) / before:+.1f}%")
    heads_before, heads_after = data.get("heads_before"), data.get("heads_after")
    if heads_before is not None and heads_after is not None:
        table.add_row("heads", str(heads_before), str(heads_after), f"{heads_after - heads_before:+d}")
    metric = data.get("metric")
    if metric and data.get("score_masked") is not None:
        table.add_row(f"{metric} (masked -> pruned)", _number(data["score_masked"]), _number(data.get("score_pruned")), "")
    for row in data.get("speed", []):
        table.add_row(
            f"examples/s, batch {row['batch_size']}",
            f"{row['before']:.1f}",
            f"{row['after']:.1f}",
            f"{100 * (row['after'] / row['before'] - 1):+.1f}%",
        )
    if data.get("max_abs_logit_difference") is not None:
        table.caption = f"max |masked - pruned| logit difference: {data['max_abs_logit_difference']:.2e}"
        table.caption_justify = "left"
    yield table
