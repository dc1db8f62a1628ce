"""Per-layer score lines (`LayerScores`): one type from the step that measures them to the report.

A step returns its lines as tensors in `StepResult.layer_scores` ({name: [layers]}, what the cache
keeps); `StepResult.layer_lines()` gives them as LayerScores, which the store writes (table
layer_scores: one row per layer) and hands back in its records (`workbench.db.records`), bundles
carry as JSON ({name: [values]}), and the ui, the figures, the report and the Python API show.
Plain Python (numpy when converting): every layer may use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LayerScores:
    """One named score per layer: `values[l]` is layer l's (index 0 = the embeddings for extract and
    probe), None where it has none (read back from the store; a step's NaN is stored as none)."""

    name: str
    values: list[float | None]  # [layers]

    @classmethod
    def of(cls, name: str, values: Any) -> "LayerScores":
        """A line from a tensor (on any device), an array or a list: Python floats, NaN kept."""
        return cls(name, float_lists(values))


def layer_lines(lines: Mapping[str, Any] | Iterable[LayerScores] | None) -> list[LayerScores]:
    """LayerScores from {name: values} (a step's tensors, a JSON object) or from LayerScores."""
    if lines is None:
        return []
    if isinstance(lines, Mapping):
        return [LayerScores.of(name, values) for name, values in lines.items()]
    return list(lines)


def layer_json(lines: Iterable[LayerScores]) -> dict[str, list[float | None]]:
    """{name: values}: how `workbench show --json` and bundles write a step's lines."""
    return {line.name: line.values for line in lines}


def float_lists(values: Any) -> list:
    """A tensor (on any device) or an array, nested to any depth, as nested lists of Python floats."""
    import numpy as np

    if hasattr(values, "detach"):  # a torch tensor, possibly on an accelerator
        values = values.detach().cpu()
    return np.asarray(values, dtype=np.float64).tolist()
