"""HTML tables of a step kind's own data: what `workbench show` prints, for a page.

One function per kind, registered with `@kind_tables("mask_search")`, takes the step record and
yields HTML blocks; every value passes through `markup` (escaped). They read the step's JSON data
only (never torch) and tolerate missing keys: an old store or a failed step records less.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from workbench.db.records import HeadScores, LayerScores, StepRecord
from workbench.report.markup import Content, Html, element, finite, number, signed

KindTables = Callable[[StepRecord], Iterator[Html]]
KIND_TABLES: dict[str, KindTables] = {}
# Layer scores a kind's own table already lists: the generic per-layer table leaves them out.
COVERED_LAYER_SCORES: dict[str, set[str]] = {}


def kind_tables(kind: str, covers: Iterable[str] = ()) -> Callable[[KindTables], KindTables]:
    def register(function: KindTables) -> KindTables:
        KIND_TABLES[kind] = function
        COVERED_LAYER_SCORES[kind] = set(covers)
        return function

    return register


# --- building blocks --------------------------------------------------------------------------------


def table(
    columns: Sequence[Content],
    rows: Iterable[Sequence[Content]],
    *,
    caption: Content = None,
    notes: Content = None,
    marked: Iterable[int] = (),
    text_columns: int = 1,
    align: str | None = None,
) -> Html:
    """A table whose first `text_columns` columns are text and the rest numbers (right-aligned,
    tabular figures), or as `align` says ("lrrrl": l text, r number); rows whose index is in
    `marked` are emphasised (the kept mask, the best layer)."""
    marked = set(marked)
    align = align or "l" * text_columns + "r" * max(0, len(columns) - text_columns)

    def kind(i: int) -> str | None:
        return "num" if i < len(align) and align[i] == "r" else None

    head = element("tr", (element("th", name, scope="col", class_=kind(i)) for i, name in enumerate(columns)))
    body = [
        element(
            "tr",
            (element("td", cell, class_=kind(i)) for i, cell in enumerate(row)),
            class_="marked" if index in marked else None,
        )
        for index, row in enumerate(rows)
    ]
    # A heading above the table rather than a <caption>: a caption wraps to the table's width,
    # which for a two-column table is a few words a line.
    parts: list[Content] = []
    if caption is not None:
        parts.append(element("h4", caption))
    parts.append(element("table", element("thead", head), element("tbody", body)))
    if notes is not None:
        parts.append(element("p", notes, class_="note"))
    return element("div", parts, class_="table")


def pairs(items: Iterable[tuple[Content, Content]], caption: Content = None, *, numbers: bool = True) -> Html:
    """A two-column name/value table: metrics (numbers, right-aligned) or parameters and versions (text)."""
    return table(["name", "value"], [[name, value] for name, value in items], caption=caption, align="lr" if numbers else "ll")


def paragraph(*parts: Content, class_: str | None = None) -> Html:
    return element("p", list(parts), class_=class_)


def _datasets(data: dict[str, Any]) -> str:
    ranked, scored = data.get("ranked_on"), data.get("scored_on")
    return f" (heads ranked on {ranked}, scored on {scored})" if ranked and scored else ""


def _cell(values: Sequence[Any] | None, slot: int, digits: int = 3) -> str:
    return f"{values[slot]:.{digits}f}" if values and slot < len(values) and finite(values[slot]) else "-"


def _fixed(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if finite(value) else "-"


# --- generic: every step ----------------------------------------------------------------------------


def layer_scores_table(step: StepRecord) -> Html | None:
    """Every per-layer score of the step side by side, one row per layer (numbers, not only bars)."""
    covered = COVERED_LAYER_SCORES.get(step.kind, set())
    lines: list[LayerScores] = [line for line in step.layer_scores if line.name not in covered]
    if not lines:
        return None
    depth = max(len(line.values) for line in lines)
    first = "0 = embeddings" if step.kind in ("extract", "probe") else "0 = the first attention layer"
    rows = [[str(layer), *(_cell(line.values, layer, 4) for line in lines)] for layer in range(depth)]
    return table(["layer", *(line.name for line in lines)], rows, caption=f"Layer scores (layer {first})")


def head_scores_table(step: StepRecord) -> Html | None:
    """One line per head score: its range and its top heads. The heatmaps show the grids."""
    grids: list[HeadScores] = step.head_scores
    if not grids:
        return None
    rows = []
    for grid in grids:
        cells = [(value, layer, head) for layer, row in enumerate(grid.values) for head, value in enumerate(row) if finite(value)]
        if not cells:
            rows.append([grid.name, "-", "-", "-", "-"])
            continue
        values = [value for value, _, _ in cells]
        top = sorted(cells, key=lambda cell: -abs(cell[0]) if "delta" in grid.name else -cell[0])[:3]
        rows.append(
            [
                grid.name,
                number(min(values)),
                number(sum(values) / len(values)),
                number(max(values)),
                ", ".join(f"{layer}-{head} ({number(value, 3)})" for value, layer, head in top),
            ]
        )
    shape = "{} layers x {} heads".format(*grids[0].shape)
    return table(
        ["score", "min", "mean", "max", "top heads (layer-head)"],
        rows,
        caption=f"Head scores ({shape}; the heatmaps below draw every head)",
        align="lrrrl",

    )


# --- the kinds' own tables ----------------------------------------------------------------------------


@kind_tables("prune_curve")
def _prune_curve(step: StepRecord) -> Iterator[Html]:
    curve = step.data.get("curve") or []
    if not curve:
        return
    metric = step.data.get("metric", "score")
    extra = [key for key in curve[0] if key not in ("percent", "score")]
    rows = [[_fixed(point.get("percent"), 1), _fixed(point.get("score")), *(number(point.get(key)) for key in extra)] for point in curve]
    yield table(["% heads masked", metric, *extra], rows, caption=f"Pruning curve{_datasets(step.data)}", text_columns=0)


@kind_tables("mask_search")
def _mask_search(step: StepRecord) -> Iterator[Html]:
    data = step.data
    iterations = data.get("iterations") or []
    if not iterations:
        return
    metric = data.get("metric", "score")
    rule = data.get("rule") or f"{metric} >= {data.get('threshold')} x original"
    kept = step.metrics.get("heads_masked")
    rows = [
        [str(row.get("iteration")), str(row.get("heads_masked")), _fixed(row.get("percent_masked"), 1), _fixed(row.get("score"))]
        for row in iterations
    ]
    marked = [i for i, row in enumerate(iterations) if kept is not None and row.get("heads_masked") == kept]
    yield table(
        ["iteration", "heads masked", "% masked", metric],
        rows,
        caption=f"Mask search: keep masking while {rule}{_datasets(data)}",
        notes="the emphasised row is the mask kept" if marked else None,
        marked=marked,
        text_columns=0,
    )


@kind_tables("prune")
def _prune(step: StepRecord) -> Iterator[Html]:
    data = step.data
    rows: list[list[Content]] = []
    before, after = data.get("parameters_before"), data.get("parameters_after")
    if finite(before) and finite(after) and before:
        rows.append(["parameters", f"{before:,}", f"{after:,}", f"{100 * (after - before) / before:+.1f}%"])
    heads_before, heads_after = data.get("heads_before"), data.get("heads_after")
    if finite(heads_before) and finite(heads_after):
        rows.append(["heads", str(heads_before), str(heads_after), f"{heads_after - heads_before:+d}"])
    metric = data.get("metric")
    if metric and data.get("score_masked") is not None:
        rows.append([f"{metric} (masked → pruned)", _fixed(data.get("score_masked")), _fixed(data.get("score_pruned")), ""])
    for row in data.get("speed") or []:
        rows.append(
            [
                f"examples/s, batch {row.get('batch_size')}",
                _spread(row.get("before")),
                _spread(row.get("after")),
                _speedup(row.get("speedup")),
            ]
        )
    notes = []
    if data.get("max_abs_logit_difference") is not None:
        notes.append(f"max |masked − pruned| logit difference: {number(data['max_abs_logit_difference'])}")
    if data.get("timing"):
        notes.append(f"{data['timing']}; ± half the interquartile range")
    if rows:
        yield table(["", "before", "after", "change"], rows, caption="Pruning: before / after", notes="; ".join(notes) or None)
    pruned = data.get("pruned_heads") or {}
    if pruned:
        listed = "; ".join(f"layer {layer}: {', '.join(str(head) for head in heads)}" for layer, heads in pruned.items())
        yield paragraph("heads pruned (original ids): ", listed, class_="note")


def _spread(summary: Any) -> str:
    if not isinstance(summary, dict) or not finite(summary.get("median")):
        return "-"
    iqr = summary.get("iqr")
    return f"{summary['median']:.1f} ± {iqr / 2:.1f}" if finite(iqr) else f"{summary['median']:.1f}"


def _speedup(summary: Any) -> str:
    if not isinstance(summary, dict) or not finite(summary.get("median")):
        return "-"
    text = f"{summary['median']:.3f}×"
    if finite(summary.get("q1")) and finite(summary.get("q3")):
        text += f" (IQR {summary['q1']:.3f}–{summary['q3']:.3f})"
    return text


@kind_tables("head_ablation")
def _head_ablation(step: StepRecord) -> Iterator[Html]:
    data = step.data
    metric = data.get("metric", "score")
    if data.get("original") is not None:
        yield paragraph(f"{metric} of the model with every head: ", _fixed(data.get("original")))
    rows = data.get("keep_best_per_layer") or []
    if rows:
        yield table(
            ["layer", "head kept", metric, "change"],
            [[str(row.get("layer")), str(row.get("head")), _fixed(row.get("score")), signed(row.get("delta"))] for row in rows],
            caption=f"Only one head left in a layer: the best one per layer ({metric})",
            text_columns=0,
        )


@kind_tables("probe", covers={"accuracy", "macro_f1", "control_accuracy", "selectivity", "mix_weight", "delta"})
def _probe(step: StepRecord) -> Iterator[Html]:
    data, metrics = step.data, step.metrics
    layers: list[int] = data.get("layers") or []
    accuracy = data.get("accuracy") or []
    if not layers or len(accuracy) != len(layers):
        return
    yield _probe_summary(step)
    scored_on = data.get("scored_on", "test")
    columns: list[tuple[str, Sequence[Any]]] = [("accuracy", accuracy), ("macro-F1", data.get("macro_f1") or [])]
    legend = [f"accuracy and macro-F1 on {scored_on}"]
    if data.get("control_accuracy"):
        columns += [("control", data["control_accuracy"]), ("selectivity", data.get("selectivity") or [])]
        legend.append("control: control-task accuracy; selectivity = accuracy − control")
    mix = (data.get("mix") or {}).get("weights")
    if mix:
        columns.append(("mix weight", mix))
    cumulative = data.get("cumulative") or {}
    if cumulative.get("scores"):
        columns += [("cumulative", cumulative["scores"]), ("Δ", [None, *(cumulative.get("deltas") or [])])]
        legend.append(
            f"cumulative: a probe on layers 0..l ({cumulative.get('metric', 'accuracy')}, {cumulative.get('split', 'test')}); Δ its gain"
        )
    best = metrics.get("best_layer")
    rows = [[f"{layer}", *(_cell(values, slot) for _, values in columns)] for slot, layer in enumerate(layers)]
    marked = [slot for slot, layer in enumerate(layers) if best is not None and layer == best]
    legend.append("the emphasised row is the best layer on dev")
    yield table(
        ["layer", *(name for name, _ in columns)],
        rows,
        caption=f"{data.get('task', 'probe')} probes by layer (0 = embeddings)",
        notes="; ".join(legend),
        marked=marked,
        text_columns=0,
    )
    labels = data.get("labels") or []
    if labels:
        yield paragraph(f"{len(labels)} classes: ", ", ".join(str(label) for label in labels), class_="note")


def _probe_summary(step: StepRecord) -> Html:
    data, metrics = step.data, step.metrics
    parts = [f"task {data.get('task')}, {data.get('probe', 'linear')} probe"]
    examples = data.get("examples") or {}
    if examples:
        parts.append("examples " + " / ".join(f"{split} {count}" for split, count in examples.items()))
    if metrics.get("best_layer") is not None:
        parts.append(
            f"best layer {number(metrics['best_layer'])} (chosen on dev): "
            f"{data.get('scored_on', 'test')} accuracy {_fixed(metrics.get('best_accuracy'))}"
        )
    for key, label, digits in (
        ("selectivity_at_best", "selectivity", 4),
        ("majority_accuracy", "majority baseline", 4),
        ("center_of_gravity", "center of gravity", 2),
        ("expected_layer", "expected layer", 2),
    ):
        if metrics.get(key) is not None:
            parts.append(f"{label} {_fixed(metrics[key], digits)}")
    dropped = {split: n for split, n in (data.get("dropped") or {}).items() if n}
    if dropped:
        parts.append("not probed (cut by max_length or without sub-tokens): " + ", ".join(f"{s} {n}" for s, n in dropped.items()))
    return paragraph(" · ".join(parts))


@kind_tables("syntax_heads")
def _syntax_heads(step: StepRecord) -> Iterator[Html]:
    data = step.data
    rows: list[dict[str, Any]] = data.get("table") or []
    if rows:
        yield _relation_table(rows)
    rare = data.get("rare") or {}
    if rare:
        listed = ", ".join(f"{name} ({count})" for name, count in rare.items())
        yield paragraph("rare relations (fewer arcs than min_count, no head scores): ", listed, class_="note")


def _relation_table(rows: list[dict[str, Any]]) -> Html:
    """Clark et al.'s Table 1: the best head per relation and direction vs the best fixed offset."""
    body = []
    for row in rows:
        best, baseline = row.get("best") or {}, row.get("baseline") or {}
        cells: list[Content] = [str(row.get("relation")) + (" (rare)" if row.get("rare") else ""), str(row.get("count", ""))]
        for direction in ("dep_to_head", "head_to_dep"):
            head = row.get(direction) or {}
            cell = f"{head.get('layer')}-{head.get('head')}  {_fixed(head.get('accuracy'), 3)}" if head else "-"
            is_best = str(best.get("direction", "")).startswith(direction[:3])
            cells.append(element("strong", cell) if is_best else cell)
        gain = None
        if finite(best.get("accuracy")) and finite(baseline.get("accuracy")):
            gain = best["accuracy"] - baseline["accuracy"]
        offset = baseline.get("offset")
        cells.append(f"{int(offset):+d}  {_fixed(baseline.get('accuracy'), 3)}" if finite(offset) else "-")
        cells.append(signed(gain, 3))
        body.append(cells)
    return table(
        ["relation", "arcs", "dep → head", "head → dep", "baseline", "gain"],
        body,
        caption="Best head per relation vs the fixed-offset baseline",
        notes="layer-head counted from 0 as in the heatmaps, then its accuracy (the better direction in bold); "
        "baseline: the best fixed offset and its accuracy; gain: best head − baseline",
        text_columns=1,
    )


