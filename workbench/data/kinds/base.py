"""What every dataset kind is: the recipe `path:` names it reads, what its examples can do, how it loads.

A kind is a small class (one module of workbench/data/kinds/ each) with one instance in the
registry (`workbench.data.kinds.KINDS`). Steps never compare `spec.path` or `dataset.kind`
strings: they ask for a capability, at recipe-check time with `kind_for(spec.path).supports(...)`
and at run time with `dataset.supports(...)` or `ctx.dataset(name, needs=...)`.

This module imports nothing of the workbench at the top, so that step modules (which check recipes
before any model or dataset is loaded) can ask about kinds cheaply; a kind's `check` and `load`
import what they delegate to when called: the modules below the kinds (data/loaded.py,
data/spec_files.py, data/text_loading.py, the readers), never workbench/data/sources.py, which
dispatches to the kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

if TYPE_CHECKING:
    from workbench.data.loaded import LoadedDataset
    from workbench.recipe.schema import DatasetSpec

# What a loaded dataset can give a step. A kind declares the ones it has; steps ask for them.
Capability = Literal[
    "texts",  # examples are strings in the recipe's `text:` column(s), one or two (sentence pairs), for the tokenizer
    "labels",  # a `label:` column can be named (classification, regression, sentence-level probes)
    "words",  # examples are pre-split words (workbench/data/words.py): word features, word attention
    "dependency_trees",  # each example is a DependencySentence: heads, relations, UPOS/XPOS (syntax_heads, POS/arc probes)
    "code_trees",  # each example is a CodeExample: syntax-tree leaves, their kinds and parents (cat_probe, leaf probes)
    "streaming",  # `streaming: true` can read the split lazily (datasets.load_dataset sources only)
]
CAPABILITIES: frozenset[str] = frozenset(get_args(Capability))


class DatasetKind:
    """One kind of recipe dataset. A subclass sets the class attributes and implements `load`.

    kind          the name `LoadedDataset.kind` and messages use ("'dev' is a treebank dataset");
                  several classes may share one (a generated dataset is a text dataset)
    paths         the recipe `path:` names the workbench reads itself (sources.OWN_SOURCES is their
                  union); the text kind is also the fallback for every other path (hub names,
                  datasets builders, local dataset folders): `reads_itself(path)` tells them apart
    capabilities  what its loaded examples can do (`Capability` above)
    description   how messages name the kind ("treebank (path: conllu)")
    items_field   the LoadedDataset field that holds the examples of a word kind (None: columns)
    needs_text_column  whether a recipe must name the `text:` column(s)
    generated     whether the workbench makes the examples from the recipe's options (no files: the
                  options are the data; the bundles' provenance says so)
    size_bounds   a generated kind's (least, most) `size` option; the recipe loader refuses a size
                  outside them at its line (None: no `size` option)
    """

    kind: ClassVar[str]
    paths: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str]
    items_field: ClassVar[str | None] = None
    needs_text_column: ClassVar[bool] = False
    generated: ClassVar[bool] = False
    size_bounds: ClassVar[tuple[int, int] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.capabilities) - CAPABILITIES
        if unknown:
            raise TypeError(f"{cls.__name__} declares unknown capabilities {sorted(unknown)}; known: {sorted(CAPABILITIES)}")

    def supports(self, capability: Capability) -> bool:
        if capability not in CAPABILITIES:  # a typo would otherwise refuse every dataset
            raise ValueError(f"unknown dataset capability {capability!r}; known: {sorted(CAPABILITIES)}")
        return capability in self.capabilities

    def reads_itself(self, path: str) -> bool:
        """Whether the workbench reads this `path:` itself (one of `paths`), not a datasets builder."""
        return path in self.paths

    def check(self, spec: "DatasetSpec", base_dir: Path) -> list[tuple[str, str]]:
        """Problems of this kind's own options and files as (field, message), found without loading."""
        return []

    def load(self, name: str, spec: "DatasetSpec", base_dir: Path, fingerprint: str) -> "LoadedDataset":
        """The dataset in memory, `limit` applied; problems are DataErrors naming the file."""
        raise NotImplementedError

    def items(self, dataset: "LoadedDataset") -> list[Any]:
        """The examples of a word kind (DependencySentence, CodeExample, ...)."""
        if self.items_field is None:
            raise TypeError(f"a {self.kind} dataset holds columns, not items")
        return getattr(dataset, self.items_field)

    def item_words(self, item: Any) -> Sequence[str]:
        """The pre-split words of one example of a word kind."""
        raise TypeError(f"a {self.kind} dataset has no pre-split words")

    def size(self, dataset: "LoadedDataset") -> int:
        """How many examples the loaded dataset holds."""
        if self.items_field is not None:
            return len(self.items(dataset))
        rows = getattr(dataset.columns, "num_rows", None)  # ArrowColumns: without converting a column
        return rows if rows is not None else len(next(iter(dataset.columns.values()), []))

    def __repr__(self) -> str:
        return f"<dataset kind {self.kind} ({type(self).__name__}): path {', '.join(self.paths) or '*'}>"
