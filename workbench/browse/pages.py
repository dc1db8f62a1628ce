"""The grids the heatmap widget pages through, built from store records, and what its cursor says.

A page is one layer x head score of a step, one saved attention map (tokens on both axes), or a
difference of two runs' scores. `describe` is the line under the heatmap: the exact value at the
cursor, its rank, and whether the head is pruned. Plain data and numpy; no Textual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workbench.browse.formatting import exact, finite, is_binary, pruned_heads, rank_of, signed
from workbench.db.records import RunDetail, StepRecord
from workbench.ui.comparison import Comparison
from workbench.ui.views import is_signed

Grid = Sequence[Sequence[float | None]]


@dataclass(frozen=True)
class GridPage:
    name: str  # the score (or map) this page shows
    title: str
    values: Grid
    kind: str = "heads"  # heads | map | delta
    row_label: str = "layer"
    column_label: str = "head"
    row_names: Sequence[str] | None = None
    column_names: Sequence[str] | None = None
    diverging: bool = False
    group: str = ""  # N/P jump to the next group (the next layer of saved maps)
    pruned: frozenset[tuple[int, int]] = frozenset()
    a: Grid | None = None  # delta pages: the two runs' own values
    b: Grid | None = None
    a_label: str = "a"
    b_label: str = "b"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.values), max((len(row) for row in self.values), default=0)

    def value(self, row: int, column: int) -> float | None:
        line = self.values[row] if row < len(self.values) else []
        return line[column] if column < len(line) else None


def _cell(grid: Grid | None, row: int, column: int) -> float | None:
    if grid is None or row >= len(grid) or column >= len(grid[row]):
        return None
    return grid[row][column]


def describe(page: GridPage, row: int, column: int) -> str:
    """The cursor's line: where it is, the exact value, its rank, pruned or masked."""
    value = page.value(row, column)
    if page.kind == "map":
        names = page.row_names or []
        columns = page.column_names or names
        source = names[row] if row < len(names) else str(row)
        target = columns[column] if column < len(columns) else str(column)
        return f"from {source!r} ({row}) → to {target!r} ({column}): weight {exact(value)}"
    where = f"{page.row_label} {row}, {page.column_label} {column}"
    if page.kind == "delta":
        a, b = _cell(page.a, row, column), _cell(page.b, row, column)
        return f"{where}: {page.a_label} {exact(a)} → {page.b_label} {exact(b)} · Δ {signed(value)}"
    parts = [f"{where}: {page.name} = {exact(value)}"]
    if page.name == "mask" and finite(value):
        parts.append("kept" if value else "masked")
    elif finite(value) and not is_binary(page.values):
        ranked = rank_of(page.values, row, column)
        if ranked:
            parts.append(f"rank {ranked[0]} of {ranked[1]} (1 = highest)")
    if (row, column) in page.pruned or (page.name == "pruned" and value == 1):
        parts.append("pruned")
    elif value is None:
        parts.append("no value")
    return " · ".join(parts)


# ---- builders ---------------------------------------------------------------------------------------


def head_pages(run: RunDetail, step: StepRecord) -> list[GridPage]:
    """One page per head score of the step, in the order the step recorded them."""
    pruned = frozenset(pruned_heads(run, step))
    return [
        GridPage(grid.name, f"{grid.name} (layer x head)", grid.values, diverging=is_signed(grid.name), pruned=pruned)
        for grid in step.head_scores
    ]


def map_pages(step: StepRecord, cache_dir: Path | None) -> tuple[list[GridPage], str | None]:
    """The first saved example's attention maps, per layer: the mean over heads, then each head.

    Returns (pages, note): a note when the step saved maps but its cache entry lacks them.
    """
    if not step.data.get("maps"):
        return [], None
    from workbench.saved_maps import MAPS_FILE, first_saved_maps, map_grid

    saved = first_saved_maps(step, cache_dir)
    if saved is None:
        return [], f"saved attention maps: {MAPS_FILE} is not in the cache (run the step again)"
    layers, heads = saved.maps.shape[0], saved.maps.shape[1]
    pages = []
    for layer in range(layers):
        for head in (None, *range(heads)):
            grid, which = map_grid(saved, layer, head)
            pages.append(
                GridPage(
                    f"map {layer}" + ("" if head is None else f":{head}"),
                    f"attention of example {saved.example}, {which}",
                    grid.tolist(),
                    kind="map",
                    row_label="from",
                    column_label="to",
                    row_names=saved.tokens,
                    column_names=saved.tokens,
                    group=f"layer {layer}",
                )
            )
    return pages, None


def delta_pages(comparison: Comparison, a: RunDetail, b: RunDetail) -> list[GridPage]:
    """b - a of every head score that differs, with both runs' own grids for the side-by-side view."""
    pages = []
    for step in comparison.steps:
        step_a, step_b = a.step(step.step_id), b.step(step.step_id)
        grids_a = {grid.name: grid.values for grid in step_a.head_scores} if step_a else {}
        grids_b = {grid.name: grid.values for grid in step_b.head_scores} if step_b else {}
        for grid in step.head_scores:
            if grid["max_abs_delta"] <= comparison.tolerance:
                continue
            pages.append(
                GridPage(
                    f"{step.step_id}:{grid['name']}",
                    f"{step.step_id} {grid['name']}: run {b.summary.id} - run {a.summary.id}",
                    grid["delta"],
                    kind="delta",
                    diverging=True,
                    a=grids_a.get(grid["name"]),
                    b=grids_b.get(grid["name"]),
                    a_label=f"run {a.summary.id}",
                    b_label=f"run {b.summary.id}",
                    group=step.step_id,
                )
            )
    return pages


def side_page(page: GridPage, which: str) -> GridPage:
    """One run's own grid of a delta page (which: 'a' or 'b'), for the side-by-side view."""
    values = page.a if which == "a" else page.b
    label = page.a_label if which == "a" else page.b_label
    return GridPage(page.name, f"{label}: {page.name.split(':', 1)[-1]}", values or [], kind="heads", group=page.group)
