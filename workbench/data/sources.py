"""Where a recipe's datasets come from, how they are checked, fingerprinted and loaded.

`path:` is anything `datasets.load_dataset` takes (a hub name or a packaged builder such as csv,
json, parquet), plus sources of our own, each read by a dataset kind (workbench/data/kinds/, one
module a kind; `kind_for(spec.path)` picks it):

    tsv           csv with a tab delimiter and quoting off (GLUE's TSVs contain bare quotes)  kinds/text.py
    conllu        a CoNLL-U treebank (`data_files`)                                         kinds/treebank.py
    python_code   Python functions from JSONL rows (`data_files`) or a folder of .py files  kinds/code.py
                  (`data_dir`)
    agreement     generated subject-verb agreement sentences (options: size, seed,          kinds/generated.py
                  attractor_rate)

This module sits above the kinds and dispatches to them: the spec checks that hold for any kind,
fingerprints, and `load_dataset_spec`. Below the kinds, and shared by them: the loaded dataset
(data/loaded.py), the spec's files and the builder option checks (data/spec_files.py), and the
datasets-builder loading of text datasets (data/text_loading.py, whose docstring says how local
files are checked, and why empty texts are an error). A kind's own options, files and reader are
its module's.

Paths resolve against the recipe's folder (data/spec_files.py says which): `data_files`, a
`data_dir` of a packaged builder (csv, json, ...) and a `path:` that names a local dataset folder.
A `data_dir` of a hub dataset or of a local dataset folder is a folder inside that dataset, as
`datasets` defines it.

`split:` takes datasets' slicing (`train[:2000]`, `train[10%:20%]`, `train+validation`; the schema
checks the syntax); `limit` then keeps the first N of what the split selects. A split stays the
memory-mapped Arrow table datasets made (data/columns.py): only the text columns (checked at load)
and the columns a step reads (the label) become Python lists. `streaming: true` streams a split too big to download and convert whole,
reading only its first `limit` examples (or an absolute slice, `train[1000:3000]`); a stream without
an end is refused when the recipe is checked, as the steps need a sized dataset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data.kinds import OWN_PATHS, kind_for
from workbench.data.spec_files import (
    data_dir_is_local,
    data_paths,
    is_hub_dataset,
    listed_files,
    local_dataset_folder,
    resolve_path,
    split_slice,
)
from workbench.errors import DataError
from workbench.hashing import file_sha256, value_sha256
from workbench.recipe.schema import DatasetSpec

if TYPE_CHECKING:
    from workbench.data.loaded import LoadedDataset

OWN_SOURCES = OWN_PATHS  # ("tsv", "conllu", "python_code", "agreement"): the paths a kind of ours reads


def check_dataset_spec(spec: DatasetSpec, base_dir: Path) -> list[tuple[str, str]]:
    """Problems as (field, message), found without loading anything."""
    kind = kind_for(spec.path)
    problems = kind.check(spec, base_dir)  # its own options and files
    if kind.needs_text_column and not spec.text_columns:
        problems.append(("text", "name the text column (or two columns for sentence pairs)"))
    for item, path in zip(listed_files(spec, kind), data_paths(spec, base_dir, kind)):
        if not path.exists():
            problems.append(("data_files", f"file not found: {item} (looked for {path})"))
    if spec.data_dir and data_dir_is_local(spec, kind) and not resolve_path(base_dir, spec.data_dir).is_dir():
        problems.append(("data_dir", f"folder not found: {spec.data_dir} (looked for {resolve_path(base_dir, spec.data_dir)})"))
    if _looks_local(spec.path) and not resolve_path(base_dir, spec.path).exists():
        problems.append(("path", f"folder not found: {spec.path} (looked for {resolve_path(base_dir, spec.path)})"))
    if spec.streaming:
        problems += _streaming_problems(spec)
    return problems


def _streaming_problems(spec: DatasetSpec) -> list[tuple[str, str]]:
    """What `streaming: true` cannot do: our own sources, several splits, slices counted from the end."""
    if not kind_for(spec.path).supports("streaming"):
        return [("streaming", f"a {spec.path} dataset is read whole from its files; streaming is for datasets.load_dataset sources")]
    parts = re.split(r"\s*\+\s*", spec.split.strip())
    if len(parts) > 1:
        return [("split", f"a stream reads one split, not {len(parts)} ('{spec.split}'); drop streaming to combine splits")]
    _, start, stop, percent = split_slice(spec.split)
    if percent:
        return [("split", f"'{spec.split}': a stream has no known length, so a slice in percent cannot be cut; give example numbers, e.g. train[:2000]")]
    if (start or 0) < 0 or (stop or 0) < 0:
        return [("split", f"'{spec.split}': a stream cannot count from its end; give example numbers from the start, e.g. train[1000:3000]")]
    if spec.limit is None and stop is None:
        return [
            (
                "streaming",
                "a stream has no length and the steps need one: set limit (read the first N examples, e.g. limit: 2000) "
                "or slice the split (split: train[:2000]); or drop streaming to load the whole split",
            )
        ]
    return []


def _looks_local(path: str) -> bool:
    """A `path:` that can only mean a folder on disk (a hub name has no leading ./, ../, / or ~)."""
    return path.startswith((".", "/", "~")) or path.count("/") > 1


def dataset_fingerprint(spec: DatasetSpec, base_dir: Path) -> str:
    """Hash of the spec with every local path replaced by the content hash of what it names.

    Where files lie does not matter; what they contain, and which split each belongs to, does.
    """
    kind = kind_for(spec.path)
    normalized = spec.model_dump(mode="json")
    if not normalized.get("streaming"):  # the default: fingerprints stay those of specs before the field
        normalized.pop("streaming", None)
    normalized["data_files"] = _content_of(spec.data_files, base_dir)
    if data_dir_is_local(spec, kind):
        normalized["data_dir"] = _content_of(spec.data_dir, base_dir)
    if local_dataset_folder(spec, base_dir, kind) is not None:  # its files are its content, wherever it lies
        normalized["path"] = _content_of(spec.path, base_dir)
    if is_hub_dataset(spec, base_dir, kind):
        from workbench.hub import resolve_commit

        normalized["revision"] = resolve_commit(spec.path, spec.revision, "dataset") or f"{spec.revision or 'main'} (unresolved)"
    return value_sha256(normalized)


def _content_of(files: Any, base_dir: Path) -> Any:
    """The same structure as `data_files` / `data_dir`, each path replaced by a content hash."""
    if files is None:
        return None
    if isinstance(files, list):
        return [_content_of(item, base_dir) for item in files]
    if isinstance(files, dict):
        return {split: _content_of(value, base_dir) for split, value in files.items()}
    path = resolve_path(base_dir, files)
    if path.is_dir():  # every file below, by its path relative to the folder
        return {str(f.relative_to(path)): file_sha256(f) for f in sorted(path.rglob("*")) if f.is_file()}
    if path.is_file():
        return file_sha256(path)
    return f"missing:{files}"  # a glob or a hub path: datasets resolves it; the text stands for it


def load_dataset_spec(name: str, spec: DatasetSpec, base_dir: Path) -> LoadedDataset:
    """Load a dataset into memory (applying `limit`).

    Every problem is a DataError that starts with `dataset '<name>'` and names the file.
    """
    fingerprint = dataset_fingerprint(spec, base_dir)
    kind = kind_for(spec.path)
    try:
        loaded = kind.load(name, spec, base_dir, fingerprint)
    except DataError as error:
        raise _about(name, error) from None
    if len(loaded) == 0:
        files = ", ".join(listed_files(spec, kind)) or spec.path
        raise DataError(f"dataset '{name}' has no examples ({files})")
    return loaded


def _about(name: str, error: DataError) -> DataError:
    """The error, its message starting with the dataset's name (readers name only their file)."""
    prefix = f"dataset '{name}'"
    if error.message.startswith(prefix):
        return error
    return DataError(f"{prefix}: {error.message}", hint=error.hint)
