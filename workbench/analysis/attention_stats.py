"""Streaming per-head statistics of attention maps (Clark et al. 2019, sections 3 and 4).

Per head, a value per example (its queries averaged), then the mean over examples (each example
weighs the same, as in Clark et al.'s notebook):

    entropy_smoothed      entropy of the attention distribution, smoothed as A <- 0.9999 A + 0.0001/n
                          (Clark's definition; the importance step's `entropy_per_token` is another)
    self                  attention to the query token itself
    prev, next            attention to the previous / next token
    first                 attention to the first token ([CLS], BOS, or the first token of a decoder)
    sep                   attention to separator tokens ([SEP], or EOS for decoders)
    punct                 attention to punctuation tokens ("." and ",")
    sep_to_sep            attention from [SEP] tokens to [SEP] tokens
    other_to_sep          attention from every other token ([CLS] included) to [SEP] tokens
    cls_entropy_smoothed  smoothed entropy of the first token's attention row

How an example's queries are averaged (`denominators`):

    exact  over the queries the statistic is defined for: prev over the n - 1 queries that have a
           previous token, next likewise, sep_to_sep over the [SEP] queries, other_to_sep over the
           others; an example without such a query does not count
    clark  Clark's General_Analysis notebook: prev and next over all n queries, sep_to_sep divided
           by 2 (the two [SEP]s of a BERT pair), other_to_sep by n - 2, and every example counts

Nothing of size [seq, seq] outlives a batch: each statistic is a running [layers, heads] sum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from workbench.distributed import World

STATISTICS = (
    "entropy_smoothed",
    "self",
    "prev",
    "next",
    "first",
    "sep",
    "punct",
    "sep_to_sep",
    "other_to_sep",
    "cls_entropy_smoothed",
)
PUNCTUATION = (".", ",")
SMOOTHING = 1e-4
Denominators = Literal["exact", "clark"]


class HeadStatistics:
    def __init__(
        self, num_layers: int, num_heads: int, device: torch.device | str = "cpu", denominators: Denominators = "exact"
    ):
        if denominators not in ("exact", "clark"):
            raise ValueError(f"denominators must be 'exact' or 'clark', got {denominators!r}")
        self.shape = (num_layers, num_heads)
        self.denominators = denominators
        self.sums = {name: torch.zeros(self.shape, dtype=torch.float64, device=device) for name in STATISTICS}
        self.counts = {name: torch.zeros(self.shape, dtype=torch.float64, device=device) for name in STATISTICS}
        self._batch: dict[str, torch.Tensor] | None = None

    def set_batch(self, attention_mask: torch.Tensor, sep_mask: torch.Tensor, punct_mask: torch.Tensor) -> None:
        """Token masks of the next forward pass, all [batch, seq] (1 = real / separator / punctuation)."""
        real = attention_mask.bool()
        lengths = real.sum(1)  # [batch]
        positions = torch.arange(real.shape[1], device=real.device)
        separators = sep_mask.bool() & real
        self._batch = {
            "real": real,
            "has_prev": real & (positions > 0),
            "has_next": real & (positions < (lengths - 1).unsqueeze(1)),
            "lengths": lengths,
            "sep": separators.to(torch.float32),
            "sep_query": separators,
            "other_query": real & ~separators,
            "punct": (punct_mask.bool() & real).to(torch.float32),
        }

    def observe(self, layer: int, head_ids: torch.Tensor, probs: torch.Tensor) -> None:
        """probs: [batch, heads, q_len, k_len] of one layer (an attention-function observer)."""
        assert self._batch is not None, "set_batch before the forward pass"
        batch = self._batch
        probs = probs.float()
        real = batch["real"]
        n = batch["lengths"].to(torch.float32)[:, None]  # [batch, 1]
        clark = self.denominators == "clark"
        heads = head_ids.to(probs.device)

        def accumulate(name: str, per_query: torch.Tensor, queries: torch.Tensor, clark_denominator=None) -> None:
            # per_query: [batch, heads, q_len]; queries: [batch, q_len] bool, the queries that count.
            # An example's value is the mean over those queries (or, for Clark, their sum over his
            # denominator [batch, 1]); then every example counts once, so long sentences do not
            # outweigh short ones.
            weight = queries.to(torch.float32)[:, None, :]  # [batch, 1, q_len]
            summed = (per_query * weight).sum(-1)  # [batch, heads]
            counted = weight.sum(-1)  # [batch, 1]
            if clark and clark_denominator is not None:
                per_example = summed / clark_denominator.clamp(min=1)
                present = torch.ones_like(counted)
            else:
                per_example = summed / counted.clamp(min=1)
                present = (counted > 0).to(per_example.dtype)  # examples with such a query
            self.sums[name][layer, heads] += (per_example * present).sum(0).double()
            self.counts[name][layer, heads] += present.sum().double().expand(len(heads))

        to_sep = torch.einsum("bhqk,bk->bhq", probs, batch["sep"])  # [batch, heads, q_len]
        accumulate("self", probs.diagonal(dim1=-2, dim2=-1), real)
        below = probs.diagonal(offset=-1, dim1=-2, dim2=-1)  # A[i, i-1] for i >= 1
        accumulate("prev", _shift_right(below), batch["has_prev"], n)
        above = probs.diagonal(offset=1, dim1=-2, dim2=-1)  # A[i, i+1] for i < seq-1
        accumulate("next", _pad_end(above), batch["has_next"], n)
        accumulate("first", probs[..., 0], real)
        accumulate("sep", to_sep, real)
        accumulate("punct", torch.einsum("bhqk,bk->bhq", probs, batch["punct"]), real)
        accumulate("sep_to_sep", to_sep, batch["sep_query"], torch.full_like(n, 2.0))
        accumulate("other_to_sep", to_sep, batch["other_query"], n - 2)
        entropy = smoothed_entropy(probs, real, batch["lengths"])  # [batch, heads, q_len]
        accumulate("entropy_smoothed", entropy, real)
        first_query = torch.zeros_like(real)
        first_query[:, 0] = True
        accumulate("cls_entropy_smoothed", entropy, first_query)

    def combine(self, world: "World") -> None:
        """Add up the running sums of every rank of a data-parallel run."""
        world.sum_each([*self.sums.values(), *self.counts.values()])

    def result(self) -> dict[str, torch.Tensor]:
        """Mean of each statistic, [layers, heads] (NaN where a head was never seen, e.g. pruned)."""
        return {name: (self.sums[name] / self.counts[name]).float().cpu() for name in STATISTICS}


def uniform_entropy(lengths: torch.Tensor) -> float:
    """Clark's baseline: the entropy of uniform attention, log n, averaged over examples."""
    return float(torch.log(lengths.double()).mean())


