"""Treebanks: `path: conllu`, a CoNLL-U file per `data_files` entry (workbench/data/treebank.py reads them).

Each example is a DependencySentence (its syntactic words, heads, relations, UPOS and XPOS) in
`LoadedDataset.sentences`: word features (extract), attention vs syntax (syntax_heads) and the
POS, relation and arc probes read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data.kinds.base import DatasetKind

if TYPE_CHECKING:
    from workbench.data.loaded import LoadedDataset
    from workbench.recipe.schema import DatasetSpec


class TreebankKind(DatasetKind):
    kind = "treebank"
    paths = ("conllu",)
    capabilities = frozenset({"words", "dependency_trees"})
    description = "treebank (path: conllu)"
    items_field = "sentences"

    def check(self, spec: "DatasetSpec", base_dir: Path) -> list[tuple[str, str]]:
        from workbench.data.spec_files import unknown_options

        problems = unknown_options(spec.builder_options, {})
        if spec.data_files is None:
            problems.append(("data_files", "a conllu dataset needs data_files"))
        return problems

    def load(self, name: str, spec: "DatasetSpec", base_dir: Path, fingerprint: str) -> "LoadedDataset":
        from workbench.data.loaded import LoadedDataset
        from workbench.data.spec_files import data_paths, listed_files
        from workbench.data.treebank import read_conllu
        from workbench.errors import DataError

        sentences: list[Any] = []
        for item, path in zip(listed_files(spec, self), data_paths(spec, base_dir, self)):
            read = read_conllu(path, limit=spec.limit)
            if not read:
                raise DataError(f"{item}: holds no sentence (an empty CoNLL-U file, or comments only)")
            sentences += read
        return LoadedDataset(name, spec, self, fingerprint, sentences=sentences[: spec.limit])

    def item_words(self, item: Any) -> Sequence[str]:
        return item.words
