"""Two runs -> difference figures (b - a), the figures of `workbench compare`.

The differences are `workbench.ui.comparison`'s (plain data, shared with `compare --json`): steps
matched by id, steps with one cache key skipped as identical. Heads pruned in either run are
hatched: their difference is undefined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from workbench.db.records import RunDetail
from workbench.figures.curves import layer_profile
from workbench.figures.errors import NothingToPlot
from workbench.figures.grids import heads_mask
from workbench.figures.heads import head_heatmap
from workbench.figures.named import NamedFigure, figure_name, unique
from workbench.figures.run import HIDDEN_STATE_KINDS, pruned_heads
from workbench.figures.selection import check_scores, chosen_steps
from workbench.ui.comparison import DEFAULT_TOLERANCE, compare_runs


def compare_figures(
    a: RunDetail,
    b: RunDetail,
    steps: Sequence[str] | None = None,
    scores: Sequence[str] | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[NamedFigure]:
    """A diverging heatmap per head score and a signed bar chart per layer score that differ by more than `tolerance`."""
    shared = [step for step in a.steps if b.step(step.step_id) is not None]
    where = f"the steps runs {a.summary.id} and {b.summary.id} share"
    chosen = {step.step_id for step in chosen_steps(shared, steps, where)}
    check_scores([s for s in shared if s.step_id in chosen], scores, where)
    comparison = compare_runs(a, b, changed_only=True, tolerance=tolerance)
    label = f"run {b.summary.id} - run {a.summary.id}"
    figures: list[NamedFigure] = []
    for step in comparison.steps:
        if step.step_id not in chosen:
            continue
        for grid in step.head_scores:
            if scores is None or grid["name"] in scores:
                figures.append(_named(step.step_id, f"diff-heads-{grid['name']}", _head_difference(a, b, step.step_id, grid, label)))
        for line in step.layer_scores:
            if scores is None or line["name"] in scores:
                figures.append(_named(step.step_id, f"diff-layers-{line['name']}", _layer_difference(step.kind, step.step_id, line, label)))
    if not figures:
        same = [s.step_id for s in shared if s.key == b.step(s.step_id).key]  # type: ignore[union-attr]
        raise NothingToPlot(
            f"no head or layer score differs between runs {a.summary.id} and {b.summary.id} (tolerance {tolerance:g})",
            hint=f"identical steps (one cache entry): {', '.join(same)}" if same else None,
        )
    return unique(figures)


def _named(step_id: str, name: str, figure: Figure) -> NamedFigure:
    return NamedFigure(figure_name(step_id, name), step_id, figure.get_label(), figure)


def _head_difference(a: RunDetail, b: RunDetail, step_id: str, grid: dict[str, Any], label: str) -> Figure:
    """grid: compare_runs' {name, delta [layers][heads]}; a head pruned in either run is hatched."""
    shape = (len(grid["delta"]), max((len(row) for row in grid["delta"]), default=0))
    step_a, step_b = a.step(step_id), b.step(step_id)
    assert step_a is not None and step_b is not None
    pruned = heads_mask(pruned_heads(a, step_a), shape) | heads_mask(pruned_heads(b, step_b), shape)
    title = f"{step_id}: {grid['name']}, {label}"
    return head_heatmap(grid["delta"], name=f"{grid['name']} difference", title=title, pruned=pruned, signed=True)


def _layer_difference(kind: str, step_id: str, line: dict[str, Any], label: str) -> Figure:
    """line: compare_runs' {name, delta [layers]}."""
    first = "0 = embeddings" if kind in HIDDEN_STATE_KINDS else "0 = first attention layer"
    title = f"{step_id}: {line['name']}, {label}"
    return layer_profile(line["delta"], name=f"{line['name']} difference", title=title, first_layer=first, signed=True)