def smoothed_entropy(probs: torch.Tensor, real: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Entropy of each attention row over the real keys with Clark's smoothing, [batch, heads, q_len]."""
    n = lengths.to(probs.dtype)[:, None, None, None]  # [batch, 1, 1, 1]
    smoothed = (1 - SMOOTHING) * probs + SMOOTHING / n
    terms = smoothed * torch.log(smoothed)
    return -(terms * real[:, None, None, :].to(probs.dtype)).sum(-1)


class AttentionGradients:
    """Clark et al.'s gradient-based importance of attention (section 3, Figure 3), per layer.

    The magnitude |dL/dA_ij| of the loss with respect to every attention weight, averaged over the
    weights that go to [SEP] tokens, to punctuation, and to the other tokens (real queries of every
    head of the layer, every example). Clark's code for this panel is not released; this follows
    the paper's text, with the model's own task loss.
    """

    KINDS = ("sep", "punct", "other")

    def __init__(self, num_layers: int, device: torch.device | str = "cpu"):
        self.sums = {kind: torch.zeros(num_layers, dtype=torch.float64, device=device) for kind in self.KINDS}
        self.counts = {kind: torch.zeros(num_layers, dtype=torch.float64, device=device) for kind in self.KINDS}

    def add(self, layer: int, gradient: torch.Tensor, real: torch.Tensor, sep: torch.Tensor, punct: torch.Tensor) -> None:
        """gradient: [batch, heads, q_len, k_len]; real, sep, punct: [batch, seq] bool token masks."""
        magnitude = gradient.detach().abs().double()
        queries = real[:, None, :, None]  # [batch, 1, q_len, 1]
        keys = {"sep": sep & real, "punct": punct & real & ~sep, "other": real & ~sep & ~punct}
        heads = gradient.shape[1]
        for kind, chosen in keys.items():
            cells = (queries & chosen[:, None, None, :]).double()  # [batch, 1, q_len, k_len]
            self.sums[kind][layer] += (magnitude * cells).sum()
            self.counts[kind][layer] += cells.sum() * heads

    def combine(self, world: "World") -> None:
        """Add up the running sums of every rank of a data-parallel run."""
        world.sum_each([*self.sums.values(), *self.counts.values()])

    def result(self) -> dict[str, torch.Tensor]:
        """grad_<kind>: [layers] mean |dL/dA| of the weights to that kind of token (NaN if none)."""
        return {f"grad_{kind}": (self.sums[kind] / self.counts[kind]).float().cpu() for kind in self.KINDS}


def _shift_right(values: torch.Tensor) -> torch.Tensor:
    """[..., seq-1] -> [..., seq] with a leading zero: value i belongs to query i+1."""
    return torch.nn.functional.pad(values, (1, 0))


def _pad_end(values: torch.Tensor) -> torch.Tensor:
    """[..., seq-1] -> [..., seq] with a trailing zero: value i belongs to query i."""
    return torch.nn.functional.pad(values, (0, 1))
