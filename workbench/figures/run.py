"""A run -> its figures: the thin layer between the store's records and the figure functions.

Per step: the figures of its kind (curves, tables as charts, saved attention maps), then a
heatmap of every head score and a bar chart of every layer score that the kind's figures do not
already show. With `scores`, only the figures of those head and layer scores are drawn.
Everything is read from the records and the cache entry's files (safetensors' numpy API): no
torch, no transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from workbench.db.records import HeadScores, LayerScores, RunDetail, StepRecord
from workbench.figures.ablation import ablation_histogram, keep_best_bars
from workbench.figures.attention import attention_map
from workbench.figures.cat import cat_by_layer
from workbench.figures.curves import layer_profile, loss_curve, pruning_curve
from workbench.errors import WorkbenchError
from workbench.figures.errors import FigureError, NothingToPlot
from workbench.figures.grids import finite, heads_mask
from workbench.figures.heads import head_heatmap, head_mask, is_signed
from workbench.figures.named import NamedFigure, figure_name, unique
from workbench.figures.probes import probe_accuracy, probe_layer_use
from workbench.figures.selection import check_scores, chosen_steps
from workbench.figures.speed import speed_bars
from workbench.figures.syntax import mds_scatter, relation_bars
from workbench.saved_maps import chosen_maps, first_saved_maps, map_grid

HIDDEN_STATE_KINDS = {"extract", "probe"}  # their layer index 0 is the embeddings


@dataclass(frozen=True)
class StepView:
    """What a kind's figure function gets: the step, its run (for related steps) and the cache."""

    step: StepRecord
    run: RunDetail
    cache_dir: Path | None
    maps: Sequence[str] | None

    def pruned(self, shape: tuple[int, int]) -> np.ndarray:
        """bool [layers, heads]: the heads this step's model no longer has."""
        return heads_mask(pruned_heads(self.run, self.step), shape)


KindFigures = Callable[[StepView], Iterator[tuple[str, Figure]]]
KIND_FIGURES: dict[str, KindFigures] = {}
COVERED: dict[str, set[str]] = {}  # kind -> layer scores its own figures draw (no second bar chart)


def kind_figures(kind: str, covers: Iterable[str] = ()) -> Callable[[KindFigures], KindFigures]:
    def register(function: KindFigures) -> KindFigures:
        KIND_FIGURES[kind] = function
        COVERED[kind] = set(covers)
        return function

    return register


def run_figures(
    run: RunDetail,
    cache_dir: Path | None = None,
    steps: Sequence[str] | None = None,
    scores: Sequence[str] | None = None,
    *,
    maps: Sequence[str] | None = None,
) -> list[NamedFigure]:
    """Every figure of a run (or of the `steps` and `scores` named), in run order, with unique names.

    `cache_dir` (the store's cache/ folder) is where saved attention maps are read from; `maps` picks
    them as `workbench show --map` does: LAYER (mean over heads) or LAYER:HEAD.
    """
    where = f"run {run.summary.id}"
    chosen = chosen_steps(run.steps, steps, where)
    check_scores(chosen, scores, where if steps is None else f"steps {', '.join(steps)} of {where}")
    figures: list[NamedFigure] = []
    for step in chosen:
        view = StepView(step, run, cache_dir, maps)
        for name, figure in step_figures(view, scores):
            figures.append(NamedFigure(figure_name(step.step_id, name), step.step_id, figure.get_label(), figure))
    if not figures:
        unfinished = [f"{step.step_id} is {step.status}" for step in chosen if step.status not in ("done", "cached")]
        kinds = ", ".join(sorted(KIND_FIGURES))
        raise NothingToPlot(
            f"nothing to draw for {where}" + (f" (steps {', '.join(steps)})" if steps else "")
            + (f": {', '.join(unfinished)}" if unfinished else ""),
            hint=f"figures come from head and layer scores and from steps of the kinds {kinds}",
        )
    return unique(figures)


def step_figures(view: StepView, scores: Sequence[str] | None = None) -> Iterator[tuple[str, Figure]]:
    """(figure name, Figure) of one step; the name is unique within the step."""
    step = view.step
    if scores is None and step.kind in KIND_FIGURES:
        yield from KIND_FIGURES[step.kind](view)
    for grid in step.head_scores:
        if scores is None or grid.name in scores:
            yield f"heads-{grid.name}", head_score_figure(view, grid)
    covered = COVERED.get(step.kind, set()) if scores is None else set()
    for line in step.layer_scores:
        if (scores is None and line.name not in covered) or (scores is not None and line.name in scores):
            yield f"layers-{line.name}", layer_score_figure(step, line)


