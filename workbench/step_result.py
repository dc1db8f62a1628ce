"""What a step produced (`StepResult`): what the executor records, the cache stores and later steps read.

Below every step module so that the cache and the executor need no step to hold one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.scores import LayerScores, layer_lines

if TYPE_CHECKING:
    import torch


@dataclass
class StepResult:
    """Everything a step produced. Tensors go to the cache; scores and metrics also to the store."""

    metrics: dict[str, float] = field(default_factory=dict)
    head_scores: dict[str, "torch.Tensor"] = field(default_factory=dict)  # name -> [layers, heads]
    layer_scores: dict[str, "torch.Tensor"] = field(default_factory=dict)  # name -> [layers] (layer_lines(): LayerScores)
    tensors: dict[str, "torch.Tensor"] = field(default_factory=dict)  # other named outputs
    data: dict[str, Any] = field(default_factory=dict)  # JSON-able: curves, tables, iterations
    files_dir: Path | None = None  # folder of produced files (a model, feature shards), if any

    def to_torch(self) -> "StepResult":
        """Turn arrays read from the cache into tensors, in place.

        The cache hands back numpy arrays so that a fully cached run never imports torch; a step
        that reads an upstream result gets tensors.
        """
        import torch

        for group in (self.head_scores, self.layer_scores, self.tensors):
            for name, value in group.items():
                if not isinstance(value, torch.Tensor):
                    group[name] = torch.from_numpy(value)
        return self

    def layer_lines(self) -> list[LayerScores]:
        """The layer scores as LayerScores (Python floats, NaN kept), as the store records them."""
        return layer_lines(self.layer_scores)

    def file(self, name: str) -> Path:
        """A produced file or folder; raises if the step did not produce it."""
        if self.files_dir is None or not (self.files_dir / name).exists():
            raise FileNotFoundError(name)
        return self.files_dir / name
