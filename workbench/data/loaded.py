"""A recipe dataset in memory (LoadedDataset): what a dataset kind's `load` gives the steps.

It sits below the kinds (workbench/data/kinds/): a kind makes one with itself as its
`dataset_kind`, so a loaded dataset answers `supports(...)`, `items()` and `len()` by asking the
kind that read it, without looking the kind up in the registry. Nothing of the workbench is
imported here at run time.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.data.kinds.base import Capability, DatasetKind
    from workbench.recipe.schema import DatasetSpec


@dataclass
class LoadedDataset:
    """A dataset in memory. `kind` says which of the fields is filled; `dataset_kind` what it can do.

    Steps ask `supports(capability)` (workbench/data/kinds/base.py lists them) rather than compare `kind`.
    """

    name: str
    spec: DatasetSpec
    dataset_kind: DatasetKind  # the kind that read it (by its spec's `path:`; workbench/data/kinds/)
    fingerprint: str
    # kind == "text": name -> values; labels raw (data/labels.py). From datasets' builders an ArrowColumns
    # (data/columns.py): every column listed, each a Python list once read (the text columns are, at load).
    columns: MutableMapping[str, list[Any]] = field(default_factory=dict)
    class_names: list[str] | None = None  # names of integer class ids the dataset declares (a ClassLabel)
    sentences: list[Any] = field(default_factory=list)  # kind == "treebank": DependencySentence
    examples: list[Any] = field(default_factory=list)  # kind == "code": CodeExample
    # Tokenised texts, by (tokenizer fingerprint, max_length, token types): every step of a run that
    # reads this dataset with the same tokenizer shares one tokenisation (data/batching.py).
    encoded: dict[tuple[str, int, bool], Any] = field(default_factory=dict, repr=False)
    # Where tokenisations persist, as Arrow files shared by steps, runs and processes (the store's
    # cache/tokenised; set by the step context). None: tokenised in memory (data/batching.py).
    tokenised_dir: Path | None = None

    @property
    def kind(self) -> str:
        """The name of its kind (kinds/): "text" | "treebank" | "code"."""
        return self.dataset_kind.kind

    def supports(self, capability: Capability) -> bool:
        """Whether its examples have `capability` ("words", "dependency_trees", "labels", ...)."""
        return self.dataset_kind.supports(capability)

    def items(self) -> list[Any]:
        """The examples of a word kind: DependencySentence (treebank), CodeExample (code)."""
        return self.dataset_kind.items(self)

    def __len__(self) -> int:
        return self.dataset_kind.size(self)

    def texts(self) -> list[tuple[str, ...]]:
        """One tuple of 1 or 2 strings per example (sentence pairs give 2)."""
        columns = [self.columns[name] for name in self.spec.text_columns]
        return list(zip(*columns))

    def labels(self) -> list[Any] | None:
        """The label column as read: strings, class ids or floats; mapped to ids by the model (data/labels.py)."""
        return self.columns.get(self.spec.label) if self.spec.label else None