def head_score_figure(view: StepView, grid: HeadScores) -> Figure:
    step = view.step
    if step.kind == "mask_search" and grid.name == "mask":  # 1 = kept, 0 = masked: a map, not a scale
        return head_mask(grid.values, title=f"{step.step_id}: head mask", removed_label="masked")
    if step.kind == "prune" and grid.name == "pruned":  # 1 = pruned
        kept = [[None if v is None else 1.0 - v for v in row] for row in grid.values]
        return head_mask(kept, title=f"{step.step_id}: heads", removed_label="pruned")
    return head_heatmap(grid.values, name=grid.name, title=f"{step.step_id}: {grid.name}", pruned=view.pruned(grid.shape))


def layer_score_figure(step: StepRecord, line: LayerScores) -> Figure:
    first = "0 = embeddings" if step.kind in HIDDEN_STATE_KINDS else "0 = first attention layer"
    title = f"{step.step_id}: {line.name} by layer"
    return layer_profile(line.values, name=line.name, title=title, first_layer=first, signed=is_signed(line.name))


def pruned_heads(run: RunDetail, step: StepRecord) -> dict[str, list[int]] | None:
    """{"layer": [heads]} pruned from the model the step ran: its own record, else the prune step
    its model came from (following `model:` through fine-tuning of a pruned model)."""
    if step.data.get("pruned_heads"):
        return step.data["pruned_heads"]
    seen = {step.step_id}
    source = _model_step(run, step)
    while source is not None and source.step_id not in seen:
        if source.kind == "prune":
            return source.data.get("pruned_heads")
        seen.add(source.step_id)
        source = _model_step(run, source)
    return None


def _model_step(run: RunDetail, step: StepRecord) -> StepRecord | None:
    model = step.params.get("model")
    return run.step(model) if isinstance(model, str) else None


def _datasets(data: dict[str, Any]) -> str:
    ranked, scored = data.get("ranked_on"), data.get("scored_on")
    return f"\nheads ranked on {ranked}, scored on {scored}" if ranked and scored else ""


# --- the kinds' own figures ---------------------------------------------------------------------------


@kind_figures("finetune")
def _finetune(view: StepView) -> Iterator[tuple[str, Figure]]:
    curve = view.step.data.get("loss_curve") or []
    if len(curve) > 1:
        precision = view.step.data.get("precision", "float32")
        yield "loss", loss_curve([(x, y) for x, y in curve], title=f"{view.step.step_id}: training loss ({precision})")


@kind_figures("prune_curve")
def _prune_curve(view: StepView) -> Iterator[tuple[str, Figure]]:
    step = view.step
    data = step.data
    curve = data.get("curve") or []
    if not curve:
        return
    metric = data.get("metric", "score")
    search = _matching_search(view.run, step, metric)
    extra: dict[str, Any] = _search_overlay(search) if search is not None else {}
    title = f"{step.step_id}: {metric} vs heads masked{_datasets(data)}"
    yield "curve", pruning_curve([(p["percent"], p["score"]) for p in curve], metric=metric, title=title, **extra)


@kind_figures("mask_search")
def _mask_search(view: StepView) -> Iterator[tuple[str, Figure]]:
    step = view.step
    if len(step.data.get("iterations") or []) > 1:
        metric = step.data.get("metric", "score")
        title = f"{step.step_id}: {metric} vs heads masked{_datasets(step.data)}"
        yield "search", pruning_curve(None, metric=metric, title=title, **_search_overlay(step))


def _matching_search(run: RunDetail, curve: StepRecord, metric: str) -> StepRecord | None:
    """The run's mask_search on the same metric, preferring one on the same model and dataset."""
    searches = [s for s in run.steps if s.kind == "mask_search" and s.data.get("metric") == metric and s.data.get("iterations")]
    same = [s for s in searches if all(s.params.get(k) == curve.params.get(k) for k in ("model", "dataset"))]
    return (same or searches or [None])[0]


def _search_overlay(search: StepRecord) -> dict[str, Any]:
    """pruning_curve's search, kept and threshold arguments from a mask_search step."""
    from workbench.analysis.metrics import higher_is_better  # numpy only

    data = search.data
    iterations = data["iterations"]
    metric = data.get("metric", "score")
    original, threshold = iterations[0]["score"], data.get("threshold")
    limit = None
    if finite(original) and finite(threshold):
        limit = original * threshold if higher_is_better(metric) else original / threshold
    kept_count = search.metrics.get("heads_masked")
    kept = next(((row["percent_masked"], row["score"]) for row in iterations if row["heads_masked"] == kept_count), None)
    return {
        "search": [(row["percent_masked"], row["score"]) for row in iterations],
        "kept": kept,
        "threshold": limit,
        "rule": data.get("rule"),
    }


