"""Saved attention maps (`attention` with `save_maps: N`) drawn as token x token heatmaps (workbench/saved_maps.py)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.console import RenderableType
from rich.text import Text

from workbench.db.records import StepRecord
from workbench.saved_maps import MAPS_FILE, chosen_maps, first_saved_maps, map_grid
from workbench.ui.heatmap import heatmap


def attention_map_views(step: StepRecord, cache_dir: Path, selection: list[str] | None = None) -> Iterable[RenderableType]:
    if not step.data.get("maps"):
        return
    saved = first_saved_maps(step, cache_dir)
    if saved is None:
        yield Text(f"saved attention maps: {MAPS_FILE} is not in the cache (run the step again)", style="dim")
        return
    for layer, head in chosen_maps(selection, saved.maps.shape[0], saved.maps.shape[1]):
        grid, which = map_grid(saved, layer, head)
        yield heatmap(
            grid.tolist(),
            f"attention of example {saved.example}, {which} (row: from, column: to)",
            row_label="from",
            column_label="to",
            row_names=saved.tokens,
            column_names=saved.tokens,
        )
