"""Views of the model steps' data: the finetune loss curve, pruning curves, mask-search iterations,
prune before/after, head ablations."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import RenderableType
from rich.table import Table

from workbench.db.records import StepRecord
from workbench.ui.charts import bar_chart, line_plot
from workbench.ui.registry import step_view


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _datasets(data: dict) -> str:
    ranked, scored = data.get("ranked_on"), data.get("scored_on")
    if not ranked or not scored:
        return ""
    return f" (heads ranked on {ranked}, scored on {scored})"


@step_view("finetune")
def finetune_view(step: StepRecord) -> Iterable[RenderableType]:
    curve = step.data.get("loss_curve") or []
    if len(curve) > 1:
        title = f"Training loss (mean of the last 20 steps), {step.data.get('precision', 'float32')}"
        yield line_plot({"loss": [(x, y) for x, y in curve]}, title, x_label="optimizer step")


@step_view("prune_curve")
def prune_curve_view(step: StepRecord) -> Iterable[RenderableType]:
    metric = step.data.get("metric", "score")
    curve = step.data.get("curve", [])
    points = [(point["percent"], point["score"]) for point in curve]
    title = f"Pruning curve: {metric} vs % of heads masked{_datasets(step.data)}"
    yield line_plot({metric: points}, title, x_label="% heads masked")


@step_view("mask_search")
def mask_search_view(step: StepRecord) -> Iterable[RenderableType]:
    metric = step.data.get("metric", "score")
    iterations = step.data.get("iterations", [])
    rule = step.data.get("rule") or f"{metric} >= {step.data.get('threshold')} x original"
    table = Table(title=f"Mask search (keep masking while {rule}){_datasets(step.data)}", title_justify="left")
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
        before, after, speedup = row["before"], row["after"], row["speedup"]
        table.add_row(
            f"examples/s, batch {row['batch_size']}",
            f"{before['median']:.1f} ± {before['iqr'] / 2:.1f}",
            f"{after['median']:.1f} ± {after['iqr'] / 2:.1f}",
            f"{speedup['median']:.3f}x (IQR {speedup['q1']:.3f}-{speedup['q3']:.3f})",
        )
    notes = []
    if data.get("max_abs_logit_difference") is not None:
        notes.append(f"max |masked - pruned| logit difference: {data['max_abs_logit_difference']:.2e}")
    if data.get("timing"):
        notes.append(f"{data['timing']}; ± half the IQR")
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    yield table


@step_view("head_ablation")
def head_ablation_view(step: StepRecord) -> Iterable[RenderableType]:
    """Michel et al.'s Figure 1 (the distribution of single-head ablations) and Table 2."""
    data = step.data
    metric = data.get("metric", "score")
    deltas = sorted(
        value for grid in step.head_scores if grid.name == "score_delta" for row in grid.values for value in row if value is not None
    )
    if deltas:
        low, high = deltas[0], deltas[-1]
        bins = 8
        width = (high - low) / bins or 1.0
        counts = [0] * bins
        for value in deltas:
            counts[min(int((value - low) / width), bins - 1)] += 1
        rows = [(f"{low + i * width:+.4f} .. {low + (i + 1) * width:+.4f}", float(count)) for i, count in enumerate(counts)]
        yield bar_chart(rows, f"Heads by {metric} change when masked alone (original {_number(data.get('original'))})")
    table_rows = data.get("keep_best_per_layer") or []
    if table_rows:
        table = Table(title=f"Only one head left in a layer: the best one per layer ({metric})", title_justify="left")
        for column in ("layer", "head kept", metric, "change"):
            table.add_column(column, justify="right")
        for row in table_rows:
            table.add_row(str(row["layer"]), str(row["head"]), _number(row["score"]), f"{row['delta']:+.4f}")
        yield table
