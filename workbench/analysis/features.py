"""Pooling hidden states and streaming per-layer statistics of them."""

from __future__ import annotations

import torch

POOLINGS = ("none", "mean", "first", "last")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[batch, seq, dim] -> [batch, dim] (mean over real tokens, first token, or last real token)."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # [batch, seq, 1]
    if pooling == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    if pooling == "first":
        return hidden[:, 0]
    if pooling == "last":
        last = attention_mask.sum(1) - 1  # [batch] index of the last real token (right padding)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling '{pooling}'")


class LayerStatistics:
    """Streaming statistics of the vectors of each layer.

    norm_mean     mean L2 norm
    dim_std_mean  mean over dimensions of the per-dimension standard deviation
    anisotropy    mean cosine similarity between two distinct vectors (Ethayarajh 2019),
                  exact from a running sum of unit vectors: (|sum u|^2 - n) / (n (n - 1))
    """

    def __init__(self, num_layers: int, dim: int, device: torch.device | str = "cpu"):
        options = {"dtype": torch.float64, "device": device}
        self.count = 0
        self.norm_sum = torch.zeros(num_layers, **options)
        self.unit_sum = torch.zeros(num_layers, dim, **options)
        self.value_sum = torch.zeros(num_layers, dim, **options)
        self.square_sum = torch.zeros(num_layers, dim, **options)

    def add(self, vectors: torch.Tensor) -> None:
        """vectors: [layers, n, dim]."""
        vectors = vectors.to(torch.float64)
        norms = vectors.norm(dim=-1)  # [layers, n]
        self.count += vectors.shape[1]
        self.norm_sum += norms.sum(1)
        self.unit_sum += (vectors / norms.clamp(min=1e-12).unsqueeze(-1)).sum(1)
        self.value_sum += vectors.sum(1)
        self.square_sum += (vectors**2).sum(1)

    def combine(self, world) -> None:  # type: ignore[no-untyped-def]
        """Add up the running sums of every rank of a data-parallel run (workbench.distributed.World)."""
        self.count = int(world.sum_number(self.count))
        world.sum_each([self.norm_sum, self.unit_sum, self.value_sum, self.square_sum])

    def result(self) -> dict[str, torch.Tensor]:
        n = max(self.count, 1)
        mean = self.value_sum / n
        variance = (self.square_sum / n - mean**2).clamp(min=0)
        pairs = max(n * (n - 1), 1)
        return {
            "norm_mean": (self.norm_sum / n).float(),
            "dim_std_mean": variance.sqrt().mean(-1).float(),
            "anisotropy": ((self.unit_sum.pow(2).sum(-1) - n) / pairs).float(),
        }
