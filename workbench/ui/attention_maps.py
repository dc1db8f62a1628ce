"""Saved attention maps (`attention` with `save_maps: N`) drawn as token x token heatmaps.

The maps live in the step's cache entry (`files/attention_maps.safetensors`, one
[layers, heads, seq, seq] array per example), read with safetensors' numpy API: browsing never
imports torch. Which maps are drawn: the first saved example; by default the mean over heads of
its first and last layer, or the layers (`L`) and heads (`L:H`) asked for with `show --map`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.console import RenderableType
from rich.text import Text

from workbench.db.records import StepRecord
from workbench.ui.heatmap import heatmap

MAPS_FILE = "attention_maps.safetensors"


def attention_map_views(step: StepRecord, cache_dir: Path, selection: list[str] | None = None) -> Iterable[RenderableType]:
    tokens_by_example = step.data.get("maps") or {}
    if not tokens_by_example:
        return
    path = cache_dir / step.key[:2] / step.key[2:] / "files" / MAPS_FILE
    if not path.is_file():
        yield Text(f"saved attention maps: {MAPS_FILE} is not in the cache (run the step again)", style="dim")
        return
    from safetensors.numpy import load_file

    example = sorted(tokens_by_example, key=int)[0]
    tokens = [str(token) for token in tokens_by_example[example]]
    maps = load_file(str(path))[f"example_{example}"]  # [layers, heads, seq, seq]
    for layer, head in _chosen(selection, maps.shape[0], maps.shape[1]):
        grid = maps[layer].mean(0) if head is None else maps[layer, head]
        which = f"layer {layer}, mean over heads" if head is None else f"layer {layer}, head {head}"
        yield heatmap(
            grid.tolist(),
            f"attention of example {example}, {which} (row: from, column: to)",
            row_label="from",
            column_label="to",
            row_names=tokens,
            column_names=tokens,
        )


def _chosen(selection: list[str] | None, layers: int, heads: int) -> list[tuple[int, int | None]]:
    """(layer, head or None for the mean) to draw; `L` or `L:H` strings, negatives count back."""
    from workbench.errors import WorkbenchError

    if not selection:
        return sorted({(0, None), (layers - 1, None)})
    chosen = []
    for item in selection:
        layer_text, _, head_text = item.partition(":")
        try:
            layer = int(layer_text)
            head = int(head_text) if head_text else None
        except ValueError:
            raise WorkbenchError(f"--map {item}: expected LAYER or LAYER:HEAD (numbers)") from None
        layer = layer + layers if layer < 0 else layer
        if not 0 <= layer < layers or (head is not None and not 0 <= head < heads):
            raise WorkbenchError(f"--map {item}: the saved maps have layers 0..{layers - 1} and heads 0..{heads - 1}")
        chosen.append((layer, head))
    return chosen
