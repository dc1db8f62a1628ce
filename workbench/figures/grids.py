"""Plain values -> numpy: the store's `None` cells and a step's NaN both become NaN."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def as_grid(values: Any) -> np.ndarray:
    """[layers][heads] lists (None = no value) or an array -> float [layers, heads] with NaN."""
    if isinstance(values, np.ndarray):
        return values.astype(float)
    rows = [list(row) for row in values]
    width = max((len(row) for row in rows), default=0)
    grid = np.full((len(rows), width), np.nan)
    for layer, row in enumerate(rows):
        for head, value in enumerate(row):
            if value is not None:
                grid[layer, head] = float(value)
    return grid


def as_line(values: Iterable[float | None]) -> np.ndarray:
    """[layers] (None = no value) -> float [layers] with NaN."""
    return np.array([np.nan if value is None else float(value) for value in values], dtype=float)


def heads_mask(heads: Mapping[str, Sequence[int]] | None, shape: tuple[int, int]) -> np.ndarray:
    """A step's {"layer": [heads]} map (data["pruned_heads"]) -> bool [layers, heads], True = listed."""
    mask = np.zeros(shape, dtype=bool)
    for layer, ids in (heads or {}).items():
        for head in ids:
            if 0 <= int(layer) < shape[0] and 0 <= int(head) < shape[1]:
                mask[int(layer), int(head)] = True
    return mask


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
