"""The attention maps an `attention` step saved (`save_maps: N`), and which of them to draw.

They live in the step's cache entry, `files/attention_maps.safetensors`, one [layers, heads, seq,
seq] array per example, with the example's tokens in the step's data. Read with safetensors' numpy
API: `show` and `plot` never import torch. Both draw the first saved example: by default the mean
over heads of its first and last layer, or what `--map LAYER` / `--map LAYER:HEAD` asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.db.records import StepRecord
from workbench.errors import WorkbenchError

MAPS_FILE = "attention_maps.safetensors"


@dataclass(frozen=True)
class SavedMaps:
    example: str  # its index in the dataset, as the step's data keys it
    tokens: list[str]
    maps: np.ndarray  # [layers, heads, seq, seq]


def maps_file(step: StepRecord, cache_dir: Path) -> Path:
    return cache_dir / step.key[:2] / step.key[2:] / "files" / MAPS_FILE


def first_saved_maps(step: StepRecord, cache_dir: Path | None) -> SavedMaps | None:
    """The first saved example's maps, or None when the step saved none (or its entry lacks the file)."""
    tokens_by_example = step.data.get("maps") or {}
    if not tokens_by_example or cache_dir is None or not maps_file(step, cache_dir).is_file():
        return None
    from safetensors import safe_open

    example = sorted(tokens_by_example, key=int)[0]
    with safe_open(str(maps_file(step, cache_dir)), framework="numpy") as handle:
        maps = handle.get_tensor(f"example_{example}")
    return SavedMaps(example, [str(token) for token in tokens_by_example[example]], maps)


def chosen_maps(selection: Sequence[str] | None, layers: int, heads: int) -> list[tuple[int, int | None]]:
    """(layer, head or None = the mean over heads) from `L` / `L:H` strings (negatives count back)."""
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


def map_grid(saved: SavedMaps, layer: int, head: int | None) -> tuple[np.ndarray, str]:
    """[seq, seq] attention of one layer (mean over heads) or head, and its description."""
    if head is None:
        return saved.maps[layer].mean(0), f"layer {layer}, mean over heads"
    return saved.maps[layer, head], f"layer {layer}, head {head}"
