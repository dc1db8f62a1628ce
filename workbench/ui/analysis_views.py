"""Views of the analysis steps' data: probe curves by layer, best heads per relation, CAT by layer.

Each view reads the step's JSON data (never torch); the generic per-layer bar charts and per-head
heatmaps of `workbench show` come after it, so these views add what those cannot show: curves
side by side, the relation x best-head table against its baseline, the MDS map of heads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from workbench.db.records import StepRecord
from workbench.ui.charts import line_plot
from workbench.ui.registry import step_view

MAX_SERIES = 5  # line_plot has five markers


# --- probe ----------------------------------------------------------------------------------------


@step_view("probe")
def probe_view(step: StepRecord) -> Iterable[RenderableType]:
    data = step.data
    layers: list[int] = data.get("layers") or []
    accuracy: list[float] = data.get("accuracy") or []
    if not layers or len(accuracy) != len(layers):
        return
    yield _probe_summary(step)
    control = data.get("control_accuracy")
    selectivity = data.get("selectivity")
    mix = (data.get("mix") or {}).get("weights")
    cumulative = data.get("cumulative") or {}
    scored_on = data.get("scored_on", "test")
    columns: list[tuple[str, list[float | None]]] = [("acc", accuracy), ("F1", data.get("macro_f1") or [])]
    legend = [f"acc/F1: {scored_on} accuracy and macro-F1"]
    if control:
        columns += [("ctrl", control), ("sel", selectivity or [])]
        legend.append("ctrl: control-task accuracy, sel = acc - ctrl")
    if mix:
        columns.append(("mix", mix))
        legend.append("mix: scalar-mix weight")
    if cumulative.get("scores"):
        columns += [("cum", cumulative["scores"]), ("Δ", [None, *cumulative.get("deltas", [])])]
        scored = f"{cumulative.get('metric', 'accuracy')}, {cumulative.get('split', 'test')}"
        legend.append(f"cum: cumulative probe P(0..l) ({scored}), Δ = its gain")
    best = step.metrics.get("best_layer")
    title = f"{data.get('task', 'probe')} probes by layer (0 = embeddings, ◀ best on dev)"
    table = Table(title=title, title_justify="left")
    table.add_column("layer", justify="right")
    for name, _ in columns:
        table.add_column(name, justify="right")
    for slot, layer in enumerate(layers):
        marker = " ◀" if best is not None and layer == best else ""
        table.add_row(f"{layer}{marker}", *(_cell(values, slot) for _, values in columns))
    table.caption = "; ".join(legend)
    table.caption_justify = "left"
    yield table
    series = {"accuracy": list(zip(layers, accuracy))}
    if control:
        series["control"] = list(zip(layers, control))
        series["selectivity"] = list(zip(layers, selectivity or []))
    yield line_plot(
        {name: [(x, y) for x, y in points if _finite(y)] for name, points in series.items()},
        f"{data.get('task', 'probe')}: {scored_on} accuracy by layer",
        height=10,
        x_label="layer",
    )


def _probe_summary(step: StepRecord) -> Text:
    metrics, data = step.metrics, step.data
    text = Text()
    text.append(f"task {data.get('task')}", style="bold")
    text.append(f"  {data.get('probe', 'linear')} probe, {len(data.get('labels') or [])} classes")
    examples = data.get("examples") or {}
    if examples:
        text.append("  examples " + " / ".join(f"{split} {count}" for split, count in examples.items()))
    parts = []
    if metrics.get("best_layer") is not None:
        scored_on = data.get("scored_on", "test")
        parts.append(
            f"best layer {_int(metrics['best_layer'])} (chosen on dev): {scored_on} accuracy {_fmt(metrics.get('best_accuracy'))}"
        )
    if metrics.get("selectivity_at_best") is not None:
        parts.append(f"selectivity {_fmt(metrics['selectivity_at_best'])}")
    if metrics.get("majority_accuracy") is not None:
        parts.append(f"majority baseline {_fmt(metrics['majority_accuracy'])}")
    if "center_of_gravity" in metrics:
        parts.append(f"center of gravity {_fmt(metrics['center_of_gravity'], 2)}")
    if "expected_layer" in metrics:
        parts.append(f"expected layer {_fmt(metrics['expected_layer'], 2)}")
    if parts:
        text.append("\n" + "  ·  ".join(parts))
    dropped = {split: n for split, n in (data.get("dropped") or {}).items() if n}
    if dropped:
        text.append("\nnot probed (cut by max_length or without sub-tokens): ", style="dim")
        text.append(", ".join(f"{split} {n}" for split, n in dropped.items()), style="dim")
    return text


# --- syntax_heads -----------------------------------------------------------------------------------


@step_view("syntax_heads")
def syntax_heads_view(step: StepRecord) -> Iterable[RenderableType]:
    data = step.data
    rows: list[dict[str, Any]] = data.get("table") or []
    if not rows:
        return
    yield relation_table(rows)
    rare = data.get("rare") or {}
    if rare:
        listed = ", ".join(f"{name} {count}" for name, count in rare.items())
        yield Text(f"rare relations (fewer arcs than min_count, no head scores): {listed}", style="dim")
    mds = data.get("mds") or {}
    if mds.get("points"):
        yield mds_plot(mds["points"], mds.get("sentences"))


def relation_table(rows: list[dict[str, Any]]) -> Table:
    """Clark et al.'s Table 1: the best head per relation and direction vs the best fixed offset."""
    table = Table(title="Best head per relation vs fixed-offset baseline", title_justify="left")
    for column in ("relation", "arcs", "dep→head", "head→dep", "baseline", "gain"):
        table.add_column(column, justify="left" if column == "relation" else "right")
    for row in rows:
        best = row.get("best", {})
        baseline = row.get("baseline", {})
        cells = []
        for direction in ("dep_to_head", "head_to_dep"):
            head = row.get(direction) or {}
            style = "bold green" if best.get("direction", "").startswith(direction[:3]) else ""
            cells.append(Text(f"{head.get('layer')}-{head.get('head')}  {_fmt(head.get('accuracy'), 3)}", style=style))
        gain = None
        if best.get("accuracy") is not None and baseline.get("accuracy") is not None:
            gain = best["accuracy"] - baseline["accuracy"]
        name = row["relation"] + (" (rare)" if row.get("rare") else "")  # named, but under min_count
        table.add_row(
            Text(name, style="bold" if row["relation"] == "all" else "dim" if row.get("rare") else ""),
            str(row.get("count", "")),
            *cells,
            f"{_signed_int(baseline.get('offset'))}  {_fmt(baseline.get('accuracy'), 3)}",
            Text(f"{gain:+.3f}" if gain is not None else "-", style="green" if gain and gain > 0 else "red"),
        )
    table.caption = "layer-head, counted from 0 as in the heatmaps; baseline: offset and its accuracy"
    table.caption_justify = "left"
    return table


