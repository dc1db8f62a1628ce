"""Streaming per-head statistics of attention maps (Clark et al. 2019, section 3).

Per head, the mean over the real (non-padding) query positions of each example, then the mean over
examples (each example weighs the same, as in Clark et al.'s code):

    entropy_smoothed      entropy of the attention distribution, smoothed as A <- 0.9999 A + 0.0001/n
                          (Clark's definition; the importance step's `entropy_per_token` is another)
    self          attention to the query token itself
    prev, next    attention to the previous / next token (over the queries that have one)
    first         attention to the first token ([CLS] for BERT-style models, BOS or the first
                  token for decoders)
    sep           attention to separator tokens ([SEP], or EOS for decoders)
    punct         attention to punctuation tokens ("." and ",")
and per example
    cls_entropy_smoothed  smoothed entropy of the first token's attention row

Nothing of size [seq, seq] outlives a batch: each statistic is a running [layers, heads] sum.
"""

from __future__ import annotations

import torch

STATISTICS = ("entropy_smoothed", "self", "prev", "next", "first", "sep", "punct", "cls_entropy_smoothed")
PUNCTUATION = (".", ",")
SMOOTHING = 1e-4


class HeadStatistics:
    def __init__(self, num_layers: int, num_heads: int, device: torch.device | str = "cpu"):
        self.shape = (num_layers, num_heads)
        self.sums = {name: torch.zeros(self.shape, dtype=torch.float64, device=device) for name in STATISTICS}
        self.counts = {name: torch.zeros(self.shape, dtype=torch.float64, device=device) for name in STATISTICS}
        self._batch: dict[str, torch.Tensor] | None = None

    def set_batch(self, attention_mask: torch.Tensor, sep_mask: torch.Tensor, punct_mask: torch.Tensor) -> None:
        """Token masks of the next forward pass, all [batch, seq] (1 = real / separator / punctuation)."""
        real = attention_mask.bool()
        lengths = real.sum(1)  # [batch]
        positions = torch.arange(real.shape[1], device=real.device)
        self._batch = {
            "real": real,
            "has_prev": real & (positions > 0),
            "has_next": real & (positions < (lengths - 1).unsqueeze(1)),
            "lengths": lengths,
            "sep": (sep_mask.bool() & real).to(torch.float32),
            "punct": (punct_mask.bool() & real).to(torch.float32),
        }

    def observe(self, layer: int, head_ids: torch.Tensor, probs: torch.Tensor) -> None:
        """probs: [batch, heads, q_len, k_len] of one layer (an attention-function observer)."""
        assert self._batch is not None, "set_batch before the forward pass"
        batch = self._batch
        probs = probs.float()
        real = batch["real"]
        query_weight = real.to(torch.float32)[:, None, :]  # [batch, 1, q_len]
        heads = head_ids.to(probs.device)

        def accumulate(name: str, per_query: torch.Tensor, weight: torch.Tensor) -> None:
            # per_query: [batch, heads, q_len]; weight: [batch, 1, q_len] which queries count.
            # Every example counts once (Clark et al.'s notebook): its mean over its own queries,
            # then the mean over examples, so long sentences do not outweigh short ones.
            counted = weight.sum(-1)  # [batch, 1]
            per_example = (per_query * weight).sum(-1) / counted.clamp(min=1)  # [batch, heads]
            present = (counted > 0).to(per_example.dtype)  # [batch, 1] examples with such a query
            self.sums[name][layer, heads] += (per_example * present).sum(0).double()
            self.counts[name][layer, heads] += present.sum().double().expand(len(heads))

        diagonal = probs.diagonal(dim1=-2, dim2=-1)  # [batch, heads, seq]
        accumulate("self", diagonal, query_weight)
        below = probs.diagonal(offset=-1, dim1=-2, dim2=-1)  # A[i, i-1] for i >= 1
        accumulate("prev", _shift_right(below), batch["has_prev"].to(torch.float32)[:, None, :])
        above = probs.diagonal(offset=1, dim1=-2, dim2=-1)  # A[i, i+1] for i < seq-1
        accumulate("next", _pad_end(above), batch["has_next"].to(torch.float32)[:, None, :])
        accumulate("first", probs[..., 0], query_weight)
        accumulate("sep", torch.einsum("bhqk,bk->bhq", probs, batch["sep"]), query_weight)
        accumulate("punct", torch.einsum("bhqk,bk->bhq", probs, batch["punct"]), query_weight)
        entropy = smoothed_entropy(probs, real, batch["lengths"])  # [batch, heads, q_len]
        accumulate("entropy_smoothed", entropy, query_weight)
        accumulate("cls_entropy_smoothed", entropy[..., :1], torch.ones_like(query_weight[..., :1]))

    def result(self) -> dict[str, torch.Tensor]:
        """Mean of each statistic, [layers, heads] (NaN where a head was never seen, e.g. pruned)."""
        return {name: (self.sums[name] / self.counts[name]).float().cpu() for name in STATISTICS}


def smoothed_entropy(probs: torch.Tensor, real: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Entropy of each attention row over the real keys with Clark's smoothing, [batch, heads, q_len]."""
    n = lengths.to(probs.dtype)[:, None, None, None]  # [batch, 1, 1, 1]
    smoothed = (1 - SMOOTHING) * probs + SMOOTHING / n
    terms = smoothed * torch.log(smoothed)
    return -(terms * real[:, None, None, :].to(probs.dtype)).sum(-1)


def _shift_right(values: torch.Tensor) -> torch.Tensor:
    """[..., seq-1] -> [..., seq] with a leading zero: value i belongs to query i+1."""
    return torch.nn.functional.pad(values, (1, 0))


def _pad_end(values: torch.Tensor) -> torch.Tensor:
    """[..., seq-1] -> [..., seq] with a trailing zero: value i belongs to query i."""
    return torch.nn.functional.pad(values, (0, 1))