@kind_tables("cat_probe", covers={"cat"})
def _cat_probe(step: StepRecord) -> Iterator[Html]:
    data, metrics = step.data, step.metrics
    values: list[Any] = data.get("cat") or []
    if not values:
        return
    summary = [
        f"M_A: attention > q{data.get('attention_quantile')}, M_D: tree distance < q{data.get('distance_quantile')}"
        + (" (distinct leaves only)" if data.get("exclude_diagonal") else ""),
        f"{number(metrics.get('examples_scored'))} functions scored, {data.get('leaves')} leaves "
        f"({number(metrics.get('leaves_dropped'))} cut by max_length); tree: {data.get('tree', 'ast')}",
    ]
    best = data.get("best_head")
    if isinstance(best, dict):
        summary.append(f"best single head: {best.get('layer')}-{best.get('head')}, CAT {_fixed(best.get('cat'), 3)}")
    yield paragraph(" · ".join(summary))
    scored = data.get("num_scored") or []
    first = values[0]
    rows = [
        [
            str(layer),
            _fixed(value, 3),
            signed(value - first, 3) if finite(value) and finite(first) else "-",
            str(scored[layer]) if layer < len(scored) else "",
        ]
        for layer, value in enumerate(values)
    ]
    yield table(["layer", "CAT", "vs layer 0", "functions"], rows, caption="CAT by attention layer (0 = the first)", text_columns=0)
    filtered = data.get("type_filter")
    if isinstance(filtered, dict) and filtered:
        listed = "; ".join(f"{layer}: {' '.join(str(t) for t in types)}" for layer, types in filtered.items())
        yield paragraph("leaf types scored per layer: ", listed, class_="note")


@kind_tables("finetune")
def _finetune(step: StepRecord) -> Iterator[Html]:
    curve = step.data.get("loss_curve") or []
    if curve:
        last_step, last_loss = curve[-1][0], curve[-1][1]
        yield paragraph(
            f"{len(curve)} points of the training loss (mean of the last 20 steps), {step.data.get('precision', 'float32')}; "
            f"last: step {number(last_step)}, loss {_fixed(last_loss)}",
            class_="note",
        )
