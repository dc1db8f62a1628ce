"""Words to sub-tokens, for any fast (Rust-backed) Hugging Face tokenizer.

Treebank sentences and code leaves arrive as lists of words; models see sub-tokens. `encode_words`
tokenizes pre-split words and records, for every sub-token, the word it came from. A word is kept
only when all of its sub-tokens survive truncation, so word-level results never rest on half a
word. `word_pooling_matrix` (workbench/data/pooling.py) then turns sub-token features (or
attention) into word features.

Byte-level BPE tokenizers (GPT-2, RoBERTa) mark a word start with a leading space ("Ġword"); on
pre-split input they only do so when their pre-tokenizer adds a prefix space, so `word_input_mode`
switches that on for the duration of a call and switches it back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tokenizers import Encoding, pre_tokenizers

from workbench.data.pooling import word_pooling_matrix as word_pooling_matrix  # re-exported (tests, callers)
from workbench.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class AlignedBatch:
    """A tokenized batch of pre-split sentences and its sub-token -> word alignment."""

    input_ids: torch.Tensor  # [batch, seq] long
    attention_mask: torch.Tensor  # [batch, seq] long
    word_index: torch.Tensor  # [batch, seq] long: the word of each sub-token; -1 for special tokens,
    # padding, and the surviving pieces of a word cut by truncation
    num_words: torch.Tensor  # [batch] long: words kept whole; they are always the leading words
    word_has_tokens: torch.Tensor  # [batch, max_words] bool: a kept word with at least one sub-token

    @property
    def max_words(self) -> int:
        """The word dimension of this batch: the largest `num_words`."""
        return self.word_has_tokens.shape[1]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The tensors a model's forward takes, by keyword."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


@contextmanager
def word_input_mode(tokenizer: PreTrainedTokenizerBase) -> Iterator[PreTrainedTokenizerBase]:
    """Let `tokenizer` read pre-split words as it reads running text, for the duration of the block.

    Byte-level pre-tokenizers get a prefix space before every word (the first one included, as
    GPT-2 and RoBERTa document for `is_split_into_words`), and truncation keeps the start of the
    sequence. Both settings are restored on exit, so the caller's tokenizer is left as it was.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; aligning words to sub-tokens needs word_ids()",
            hint="AutoTokenizer loads one (backed by the tokenizers library) when the model ships a tokenizer.json",
        )
    byte_levels = _byte_level_parts(tokenizer.backend_tokenizer.pre_tokenizer)
    switched = [part for part in byte_levels if not part.add_prefix_space]
    truncation_side = tokenizer.truncation_side
    for part in switched:
        part.add_prefix_space = True
    tokenizer.truncation_side = "right"
    try:
        yield tokenizer
    finally:
        for part in switched:
            part.add_prefix_space = False
        tokenizer.truncation_side = truncation_side


def encode_words(tokenizer: PreTrainedTokenizerBase, sentences: list[list[str]], max_length: int) -> AlignedBatch:
    """Tokenize pre-split sentences (padded to the longest) and align sub-tokens to words.

    A word whose sub-tokens are cut by truncation is dropped with every word after it. A word
    that tokenizes to nothing (an empty string, a lone soft hyphen for BERT) is kept but has no
    sub-tokens: `word_has_tokens` is False for it, and the other words keep their indices.
    No token type ids: a single sentence is segment 0, which every model with segment embeddings
    assumes when given none, and GPT-2 would add `wte(0)` to every token it is given them for.
    """
    if not sentences:
        raise ValueError("encode_words needs at least one sentence")
    with word_input_mode(tokenizer):
        encoded = tokenizer(
            sentences,
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            padding="longest",
            return_tensors="pt",
            return_token_type_ids=False,
        )
    input_ids = encoded["input_ids"]  # [batch, seq]
    word_index = torch.full_like(input_ids, -1)  # [batch, seq]
    num_words = torch.zeros(len(sentences), dtype=torch.long)  # [batch]
    for row, words in enumerate(sentences):
        kept = _words_kept(encoded.encodings[row], len(words))
        aligned = [-1 if word is None or word >= kept else word for word in encoded.word_ids(row)]
        word_index[row] = torch.tensor(aligned, dtype=torch.long)
        num_words[row] = kept

    word_has_tokens = torch.zeros(len(sentences), int(num_words.max()), dtype=torch.bool)  # [batch, max_words]
    rows, positions = torch.nonzero(word_index >= 0, as_tuple=True)
    word_has_tokens[rows, word_index[rows, positions]] = True
    return AlignedBatch(
        input_ids=input_ids,
        attention_mask=encoded["attention_mask"],
        word_index=word_index,
        num_words=num_words,
        word_has_tokens=word_has_tokens,
    )


def _words_kept(encoding: Encoding, num_words: int) -> int:
    """How many leading words kept all their sub-tokens: the first word of the truncated overflow.

    (Zero-token words before that word count as kept; every word counts when nothing overflowed.)
    """
    if not encoding.overflowing:
        return num_words
    overflow_words = (word for word in encoding.overflowing[0].word_ids if word is not None)
    return next(overflow_words, num_words)


def _byte_level_parts(pre_tokenizer: pre_tokenizers.PreTokenizer | None) -> list[pre_tokenizers.ByteLevel]:
    """The ByteLevel pre-tokenizers in `pre_tokenizer`, looking inside Sequences."""
    if isinstance(pre_tokenizer, pre_tokenizers.ByteLevel):
        return [pre_tokenizer]
    if not isinstance(pre_tokenizer, pre_tokenizers.Sequence):
        return []
    parts: list[pre_tokenizers.ByteLevel] = []
    index = 0
    while True:
        try:
            part = pre_tokenizer[index]  # Sequence supports indexing but not len() or iteration
        except IndexError:
            return parts
        parts += _byte_level_parts(part)
        index += 1
