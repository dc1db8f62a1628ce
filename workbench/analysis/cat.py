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

from workbench.analysis.syntax import membership_matrix

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
    members = membership_matrix(leaf_index, num_leaves, dtype=attn.dtype, device=attn.device)  # [seq, leaves]
    mean_pool = (members / members.sum(0)).T  # [leaves, seq]
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

    def add(self, attn: Tensor | np.ndarray, distances: Tensor | np.ndarray) -> None:
        """Add one example: leaf-level attention `[layers, heads, n, n]` and tree distances `[n, n]`."""
        attn = _numpy(attn)  # [layers, heads, n, n]
        if attn.shape[:2] != self.shape:
            raise ValueError(f"attention of shape {attn.shape} is not {self.shape} layers x heads")
        layer_scores = layer_cat_scores(attn, distances, self.present, **self.options)  # [layers]
        self._include(self._layer_sum, self._layer_count, layer_scores)
        if self.per_head:
            head_scores = cat_scores(attn, distances, **self.options)  # [layers, heads]
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
