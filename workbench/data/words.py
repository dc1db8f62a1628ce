"""Pre-split words (treebank sentences, code's syntax-tree leaves) on their way through a model.

Shared by `extract` (word features), `syntax_heads` and `cat_probe` (word attention): which words
an example has, batches of similar length, which words of an encoded batch survived, and the
matrix that pools sub-tokens into words (`workbench.data.alignment` does the alignment itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from workbench.data.sources import LoadedDataset


def dataset_words(dataset: "LoadedDataset") -> list[list[str]]:
    """The pre-split words of every example: a treebank's syntactic words, or code's syntax-tree leaves."""
    if dataset.kind == "treebank":
        return [list(sentence.words) for sentence in dataset.sentences]
    if dataset.kind == "code":
        return [list(example.tokens) for example in dataset.examples]
    from workbench.errors import StepError

    raise StepError(f"dataset '{dataset.name}' is a {dataset.kind} dataset; words come from treebanks or code")


def word_batches(words: list[list[str]], indices: list[int], batch_size: int) -> list[list[int]]:
    """`indices` cut into batches of similar length (longest first), for little padding."""
    ordered = sorted(indices, key=lambda i: (-(len(words[i]) + sum(len(w) for w in words[i]) // 4), i))
    return [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]


def kept_words(aligned: Any, row: int) -> "torch.Tensor":
    """Indices of the words of batch row `row` that kept all their sub-tokens and have at least one."""
    count = int(aligned.num_words[row])
    return aligned.word_has_tokens[row, :count].nonzero().flatten()


def piece_matrix(word_index: "torch.Tensor", num_words: int, pooling: str) -> "torch.Tensor":
    """[batch, words, seq] pooling matrix: first, mean or last sub-token of each word."""
    from workbench.data.alignment import word_pooling_matrix

    if pooling != "last":
        return word_pooling_matrix(word_index, num_words, pooling)  # type: ignore[arg-type]
    member = word_pooling_matrix(word_index, num_words, "sum")  # [batch, words, seq]
    return member * (member.flip(-1).cumsum(-1).flip(-1) == 1)
