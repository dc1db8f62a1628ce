"""Python code: `path: python_code`, functions from JSONL rows (`data_files`) or a folder of .py files (`data_dir`).

workbench/data/python_code.py reads them. Each example is a CodeExample in
`LoadedDataset.examples`: its words are the syntax-tree leaves, each with its tokenize kind and
the AST node it hangs from; word features (extract), CAT-probing (cat_probe) and the leaf probes
read them. Options: `code_field`, `name_field`, `partition` (JSONL rows of one partition only).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data.kinds.base import DatasetKind

if TYPE_CHECKING:
    from workbench.data.loaded import LoadedDataset
    from workbench.recipe.schema import DatasetSpec

PYTHON_CODE_OPTIONS = {
    "code_field": "code",
    "name_field": "func_name",
    "partition": None,
}  # the tree's extra edges (CAT's upgraded tree) are cat_probe's choice: `upgraded_tree`


class CodeKind(DatasetKind):
    kind = "code"
    paths = ("python_code",)
    capabilities = frozenset({"words", "code_trees"})
    description = "code (path: python_code)"
    items_field = "examples"

    def check(self, spec: "DatasetSpec", base_dir: Path) -> list[tuple[str, str]]:
        from workbench.data.spec_files import unknown_options

        problems = unknown_options(spec.builder_options, PYTHON_CODE_OPTIONS)
        if spec.data_files is None and spec.data_dir is None:
            problems.append(("data_files", "a python_code dataset needs data_files (JSONL) or data_dir (.py files)"))
        return problems

    def load(self, name: str, spec: "DatasetSpec", base_dir: Path, fingerprint: str) -> "LoadedDataset":
        from workbench.data.loaded import LoadedDataset
        from workbench.data.python_code import read_code_dir, read_code_jsonl
        from workbench.data.spec_files import data_paths, listed_files, resolve_path

        options = {**PYTHON_CODE_OPTIONS, **spec.builder_options}
        if spec.data_dir:
            examples = _some_code(spec.data_dir, read_code_dir(resolve_path(base_dir, spec.data_dir), limit=spec.limit))
        else:
            examples = []
            for item, path in zip(listed_files(spec, self), data_paths(spec, base_dir, self)):
                read = read_code_jsonl(
                    path,
                    code_field=options["code_field"],
                    name_field=options["name_field"],
                    partition=options["partition"],
                    limit=spec.limit,
                )
                examples += _some_code(item, read)
            examples = examples[: spec.limit]
        return LoadedDataset(name, spec, self, fingerprint, examples=examples)

    def item_words(self, item: Any) -> Sequence[str]:
        return item.tokens


def _some_code(item: str, read: Any) -> list[Any]:
    """The examples a code reader produced; an error when it skipped every source it found."""
    from workbench.errors import DataError

    if not read and read.skipped:
        first = read.skipped[0]
        raise DataError(
            f"{item}: no source could be read; all {len(read.skipped)} were skipped "
            f"(the first, {first.location}: {first.reason})"
        )
    if not read:
        raise DataError(f"{item}: holds no code (an empty file?)")
    return list(read)
