"""Attention versus dependency syntax, and head similarity (Clark et al. 2019, arXiv 1906.04341).

Definitions follow the paper and its notebooks (github.com/clarkkev/attention-analysis):

- Word-level maps: attention TO a split word is the SUM over its sub-tokens, attention FROM a split
  word is the MEAN over its sub-tokens; special tokens are dropped (`word_level_attention`).
- Dependency heads: zero the diagonal, the most-attended other word is the prediction; scored per
  relation in both directions, against the best fixed-offset baseline (`DependencyHeadScorer`).
- Head similarity: Jensen-Shannon divergence between two heads' attention distributions, smoothed
  A <- (1 - 0.001) A + 0.001 / n and summed over query tokens (`HeadJSDivergence`), embedded in 2-D
  with MDS (`mds_embedding`).

Attention entropy (Clark sec. 3.3) is `workbench.analysis.attention_stats.smoothed_entropy`, which
the attention step streams.

Everything is a pure computation on maps a step streams in one sentence at a time; the accumulators
keep only per-head counters, never the maps. Tensors may live on any device; the functions return
tensors there, the accumulators numpy arrays. Heads are flattened layer-major: layer * num_heads + head.
Heads are always the ORIGINAL heads of the model; on a structurally pruned model the step places each
layer's maps at their original head ids and tells the scorer which heads exist (`present`): the
others score NaN and are never a best head.
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from workbench.data.pooling import word_pooling_matrix
from workbench.errors import StepError

Direction = Literal["dep_to_head", "head_to_dep"]

PUNCT_UPOS = "PUNCT"
DEFAULT_OFFSETS = tuple(range(-3, 3))  # Clark's baseline: from 3 words to the left to 2 to the right
DEFAULT_EXCLUDED_RELATIONS = ("root", "punct")
JS_SMOOTHING = 1e-3


# --- Sub-tokens to words (the pooling itself: workbench/data/pooling.py) --------------------------


def _check_square(attn: Tensor, seq: int) -> None:
    if tuple(attn.shape[-2:]) != (seq, seq):
        raise ValueError(f"attention of shape {tuple(attn.shape)} does not match {seq} sub-tokens")


WordPooling = Literal["first", "mean", "max"]


def word_level_attention(
    attn: Tensor, word_index: Sequence[int] | Tensor, num_words: int, pooling: WordPooling = "mean"
) -> Tensor:
    """Sub-token attention `[..., seq, seq]` of one sentence to word-level attention `[..., words, words]`.

    Clark et al. (2019, sec. 4): attention TO a split word is the sum of the attention to its
    sub-tokens, so a row stays a distribution. Attention FROM a split word pools its sub-tokens'
    rows (`pooling`, the modes of Clark's bpe_utils.get_word_word_attention): "mean" (the paper's
    text), "first" (its first sub-token's row: the released code's default), or "max" (the
    elementwise max, renormalised to the row's total over all tokens, special ones included, as
    Clark's code does). `word_index[s]` is the word of sub-token s, -1 for special tokens and padding
    (dropped). Batched over any leading dims (layers, heads); a batch of sentences is pooled one
    sentence at a time, since each has its own word_index.
    """
    attn = torch.as_tensor(attn)
    _check_square(attn, len(word_index))

    def transposed(mode: str, every_word: bool = False) -> Tensor:  # P^T [seq, words] (workbench/data/pooling.py)
        return word_pooling_matrix(
            word_index, num_words, mode, dtype=attn.dtype, device=attn.device, transposed=True, every_word=every_word  # type: ignore[arg-type]
        )

    to_words = attn @ transposed("sum", every_word=True)  # [..., seq, words]; every word owns a sub-token
    if pooling in ("mean", "first"):
        return transposed(pooling).T @ to_words  # [..., words, words]
    if pooling == "max":
        index = torch.as_tensor(word_index, device=attn.device).long()
        rows = []
        others = attn[..., index < 0].sum(-1)  # [..., seq] attention to special tokens
        for word in range(num_words):
            pieces = (index == word).nonzero().flatten()
            pooled = to_words[..., pieces, :].amax(-2)  # [..., words]
            total = pooled.sum(-1, keepdim=True) + others[..., pieces].amax(-1, keepdim=True)
            rows.append(pooled / total.clamp(min=torch.finfo(attn.dtype).tiny))
        return torch.stack(rows, dim=-2)
    raise ValueError(f"unknown pooling {pooling!r}; expected 'first', 'mean' or 'max'")


# --- Dependency relations -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RelationScore:
    """How well single heads, and the fixed-offset baseline, find the arcs of one relation.

    `dep_to_head[l, h]`: fraction of arcs where the dependent's most-attended other word is its head.
    `head_to_dep[l, h]`: fraction of arcs where the word attending most to the dependent is its head
    (Clark's "transpose" mode; see `DependencyHeadScorer`). Both are NaN for heads the model does not
    have (structurally pruned).
    """

    relation: str
    count: int  # scored arcs
    dep_to_head: np.ndarray  # [layers, heads]
    head_to_dep: np.ndarray  # [layers, heads]
    offset_accuracy: dict[int, float]  # baseline accuracy of "the head is the word at i + offset"
    frequent: bool  # count >= min_count; Clark's tables show only these

    def best_head(self, direction: Direction) -> tuple[int, int, float]:
        """(layer, head, accuracy) of the best head in one direction; ties go to the lowest index.

        Heads scored NaN (pruned) are never picked; with no head at all the answer is (-1, -1, NaN).
        """
        accuracy = getattr(self, direction)  # [layers, heads]
        if np.isnan(accuracy).all():
            return -1, -1, math.nan
        layer, head = np.unravel_index(int(np.nanargmax(accuracy)), accuracy.shape)
        return int(layer), int(head), float(accuracy[layer, head])

    @property
    def best(self) -> tuple[Direction, int, int, float]:
        """The best head over both directions, as in Clark's Table 1: (direction, layer, head, accuracy)."""
        dep_to_head, head_to_dep = self.best_head("dep_to_head"), self.best_head("head_to_dep")
        if head_to_dep[2] > dep_to_head[2]:
            return ("head_to_dep", *head_to_dep)
        return ("dep_to_head", *dep_to_head)

    @property
    def baseline(self) -> tuple[int, float]:
        """(offset, accuracy) of the best fixed offset; ties go to the first offset tried."""
        offset = max(self.offset_accuracy, key=self.offset_accuracy.__getitem__)
        return offset, self.offset_accuracy[offset]


@dataclass(frozen=True, eq=False)
class DependencyScores:
    """Scores per relation (most frequent first) and over every scored arc ("all" in Clark's Table 1)."""

    overall: RelationScore
    relations: dict[str, RelationScore]

    @property
    def frequent(self) -> dict[str, RelationScore]:
        return {name: score for name, score in self.relations.items() if score.frequent}

    @property
    def rare(self) -> dict[str, RelationScore]:
        """Relations with fewer than min_count arcs: kept, flagged, and left out of `frequent`."""
        return {name: score for name, score in self.relations.items() if not score.frequent}


class DependencyHeadScorer:
    """Accumulates, sentence by sentence, how often each head points at syntactic heads (Clark sec. 4.2).

    For every word, the prediction of a head is its most-attended other word (diagonal zeroed;
    argmax ties go to the first word, as in numpy). Two directions are scored per arc
    (dependent d, head g), following Clark's notebook:

    - `dep_to_head` ("normal"): argmax of row d is g, i.e. the dependent attends most to its head;
    - `head_to_dep` ("transpose"): argmax of column d is g, i.e. of all other words, the head is the
      one attending most to the dependent. Every arc is judged on its own column, so a head word
      with several dependents of one relation can get all of them right (a per-row argmax of the
      head word could credit only one of them).

    The baseline predicts the word at d + offset for each offset (Clark: -3..+2; an offset past the
    start means the root, one past the end the last word) and keeps the best offset per relation.
    As the baseline predicts a head for every dependent, it is the same for both directions.

    Arcs to the root and relations in `excluded_relations` (root, punct) are not scored, nor, when
    `upos` is given, arcs from or to a PUNCT word (punctuation still competes as a prediction).
    `overall` ("all") covers the scored arcs (`all_words=False`), or, as Clark's evaluate_predictor
    does, EVERY word (`all_words=True`): root words (whose head no attention prediction can be, but
    an offset past the start can), punctuation and excluded relations too. Subtypes are stripped by
    default ("nsubj:pass" -> "nsubj"). Clark's PTB-specific "poss" correction (judge the word before "'s") is not applied:
    in UD the possessive marker is the possessor's `case` dependent.

    `present` (`[layers, heads]` bool, default: every head) names the heads the model has; the maps
    of the others (pruned heads, all zeros) are still accepted, but their accuracies come out NaN.
    """

    TOTALS = ("_hits", "_offset_hits", "_counts", "_all_hits", "_all_offset_hits", "_all_count")  # summed over ranks

    def __init__(
        self,
        num_layers: int,
        num_heads: int,
        *,
        relations: Collection[str] | None = None,
        min_count: int = 100,
        strip_subtypes: bool = True,
        excluded_relations: Collection[str] = DEFAULT_EXCLUDED_RELATIONS,
        offsets: Sequence[int] = DEFAULT_OFFSETS,
        present: np.ndarray | Tensor | None = None,
        all_words: bool = False,
    ):
        self.shape = (num_layers, num_heads)
        self.all_words = all_words
        self._all_hits = np.zeros((2, *self.shape), dtype=np.int64)  # "all" when it counts every word
        self._all_offset_hits = np.zeros(len(offsets), dtype=np.int64)
        self._all_count = 0
        self.present = np.ones(self.shape, dtype=bool) if present is None else np.asarray(present, dtype=bool)
        if self.present.shape != self.shape:
            raise ValueError(f"present has shape {self.present.shape}, expected {self.shape} layers x heads")
        self.relations = None if relations is None else set(relations)
        self.min_count = min_count
        self.strip_subtypes = strip_subtypes
        self.excluded_relations = set(excluded_relations)
        self.offsets = np.asarray(offsets)  # [offsets]
        self._hits: dict[str, np.ndarray] = {}  # relation -> [2, layers, heads]: dep_to_head, head_to_dep
        self._offset_hits: dict[str, np.ndarray] = {}  # relation -> [offsets]
        self._counts: Counter[str] = Counter()

    def add(
        self,
        word_attn: Tensor,
        heads: Sequence[int],
        deprels: Sequence[str],
        upos: Sequence[str] | None = None,
    ) -> None:
        """Score one sentence: word-level attention `[layers, heads, words, words]` and its tree.

        `heads[i]` is the 1-based head of word i (0 = root), `deprels[i]` its relation, `upos[i]`
        its universal POS tag (optional; used to drop arcs from or to punctuation).
        """
        attn = torch.as_tensor(word_attn).clone()  # [layers, heads, words, words]
        self._check_sentence(attn, heads, deprels, upos)
        attn.diagonal(dim1=-2, dim2=-1).zero_()
        most_attended = attn.argmax(-1).cpu().numpy()  # [layers, heads, words]: each word's top target
        most_attending = attn.argmax(-2).cpu().numpy()  # [layers, heads, words]: each word's top attender

        dependents, governors, labels = self._arcs(heads, deprels, upos)  # [arcs] each
        hits = np.stack(
            [most_attended[..., dependents] == governors, most_attending[..., dependents] == governors]
        )  # [2, layers, heads, arcs]
        # [offsets, arcs]; -1 = before the sentence, i.e. the root
        guesses = np.clip(dependents + self.offsets[:, None], -1, len(heads) - 1)
        offset_hits = guesses == governors  # [offsets, arcs]

        for relation in dict.fromkeys(labels.tolist()):  # first-seen order, so ties rank stably
            arcs = labels == relation
            self._hits.setdefault(relation, np.zeros((2, *self.shape), dtype=np.int64))
            self._offset_hits.setdefault(relation, np.zeros(len(self.offsets), dtype=np.int64))
            self._hits[relation] += hits[..., arcs].sum(-1)
            self._offset_hits[relation] += offset_hits[:, arcs].sum(-1)
            self._counts[relation] += int(arcs.sum())

        if self.all_words:  # every word, its gold head 0-based (-1 = the root)
            words = np.arange(len(heads))
            gold = np.asarray(heads, dtype=np.int64) - 1
            self._all_hits += np.stack([most_attended == gold, most_attending == gold]).sum(-1)
            self._all_offset_hits += (np.clip(words + self.offsets[:, None], -1, len(heads) - 1) == gold).sum(-1)
            self._all_count += len(heads)

    def result(self) -> DependencyScores:
        """Accuracies so far, most frequent relation first.

        `relations`, if given, restricts the per-relation breakdown; `overall` still counts every
        scored arc, so it stays comparable between runs.
        """
        if not self._counts:
            raise StepError("no dependency arcs were scored; does the dataset have heads and deprels?")
        if self.all_words:
            overall = self._score("all", self._all_hits, self._all_offset_hits, self._all_count)
        else:
            overall = self._score(
                "all",
                sum(self._hits.values()),
                sum(self._offset_hits.values()),
                sum(self._counts.values()),
            )
        relations = {
            relation: self._score(relation, self._hits[relation], self._offset_hits[relation], count)
            for relation, count in self._counts.most_common()
            if self.relations is None or relation in self.relations
        }
        return DependencyScores(overall=overall, relations=relations)

    def _check_sentence(
        self, attn: Tensor, heads: Sequence[int], deprels: Sequence[str], upos: Sequence[str] | None
    ) -> None:
        num_words = len(heads)
        if tuple(attn.shape) != (*self.shape, num_words, num_words):
            raise StepError(
                f"word attention of shape {tuple(attn.shape)} does not match "
                f"{self.shape[0]} layers x {self.shape[1]} heads and {num_words} words"
            )
        lengths = {"relations": len(deprels), "upos tags": num_words if upos is None else len(upos)}
        for name, length in lengths.items():
            if length != num_words:
                raise StepError(f"a sentence has {num_words} heads but {length} {name}")
        if any(not 0 <= head <= num_words for head in heads):
            raise StepError(f"a head index is outside 0..{num_words}: {list(heads)}")

    def _arcs(
        self, heads: Sequence[int], deprels: Sequence[str], upos: Sequence[str] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The scored arcs as 0-based (dependents, governors) and their relation labels."""
        arcs = []
        for dependent, (head, deprel) in enumerate(zip(heads, deprels)):
            universal = deprel.split(":")[0]
            if head == 0 or universal in self.excluded_relations:
                continue
            if upos is not None and PUNCT_UPOS in (upos[dependent], upos[head - 1]):
                continue
            arcs.append((dependent, head - 1, universal if self.strip_subtypes else deprel))
        dependents, governors, labels = zip(*arcs) if arcs else ((), (), ())
        return (
            np.array(dependents, dtype=np.int64),
            np.array(governors, dtype=np.int64),
            np.array(labels, dtype=str),
        )

    def _score(self, relation: str, hits: np.ndarray, offset_hits: np.ndarray, count: int) -> RelationScore:
        rates = np.where(self.present, hits / count, np.nan)  # [2, layers, heads], NaN = no such head
        return RelationScore(
            relation=relation,
            count=count,
            dep_to_head=rates[0],
            head_to_dep=rates[1],
            offset_accuracy={int(o): float(h / count) for o, h in zip(self.offsets, offset_hits)},
            frequent=count >= self.min_count,
        )


# --- Head similarity -----------------------------------------------------------------------------


def js_divergence_between_heads(
    attn: Tensor, *, eps: float = JS_SMOOTHING, chunk_elements: int = 2**24
) -> Tensor:
    """Pairwise Jensen-Shannon divergence between the heads of one sentence, summed over query tokens.

    `attn` is `[heads, seq, seq]` or `[layers, heads, seq, seq]` (flattened layer-major). Each row is
    smoothed A <- (1 - eps) A + eps / seq (Clark's head_distances.py), then for every pair of heads
    (a, b) and query i: JS = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, natural log, computed as
    1/2 sum p log p + 1/2 sum q log q - sum m log m. Pairs are processed in row chunks of at most
    `chunk_elements` values of m, upper triangle only, in float64 so identical heads give exactly 0.
    Returns `[K, K]` float64, symmetric, zero diagonal. The cost is O(K^2 seq^2) per sentence: a few
    seconds on two CPU threads for BERT-base (K = 144) at 128 tokens, far less on a GPU.
    """
    seq = attn.shape[-1]
    p = (1 - eps) * attn.reshape(-1, seq, seq).double() + eps / seq  # [K, seq, seq]
    num = p.shape[0]
    p_log_p = torch.xlogy(p, p).sum((-2, -1))  # [K]
    js = torch.zeros(num, num, dtype=torch.float64, device=p.device)  # [K, K]
    rows = max(1, chunk_elements // max(1, p[0].numel() * num))
    for start in range(0, num, rows):
        stop = min(start + rows, num)
        m = (p[start:stop, None] + p[None, start:]).mul_(0.5)  # [rows, K - start, seq, seq]
        m_log_m = torch.xlogy(m, m).sum((-2, -1))  # [rows, K - start]
        js[start:stop, start:] = (p_log_p[start:stop, None] + p_log_p[None, start:]) / 2 - m_log_m
    js = torch.triu(js, diagonal=1).clamp_min(0)  # rounding can make a near-zero divergence negative
    return js + js.T


class HeadJSDivergence:
    """Accumulates `js_divergence_between_heads` over sentences (Clark sec. 6): `[L*H, L*H]` distances."""

    TOTALS = ("_total", "num_tokens")  # summed over ranks

    def __init__(
        self, num_layers: int, num_heads: int, *, eps: float = JS_SMOOTHING, chunk_elements: int = 2**24
    ):
        self.shape = (num_layers, num_heads)
        self.eps = eps
        self.chunk_elements = chunk_elements
        self.num_tokens = 0
        self._total = np.zeros((num_layers * num_heads,) * 2)  # [L*H, L*H]

    def add(self, attn: Tensor, mask: Tensor | Sequence[int] | None = None) -> None:
        """Add `[layers, heads, seq, seq]` (one sentence) or `[batch, layers, heads, seq, seq]`.

        `mask` (`[seq]` or `[batch, seq]`, 1 = real token) drops padding from both the queries and the
        keys, so the smoothing spreads over real tokens only. Special tokens stay, as in Clark's code.
        """
        attn = torch.as_tensor(attn)
        if attn.dim() == 4:
            attn = attn[None]
            mask = None if mask is None else torch.as_tensor(mask)[None]
        if tuple(attn.shape[1:3]) != self.shape:
            raise ValueError(f"attention of shape {tuple(attn.shape)} is not {self.shape} layers x heads")
        for position, sentence in enumerate(attn):  # [layers, heads, seq, seq]
            if mask is not None:
                keep = torch.as_tensor(mask[position], device=sentence.device).bool()  # [seq]
                sentence = sentence[..., keep, :][..., keep]
            js = js_divergence_between_heads(sentence, eps=self.eps, chunk_elements=self.chunk_elements)
            self._total += js.cpu().numpy()
            self.num_tokens += sentence.shape[-1]

    def result(self, *, per_token: bool = False) -> np.ndarray:
        """Summed JS divergences `[L*H, L*H]` (Clark's), or their mean per query token."""
        if per_token:
            return self._total / max(1, self.num_tokens)
        return self._total.copy()


def mds_embedding(distance_matrix: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D metric MDS of a precomputed distance matrix `[K, K]` -> `[K, 2]` (Clark's Figure 5)."""
    from sklearn.manifold import MDS  # scikit-learn is slow to import and only this function needs it

    if "metric_mds" in inspect.signature(MDS).parameters:  # scikit-learn >= 1.8 renamed the arguments
        mds = MDS(n_components=2, metric="precomputed", init="random", n_init=4, random_state=seed)
    else:
        mds = MDS(n_components=2, dissimilarity="precomputed", n_init=4, random_state=seed)
    return mds.fit_transform(np.asarray(distance_matrix, dtype=np.float64))