def mds_plot(points: list[dict[str, Any]], sentences: int | None) -> Text:
    """The heads in 2-D (MDS of their Jensen-Shannon distances), one marker per group of layers."""
    layers = sorted({int(point["layer"]) for point in points})
    groups = min(MAX_SERIES, len(layers))
    size = math.ceil(len(layers) / groups)
    series: dict[str, list[tuple[float, float]]] = {}
    for start in range(0, len(layers), size):
        chunk = layers[start : start + size]
        label = f"layer {chunk[0]}" if len(chunk) == 1 else f"layers {chunk[0]}-{chunk[-1]}"
        series[label] = [(p["x"], p["y"]) for p in points if int(p["layer"]) in chunk]
    title = "Heads by Jensen-Shannon distance (MDS)" + (f", {sentences} sentences" if sentences else "")
    return line_plot(series, title, height=14)


# --- cat_probe --------------------------------------------------------------------------------------


@step_view("cat_probe")
def cat_view(step: StepRecord) -> Iterable[RenderableType]:
    data = step.data
    values: list[float | None] = data.get("cat") or []
    if not values:
        return
    text = Text()
    text.append("CAT", style="bold")
    text.append(
        f"  M_A: attention > q{data.get('attention_quantile')}  M_D: tree distance < q{data.get('distance_quantile')}"
        f"{'  (distinct leaves only)' if data.get('exclude_diagonal') else ''}"
    )
    text.append(
        f"\n{_int(step.metrics.get('examples_scored'))} functions scored, {data.get('leaves')} leaves"
        f" ({_int(step.metrics.get('leaves_dropped'))} cut by max_length)",
        style="dim",
    )
    best = data.get("best_head")
    if best:
        text.append(f"\nbest single head: {best['layer']}-{best['head']}  CAT {_fmt(best['cat'], 3)}")
    yield text
    scored = data.get("num_scored") or []
    table = Table(title="CAT by attention layer", title_justify="left", box=None)
    table.add_column("layer", justify="right", style="dim")
    table.add_column("CAT", justify="right")
    table.add_column("vs first", justify="right")
    table.add_column("functions", justify="right", style="dim")
    first = values[0]
    for layer, value in enumerate(values):
        change = f"{value - first:+.3f}" if _finite(value) and _finite(first) else "-"
        table.add_row(str(layer), _fmt(value, 3), change, str(scored[layer]) if layer < len(scored) else "")
    yield table
    filtered = data.get("type_filter")
    if filtered:
        yield Text("leaf types scored per layer: " + "; ".join(f"{layer}: {' '.join(types)}" for layer, types in filtered.items()), style="dim")
    params = step.params
    paper = params.get("parser") == "tree_sitter" and params.get("upgraded_tree") and params.get("type_filter") == 8
    note = f"layer 0 = the first attention layer; tree: {data.get('tree', 'ast')}"
    if paper:  # only with the paper's definitions are its numbers a comparison at all
        note += (
            "\npublished last-layer CAT on Python with these definitions, for checkpoints FINE-TUNED on code "
            "summarisation: RoBERTa 0.205, CodeBERT 0.224 (a pretrained-only model is not comparable)"
        )
    yield Text(note, style="dim")


# --- helpers ----------------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "-"


def _int(value: Any) -> str:
    return str(int(value)) if _finite(value) else "-"


def _signed_int(value: Any) -> str:
    return f"{int(value):+d}" if _finite(value) else "-"


def _cell(values: list[float | None], slot: int) -> str:
    return _fmt(values[slot], 3) if slot < len(values) else "-"