@kind_figures("prune")
def _prune(view: StepView) -> Iterator[tuple[str, Figure]]:
    data = view.step.data
    if data.get("speed"):
        heads = f"{data.get('heads_before')} → {data.get('heads_after')} heads" if data.get("heads_after") is not None else ""
        title = f"{view.step.step_id}: examples/s before and after pruning" + (f"\n{heads}" if heads else "")
        yield "speed", speed_bars(data["speed"], title=title)


@kind_figures("head_ablation")
def _head_ablation(view: StepView) -> Iterator[tuple[str, Figure]]:
    step = view.step
    data = step.data
    metric = data.get("metric", "score")
    deltas = [v for grid in step.head_scores if grid.name == "score_delta" for row in grid.values for v in row if v is not None]
    if deltas:
        yield "histogram", ablation_histogram(
            deltas, metric=metric, original=data.get("original"), title=f"{step.step_id}: one head masked"
        )
    if data.get("keep_best_per_layer"):
        title = f"{step.step_id}: only the best head left per layer"
        yield "keep_best", keep_best_bars(data["keep_best_per_layer"], metric=metric, title=title)


@kind_figures("probe", covers={"accuracy", "macro_f1", "control_accuracy", "selectivity", "mix_weight", "delta"})
def _probe(view: StepView) -> Iterator[tuple[str, Figure]]:
    step = view.step
    data, metrics = step.data, step.metrics
    layers, accuracy = data.get("layers") or [], data.get("accuracy") or []
    if not layers or len(accuracy) != len(layers):
        return
    task = str(data.get("task", "probe"))
    yield "accuracy", probe_accuracy(
        layers,
        accuracy,
        task=f"{step.step_id}: {task}",
        scored_on=data.get("scored_on", "test"),
        macro_f1=data.get("macro_f1"),
        control=data.get("control_accuracy"),
        selectivity=data.get("selectivity"),
        best_layer=metrics.get("best_layer"),
        majority=metrics.get("majority_accuracy"),
    )
    mix = (data.get("mix") or {}).get("weights")
    cumulative = data.get("cumulative") or {}
    if mix or cumulative.get("deltas"):
        yield "layer_use", probe_layer_use(
            layers,
            task=f"{step.step_id}: {task}",
            mix_weights=mix,
            center_of_gravity=metrics.get("center_of_gravity"),
            deltas=cumulative.get("deltas"),
            expected_layer=cumulative.get("expected_layer"),
            cumulative_metric=f"{cumulative.get('metric', 'accuracy')} ({cumulative.get('split', 'test')})",
        )


@kind_figures("syntax_heads")
def _syntax_heads(view: StepView) -> Iterator[tuple[str, Figure]]:
    step = view.step
    rows = step.data.get("table") or []
    if rows:
        title = f"{step.step_id}: best head per relation vs fixed offset"
        yield "relations", relation_bars(rows, title=title)
    mds = step.data.get("mds") or {}
    if mds.get("points"):
        sentences = mds.get("sentences")
        title = f"{step.step_id}: heads by attention distribution\nMDS of Jensen-Shannon distances" + (
            f", {sentences} sentences" if sentences else ""
        )
        yield "mds", mds_scatter(mds["points"], title=title)


@kind_figures("cat_probe", covers={"cat"})
def _cat_probe(view: StepView) -> Iterator[tuple[str, Figure]]:
    step = view.step
    data = step.data
    if not data.get("cat"):
        return
    tree = str(data.get("tree", "ast")).split(",")[0]
    title = (
        f"{step.step_id}: CAT by layer ({tree} tree)\n"
        f"M_A: attention > q{data.get('attention_quantile')}, M_D: distance < q{data.get('distance_quantile')}"
    )
    best = step.metrics.get("cat_max_layer")
    yield "by_layer", cat_by_layer(data["cat"], title=title, best_layer=int(best) if finite(best) and best >= 0 else None)


@kind_figures("attention")
def _attention(view: StepView) -> Iterator[tuple[str, Figure]]:
    """Saved maps (`save_maps: N`) of the first saved example, as `workbench show` draws them."""
    step = view.step
    saved = first_saved_maps(step, view.cache_dir)
    if saved is None:
        if view.maps:  # asked for explicitly: say why there are none
            raise FigureError(f"step '{step.step_id}' has no saved attention maps in the cache", hint="run it with save_maps: N")
        return
    try:
        chosen = chosen_maps(view.maps, saved.maps.shape[0], saved.maps.shape[1])
    except WorkbenchError as error:
        raise FigureError(error.message) from None
    for layer, head in chosen:
        grid, which = map_grid(saved, layer, head)  # [seq, seq]
        name = f"map-ex{saved.example}-layer{layer}-" + ("mean" if head is None else f"head{head}")
        yield name, attention_map(grid, saved.tokens, title=f"{step.step_id}: example {saved.example}, {which}")

