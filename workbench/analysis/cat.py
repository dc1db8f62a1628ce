"""CAT-probing: does attention follow the syntax tree of code? (Chen et al. 2022, arXiv 2210.04633).

Definitions follow the paper and its code (github.com/nchen909/CodeAttention, `attention.py`):

- Code tokens are the leaves of the syntax tree; the attention between two code tokens is the MEAN
  over their sub-token pairs (both ways, unlike Clark's sum-to / mean-from); special tokens are
  dropped (`token_pair_attention`).
- At a layer, attention is averaged over heads. Per example, with D the tree distance between leaves:
  M_A = A > quantile(A, 0.75), M_D = D < quantile(D, 0.25), CAT = |M_A and M_D| / |M_A or M_D|
  (`cat_score`), averaged over examples and reported per layer (`CatAccumulator`).

Quantiles are taken over the entries of the matrix with numpy's default linear interpolation. An
example whose union is empty (every attention value and every distance tied) has no score: the
reference code skips it rather than counting it as 0, so `cat_score` returns NaN and the accumulator
leaves it out of the mean. D must be finite (connect the tree, or the paper's extra edges, first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from workbench.data.pooling import word_pooling_matrix

ATTENTION_QUANTILE = 0.75
DISTANCE_QUANTILE = 0.25


def token_pair_attention(attn: Tensor, leaf_index: Sequence[int] | Tensor, num_leaves: int) -> Tensor:
    """Sub-token attention `[..., seq, seq]` of one example to code-token attention `[..., leaves, leaves]`.

    A[a, b] = mean over sub-tokens i of leaf a and j of leaf b of attn[i, j] (CAT-probing sec. 3).
    `leaf_index[s]` is the leaf of sub-token s, -1 for special tokens, padding and comments (dropped).
    """
    attn = torch.as_tensor(attn)
    if tuple(attn.shape[-2:]) != (len(leaf_index), len(leaf_index)):
        raise ValueError(f"attention of shape {tuple(attn.shape)} does not fit {len(leaf_index)} sub-tokens")
    mean_pool = word_pooling_matrix(
        leaf_index, num_leaves, "mean", dtype=attn.dtype, device=attn.device, transposed=True, every_word=True
    ).T  # [leaves, seq]
    return mean_pool @ attn @ mean_pool.T  # [..., leaves, leaves]


def _numpy(values: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def cat_scores(
    attn: Tensor | np.ndarray,
    distances: Tensor | np.ndarray,
    *,
    attention_quantile: float = ATTENTION_QUANTILE,
    distance_quantile: float = DISTANCE_QUANTILE,
    exclude_diagonal: bool = False,
) -> np.ndarray:
    """CAT of every attention matrix in `attn` `[..., n, n]` against one distance matrix `[n, n]` -> `[...]`.

    CAT = |M_A and M_D| / |M_A or M_D| with M_A = A > quantile(A, attention_quantile) and
    M_D = D < quantile(D, distance_quantile), quantiles over the matrix entries; NaN where the union
    is empty.

    `exclude_diagonal=False` (default) scores all n * n pairs, a token with itself included, as the
    paper and its code do; published numbers are only comparable this way. The diagonal always has
    distance 0, so it usually fills M_D by itself and rewards heads that attend to the token itself;
    `exclude_diagonal=True` scores the n * (n - 1) pairs of distinct tokens, quantiles included.
    """
    a = _numpy(attn)  # [..., n, n]
    d = _numpy(distances)  # [n, n]
    n = d.shape[-1]
    if d.shape != (n, n) or a.shape[-2:] != (n, n):
        raise ValueError(f"attention {a.shape} and distances {d.shape} are not matching square matrices")
    pairs = ~np.eye(n, dtype=bool) if exclude_diagonal else np.ones((n, n), dtype=bool)  # [n, n]
    a, d = a[..., pairs], d[pairs]  # [..., pairs], [pairs]
    high_attention = a > np.quantile(a, attention_quantile, axis=-1, keepdims=True)  # [..., pairs]
    near = d < np.quantile(d, distance_quantile)  # [pairs]
    both = (high_attention & near).sum(-1)  # [...]
    either = (high_attention | near).sum(-1)  # [...]
    return np.divide(both, either, out=np.full(both.shape, np.nan), where=either > 0)


def cat_score(
    attn: Tensor | np.ndarray,
    distances: Tensor | np.ndarray,
    *,
    attention_quantile: float = ATTENTION_QUANTILE,
    distance_quantile: float = DISTANCE_QUANTILE,
    exclude_diagonal: bool = False,
) -> float:
    """CAT of one attention matrix `[n, n]` against its distance matrix `[n, n]`; see `cat_scores`."""
    if np.ndim(attn) != 2:
        raise ValueError(f"cat_score takes one [n, n] matrix, not {tuple(np.shape(attn))}; see cat_scores")
    return float(
        cat_scores(
            attn,
            distances,
            attention_quantile=attention_quantile,
            distance_quantile=distance_quantile,
            exclude_diagonal=exclude_diagonal,
        )
    )


def layer_cat_scores(
    attn: Tensor | np.ndarray,
    distances: Tensor | np.ndarray,
    present: np.ndarray | Tensor | None = None,
    **options,
) -> np.ndarray:
    """Per-layer CAT of one example: leaf attention `[layers, heads, n, n]`, heads averaged -> `[layers]`.

    `present` (`[layers, heads]` bool, default: every head) names the heads the model has: the
    average runs over those only (the maps of pruned heads are zeros and would dilute it), and a
    layer without any head scores NaN. `options` are those of `cat_scores`.
    """
    attn = _numpy(attn)  # [layers, heads, n, n]
    present = None if present is None else _present(present, attn.shape[:2])
    if present is None or present.all():
        return cat_scores(attn.mean(1), distances, **options)  # [layers]
    heads = present.sum(1)  # [layers]
    mean = np.einsum("lhij,lh->lij", attn, present.astype(attn.dtype)) / np.maximum(heads, 1)[:, None, None]
    return np.where(heads > 0, cat_scores(mean, distances, **options), np.nan)  # [layers]


def _present(present: np.ndarray | Tensor, shape: tuple[int, ...]) -> np.ndarray:
    mask = present.detach().cpu().numpy() if isinstance(present, Tensor) else np.asarray(present)
    mask = mask.astype(bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"present has shape {mask.shape}, expected {tuple(shape)} layers x heads")
    return mask


@dataclass(frozen=True, eq=False)
class CatResult:
    """Mean CAT over the examples that had a score."""

    per_layer: np.ndarray  # [layers], heads averaged first (the paper's score)
    per_head: np.ndarray | None  # [layers, heads], each head on its own (NaN: pruned); None unless asked for
    num_examples: int  # examples added
    num_scored: np.ndarray  # [layers]: examples with a non-empty union at that layer


class CatAccumulator:
    """Streams examples in and averages their CAT scores per layer (and optionally per head).

    `present` (`[layers, heads]` bool, default: every head) names the heads a structurally pruned
    model still has: per-layer scores average the attention of those only, per-head scores of the
    others are NaN.
    """

    TOTALS = ("num_examples", "_layer_sum", "_layer_count", "_head_sum", "_head_count")  # summed over ranks

    def __init__(
        self,
        num_layers: int,
        num_heads: int,
        *,
        per_head: bool = False,
        attention_quantile: float = ATTENTION_QUANTILE,
        distance_quantile: float = DISTANCE_QUANTILE,
        exclude_diagonal: bool = False,
        present: np.ndarray | Tensor | None = None,
    ):
        self.shape = (num_layers, num_heads)
        self.present = None if present is None else _present(present, self.shape)
        self.per_head = per_head
        self.options = {
            "attention_quantile": attention_quantile,
            "distance_quantile": distance_quantile,
            "exclude_diagonal": exclude_diagonal,
        }
        self.num_examples = 0
        self._layer_sum, self._layer_count = np.zeros(num_layers), np.zeros(num_layers, dtype=np.int64)
        self._head_sum, self._head_count = np.zeros(self.shape), np.zeros(self.shape, dtype=np.int64)

    def add(
        self, attn: Tensor | np.ndarray, distances: Tensor | np.ndarray, keep: list[np.ndarray] | None = None
    ) -> None:
        """Add one example: leaf-level attention `[layers, heads, n, n]` and tree distances `[n, n]`.

        `keep` (one `[n]` bool mask per layer) scores each layer on its own subset of the leaves,
        rows and columns of both matrices (CAT-probing's token-type filter); a layer left with fewer
        than two leaves has no score for this example.
        """
        attn = _numpy(attn)  # [layers, heads, n, n]
        distances = _numpy(distances)  # [n, n]
        if attn.shape[:2] != self.shape:
            raise ValueError(f"attention of shape {attn.shape} is not {self.shape} layers x heads")
        if keep is None:
            layer_scores = layer_cat_scores(attn, distances, self.present, **self.options)  # [layers]
            head_scores = cat_scores(attn, distances, **self.options) if self.per_head else None  # [layers, heads]
        else:
            layer_scores = np.full(self.shape[0], np.nan)
            head_scores = np.full(self.shape, np.nan) if self.per_head else None
            for layer, chosen in enumerate(keep):
                if int(chosen.sum()) < 2:
                    continue
                sub_attn = attn[layer][:, chosen][:, :, chosen]  # [heads, k, k]
                sub_distances = distances[chosen][:, chosen]  # [k, k]
                present = None if self.present is None else self.present[layer : layer + 1]
                layer_scores[layer] = layer_cat_scores(sub_attn[None], sub_distances, present, **self.options)[0]
                if head_scores is not None:
                    head_scores[layer] = cat_scores(sub_attn, sub_distances, **self.options)
        self._include(self._layer_sum, self._layer_count, layer_scores)
        if head_scores is not None:
            if self.present is not None:
                head_scores = np.where(self.present, head_scores, np.nan)
            self._include(self._head_sum, self._head_count, head_scores)
        self.num_examples += 1

    def result(self) -> CatResult:
        return CatResult(
            per_layer=_mean(self._layer_sum, self._layer_count),
            per_head=_mean(self._head_sum, self._head_count) if self.per_head else None,
            num_examples=self.num_examples,
            num_scored=self._layer_count.copy(),
        )

    @staticmethod
    def _include(total: np.ndarray, count: np.ndarray, scores: np.ndarray) -> None:
        scored = ~np.isnan(scores)
        total += np.where(scored, scores, 0.0)
        count += scored


def _mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


class TypeRates:
    """CAT-probing's token-type denoising (frequent_type=1): which leaf types high attention prefers.

    Per layer and leaf type, over every example: how often a pair with that type at one end has
    high attention (A > quantile(A, attention_quantile), heads averaged), divided by how many pairs
    have that type at one end (both ends of every pair count). Types occurring less often than once
    per token are not eligible; the `count` types with the highest rate are kept, per layer, as the
    paper's get_freq_type_list does (it keeps 8).
    """

    TOTALS = ("high", "pairs", "tokens")  # summed over ranks

    def __init__(self, num_layers: int, attention_quantile: float = ATTENTION_QUANTILE):
        self.num_layers = num_layers
        self.quantile = attention_quantile
        self.high: list[dict[str, float]] = [{} for _ in range(num_layers)]
        self.pairs: dict[str, float] = {}
        self.tokens = 0

    def add(self, layer_attn: np.ndarray, kinds: Sequence[str]) -> None:
        """layer_attn: `[layers, n, n]` leaf attention, heads averaged; kinds: the type of each leaf."""
        n = len(kinds)
        kinds = np.asarray(kinds)
        for kind in np.unique(kinds):
            self.pairs[kind] = self.pairs.get(kind, 0.0) + 2.0 * n * float((kinds == kind).sum())
        self.tokens += n
        for layer in range(self.num_layers):
            a = layer_attn[layer]
            high = a > np.quantile(a, self.quantile)  # [n, n] over the whole matrix
            ends = high.sum(1) + high.sum(0)  # [n]: high pairs each leaf is one end of
            for kind in np.unique(kinds):
                self.high[layer][kind] = self.high[layer].get(kind, 0.0) + float(ends[kinds == kind].sum())

    def frequent(self, count: int) -> list[list[str]]:
        """The `count` eligible types with the highest rate, per layer (ties: alphabetical)."""
        eligible = [kind for kind, pairs in self.pairs.items() if pairs > self.tokens]
        chosen = []
        for layer in range(self.num_layers):
            rates = {kind: self.high[layer].get(kind, 0.0) / self.pairs[kind] for kind in eligible}
            chosen.append(sorted(rates, key=lambda kind: (-rates[kind], kind))[:count])
        return chosen
