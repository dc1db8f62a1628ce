"""Sub-tokens to words: the one place that says how a word's sub-tokens are pooled.

A word (a treebank word, a code leaf) is split by the tokenizer into sub-tokens; `word_index[s]` is
the word of sub-token s, or -1 for a sub-token of no word (special tokens, padding, the pieces of
a word cut by truncation), as `workbench.data.alignment.AlignedBatch.word_index` gives it.
`word_pooling_matrix` turns that into the matrix P with word features = P @ sub-token features:

    first  a word's first sub-token          (extract; Clark's released code: attention FROM a word)
    last   a word's last sub-token           (extract)
    mean   the mean of its sub-tokens        (extract; Clark's paper: FROM a word; CAT-probing: both ways)
    sum    the sum of its sub-tokens         (Clark: attention TO a word, so a row stays a distribution)

Used by `extract` (word features, a batch at a time), `analysis.syntax.word_level_attention` and
`analysis.cat.token_pair_attention` (attention maps, one sentence at a time); Clark's "max" pooling
is not linear and stays in analysis/syntax.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

WordPooling = Literal["first", "last", "mean", "sum"]


def word_pooling_matrix(
    word_index: torch.Tensor | Sequence[int],
    num_words: int,
    mode: WordPooling = "mean",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    transposed: bool = False,
    every_word: bool = False,
) -> torch.Tensor:
    """[..., words, seq] matrix P such that word features = P @ sub-token features.

    `word_index` is [..., seq] (a batch [batch, seq] or one sentence [seq]). Words without
    sub-tokens get a row of zeros. `transposed=True` builds P^T [..., seq, words] instead (in that
    layout), for attention maps: A @ P^T pools the attended sub-tokens. For attention A [seq, seq],
    Clark et al.'s word-level map (from a word: mean over its pieces; to a word: sum over them) is
    `P_mean @ A @ P_sum^T`. `every_word=True`: every word must own a sub-token and every index be
    a word (a StepError otherwise: an empty word means the input was truncated or misaligned, and
    its zero row would silently score as a wrong prediction).
    """
    index = torch.as_tensor(word_index, device=device).long()  # [..., seq]
    if every_word and index.numel() and int(index.max()) >= num_words:
        from workbench.errors import StepError

        raise StepError(f"a sub-token maps to group {int(index.max())}, but there are only {num_words}")
    words = torch.arange(num_words, device=index.device)
    if transposed:
        member = (index[..., :, None] == words).to(dtype)  # [..., seq, words]
    else:
        member = (index[..., None, :] == words[:, None]).to(dtype)  # [..., words, seq]
    pieces = -2 if transposed else -1  # the sub-token axis
    if every_word:
        empty = (member.sum(pieces) == 0).nonzero()[..., -1].tolist()
        if empty:
            from workbench.errors import StepError

            raise StepError(
                f"groups {empty[:5]} own no sub-token; was the input truncated?",
                hint="raise max_length or drop sentences longer than it",
            )
    if mode == "sum":
        return member
    if mode == "mean":
        return member / member.sum(dim=pieces, keepdim=True).clamp(min=1)
    if mode == "first":
        return member * (member.cumsum(dim=pieces) == 1)
    if mode == "last":
        return member * (member.flip(pieces).cumsum(pieces).flip(pieces) == 1)
    raise ValueError(f"unknown pooling mode {mode!r}; expected 'first', 'last', 'mean' or 'sum'")
