"""One label vocabulary per model, and every dataset mapped through it (the Hugging Face convention).

A classification model owns its `id2label` / `label2id` (CONVENTIONS.md, 10). They come from, in order:

  1. the recipe's `model.labels` (class names in id order);
  2. the checkpoint's config, when it has real names (not transformers' `LABEL_0`, `LABEL_1`, ...);
  3. the training dataset of the recipe (the dataset of its first `finetune` step): its distinct
     labels, sorted, over the WHOLE dataset before `limit`, so that a limit never renumbers classes.

The vocabulary is saved in the config of every model the workbench writes, so a fine-tuned or pruned
model keeps it. Datasets never number labels themselves: `label_ids` maps a dataset's raw label column
through the model's vocabulary, and refuses what does not fit (an unknown name, an integer out of
range, a float on a classification head, a missing label). `head_label_problem` says the same about
the first rows of a file before anything is loaded (`workbench validate`), in the same words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workbench.errors import DataError

DEFAULT_LABEL = re.compile(r"LABEL_\d+")


@dataclass(frozen=True)
class LabelVocabulary:
    """Class names in id order, and where they came from (for messages and provenance)."""

    names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.names)}


def vocabulary_from_config(config: Any, *, real_only: bool = True) -> LabelVocabulary | None:
    """The class names of a config's `id2label`.

    `real_only`: None when they are only transformers' placeholders (LABEL_0, LABEL_1, ...), which
    say nothing about the classes; a loaded model still maps 'LABEL_1' to 1 with them.
    """
    id2label = getattr(config, "id2label", None) or {}
    try:
        names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        return None
    if not names or len(set(names)) != len(names):
        return None
    if all(DEFAULT_LABEL.fullmatch(name) for name in names):
        return None if real_only else LabelVocabulary(tuple(names), "transformers' placeholder names")
    return LabelVocabulary(tuple(names), "the model's config (id2label)")


def vocabulary_from_values(values: Sequence[Any], dataset: str) -> LabelVocabulary | None:
    """Sorted distinct string labels of a whole training dataset; None when its labels are class ids."""
    check_no_missing(values, dataset)
    strings = [value for value in values if isinstance(value, str)]
    if not strings:
        return None
    if len(strings) != len(values):
        raise DataError(f"dataset '{dataset}' mixes string labels with numbers in its label column")
    return LabelVocabulary(tuple(sorted(set(strings))), f"dataset '{dataset}' (all its labels, sorted)")


def check_no_missing(values: Sequence[Any], dataset: str) -> None:
    missing = sum(1 for value in values if value is None or (isinstance(value, float) and math.isnan(value)))
    if missing:
        raise DataError(f"dataset '{dataset}' has {missing} examples without a label (null or NaN)")


def label_ids(values: Sequence[Any], dataset: str, num_labels: int, vocabulary: LabelVocabulary | None) -> list[int]:
    """Class ids of a dataset's raw labels under the model's vocabulary (classification heads)."""
    check_no_missing(values, dataset)
    ids: list[int] = []
    known = vocabulary.label2id if vocabulary is not None else {}
    for value in values:
        if isinstance(value, str):
            if vocabulary is None:
                raise DataError(
                    f"dataset '{dataset}' has string labels, but the model has no label names",
                    hint="name the classes in the recipe (model.labels: [...]) or fine-tune it on this data first",
                )
            if value not in known:
                raise DataError(
                    f"dataset '{dataset}' has the label '{value}', which the model does not know",
                    hint=f"the model's labels are {', '.join(vocabulary.names)} (from {vocabulary.source})",
                )
            ids.append(known[value])
        elif isinstance(value, bool) or not isinstance(value, int):
            raise DataError(
                f"dataset '{dataset}' has a {type(value).__name__} label on a classification head "
                f"(num_labels={num_labels}); class labels are integers or names",
                hint="for regression set model.num_labels: 1",
            )
        elif not 0 <= value < num_labels:
            raise DataError(
                f"dataset '{dataset}' has the class id {value}, outside 0..{num_labels - 1} (num_labels={num_labels})"
            )
        else:
            ids.append(value)
    return ids


def regression_targets(values: Sequence[Any], dataset: str) -> list[float]:
    """Float targets of a regression head (num_labels == 1): numbers only, none missing."""
    check_no_missing(values, dataset)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DataError(
                f"dataset '{dataset}' has a non-numeric label ({type(value).__name__}) on a regression head (num_labels=1)"
            )
    return [float(value) for value in values]


def head_label_problem(
    values: Sequence[Any], num_labels: int, names: Sequence[str] | None = None
) -> tuple[int, str, str | None] | None:
    """(index, message, hint) of the first label the head would refuse, or None.

    The checks of `label_ids` (num_labels > 1) and `regression_targets` (num_labels == 1), for
    `workbench validate`: a missing label first (as check_no_missing), then the first value of the
    wrong kind. String labels are checked only against `names` given (else the vocabulary comes from
    data or checkpoint, known at run time). Messages quote no label but class ids.
    """
    for index, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return index, "an example without a label (null or NaN)", None
    check = _regression_problem if num_labels == 1 else _classification_problem
    for index, value in enumerate(values):
        problem = check(value, num_labels, names)
        if problem:
            return (index, *problem)
    return None


def _regression_problem(value: Any, num_labels: int, names: Sequence[str] | None) -> tuple[str, str | None] | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return (
            f"a non-numeric label ({type(value).__name__}) on a regression head (num_labels=1)",
            "regression targets are numbers; for classes set model.num_labels to their count",
        )
    return None


def _classification_problem(value: Any, num_labels: int, names: Sequence[str] | None) -> tuple[str, str | None] | None:
    if isinstance(value, str):
        if names is not None and value not in names:
            return f"a label the model does not know (its labels are {', '.join(names)})", None
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return (
            f"a {type(value).__name__} label on a classification head (num_labels={num_labels}); "
            "class labels are integers or names",
            "for regression set model.num_labels: 1",
        )
    if not 0 <= value < num_labels:
        return f"class id {value}, outside 0..{num_labels - 1} (num_labels={num_labels})", None
    return None
