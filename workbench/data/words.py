"""Pre-split words (treebank sentences, code's syntax-tree leaves: the kinds with the "words"
capability, workbench/data/kinds/) on their way through a model.

Shared by `extract` (word features), `syntax_heads` and `cat_probe` (word attention): which words
an example has, batches of similar length, which words of an encoded batch survived, and the
matrix that pools sub-tokens into words (`workbench.data.alignment` does the alignment itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.data.kinds import kind_named

if TYPE_CHECKING:
    import torch

    from workbench.data.loaded import LoadedDataset


def dataset_words(dataset: "LoadedDataset") -> list[list[str]]:
    """The pre-split words of every example of a kind with words (kinds/: a treebank's syntactic
    words, code's syntax-tree leaves), as its kind's `item_words` gives them.

    The kind is found by `dataset.kind`, its name, so anything with `kind`, `name` and the kind's
    items field (`sentences`, `examples`) will do.
    """
    kind = kind_named(dataset.kind)
    if not kind.supports("words"):
        from workbench.errors import StepError

        raise StepError(f"dataset '{dataset.name}' is a {dataset.kind} dataset; words come from treebanks or code")
    return [list(kind.item_words(item)) for item in kind.items(dataset)]


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
    from workbench.data.pooling import word_pooling_matrix

    return word_pooling_matrix(word_index, num_words, pooling)  # type: ignore[arg-type]
