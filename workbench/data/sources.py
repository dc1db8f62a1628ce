"""Where a recipe's datasets come from, how they are checked, fingerprinted and loaded.

`path:` is anything `datasets.load_dataset` takes (a hub name or a packaged builder such as csv,
json, parquet), plus four sources of our own:

    tsv           csv with a tab delimiter and quoting off (GLUE's TSVs contain bare quotes)
    conllu        a CoNLL-U treebank (`data_files`)
    python_code   Python functions from JSONL rows (`data_files`) or a folder of .py files (`data_dir`)
    agreement     generated subject-verb agreement sentences (options: size, seed, attractor_rate)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import DataError, did_you_mean
from workbench.hashing import file_sha256, value_sha256
from workbench.recipe.schema import DatasetSpec

OWN_SOURCES = ("tsv", "conllu", "python_code", "agreement")
PACKAGED_BUILDERS = ("csv", "json", "parquet", "text", "arrow")
AGREEMENT_OPTIONS = {"size": 2000, "seed": 0, "attractor_rate": 0.7}
PYTHON_CODE_OPTIONS = {
    "code_field": "code",
    "name_field": "func_name",
    "partition": None,
}  # the tree's extra edges (CAT's upgraded tree) are cat_probe's choice: `upgraded_tree`


@dataclass
class LoadedDataset:
    """A dataset in memory. `kind` says which of the fields is filled."""

    name: str
    spec: DatasetSpec
    kind: str  # "text" | "treebank" | "code"
    fingerprint: str
    columns: dict[str, list[Any]] = field(default_factory=dict)  # kind == "text"; labels raw (data/labels.py)
    class_names: list[str] | None = None  # names of integer class ids the dataset declares (a ClassLabel)
    sentences: list[Any] = field(default_factory=list)  # kind == "treebank": DependencySentence
    examples: list[Any] = field(default_factory=list)  # kind == "code": CodeExample

    def __len__(self) -> int:
        if self.kind == "treebank":
            return len(self.sentences)
        if self.kind == "code":
            return len(self.examples)
        return len(next(iter(self.columns.values()), []))

    def texts(self) -> list[tuple[str, ...]]:
        """One tuple of 1 or 2 strings per example (sentence pairs give 2)."""
        columns = [self.columns[name] for name in self.spec.text_columns]
        return list(zip(*columns))

    def labels(self) -> list[Any] | None:
        """The label column as read: strings, class ids or floats; mapped to ids by the model (data/labels.py)."""
        return self.columns.get(self.spec.label) if self.spec.label else None


def data_paths(spec: DatasetSpec, base_dir: Path) -> list[Path]:
    """Local files the dataset reads, resolved against the recipe folder (empty for hub datasets)."""
    return [_resolve(base_dir, item) for item in _listed_files(spec)]


def check_dataset_spec(spec: DatasetSpec, base_dir: Path) -> list[tuple[str, str]]:
    """Problems as (field, message), found without loading anything."""
    problems: list[tuple[str, str]] = []
    options = spec.builder_options
    if spec.path == "agreement":
        problems += _unknown_options(options, AGREEMENT_OPTIONS)
        size = options.get("size", AGREEMENT_OPTIONS["size"])
        if not isinstance(size, int) or size < 2:
            problems.append(("size", f"expected an integer of at least 2, got {size!r}"))
        rate = options.get("attractor_rate", AGREEMENT_OPTIONS["attractor_rate"])
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            problems.append(("attractor_rate", f"expected a number between 0 and 1, got {rate!r}"))
    elif spec.path == "conllu":
        problems += _unknown_options(options, {})
        if spec.data_files is None:
            problems.append(("data_files", "a conllu dataset needs data_files"))
    elif spec.path == "python_code":
        problems += _unknown_options(options, PYTHON_CODE_OPTIONS)
        if spec.data_files is None and spec.data_dir is None:
            problems.append(("data_files", "a python_code dataset needs data_files (JSONL) or data_dir (.py files)"))
    elif spec.path in PACKAGED_BUILDERS or spec.path == "tsv":
        problems += _unknown_options(options, _builder_fields("csv" if spec.path == "tsv" else spec.path))
        if spec.data_files is None and spec.data_dir is None:
            problems.append(("data_files", f"the {spec.path} builder needs data_files"))
    if spec.path not in ("conllu", "python_code", "agreement") and not spec.text_columns:
        problems.append(("text", "name the text column (or two columns for sentence pairs)"))
    for item, path in zip(_listed_files(spec), data_paths(spec, base_dir)):
        if not path.exists():
            problems.append(("data_files", f"file not found: {item} (looked for {path})"))
    return problems


def dataset_fingerprint(spec: DatasetSpec, base_dir: Path) -> str:
    """Hash of the spec with every local path replaced by the content hash of what it names.

    Where files lie does not matter; what they contain, and which split each belongs to, does.
    """
    normalized = spec.model_dump(mode="json")
    normalized["data_files"] = _content_of(spec.data_files, base_dir)
    normalized["data_dir"] = _content_of(spec.data_dir, base_dir)
    if is_hub_dataset(spec, base_dir):
        from workbench.hub import resolve_commit

        normalized["revision"] = resolve_commit(spec.path, spec.revision, "dataset") or f"{spec.revision or 'main'} (unresolved)"
    return value_sha256(normalized)


def is_hub_dataset(spec: DatasetSpec, base_dir: Path) -> bool:
    """A dataset `path:` that names a hub repository (not a builder, one of ours, or a local folder)."""
    if spec.path in OWN_SOURCES or spec.path in PACKAGED_BUILDERS:
        return False
    return not _resolve(base_dir, spec.path).exists()


def _content_of(files: Any, base_dir: Path) -> Any:
    """The same structure as `data_files` / `data_dir`, each path replaced by a content hash."""
    if files is None:
        return None
    if isinstance(files, list):
        return [_content_of(item, base_dir) for item in files]
    if isinstance(files, dict):
        return {split: _content_of(value, base_dir) for split, value in files.items()}
    path = _resolve(base_dir, files)
    if path.is_dir():  # every file below, by its path relative to the folder
        return {str(f.relative_to(path)): file_sha256(f) for f in sorted(path.rglob("*")) if f.is_file()}
    if path.is_file():
        return file_sha256(path)
    return f"missing:{files}"  # a glob or a hub path: datasets resolves it; the text stands for it


def load_dataset_spec(name: str, spec: DatasetSpec, base_dir: Path) -> LoadedDataset:
    """Load a dataset into memory (applying `limit`)."""
    fingerprint = dataset_fingerprint(spec, base_dir)
    if spec.path == "conllu":
        from workbench.data.treebank import read_conllu

        sentences = [s for path in data_paths(spec, base_dir) for s in read_conllu(path, limit=spec.limit)]
        return LoadedDataset(name, spec, "treebank", fingerprint, sentences=sentences[: spec.limit])
    if spec.path == "python_code":
        return LoadedDataset(name, spec, "code", fingerprint, examples=_load_code(spec, base_dir))
    if spec.path == "agreement":
        from workbench.data.agreement import generate_agreement

        options = {**AGREEMENT_OPTIONS, **spec.builder_options}
        rows = generate_agreement(options["size"], options["seed"], options["attractor_rate"])
        columns = {f.name: [getattr(row, f.name) for row in rows] for f in dataclasses.fields(rows[0])}
        return _text_dataset(name, spec, fingerprint, columns)
    columns, class_names = _load_with_datasets(spec, base_dir)
    return _text_dataset(name, spec, fingerprint, columns, class_names)


def _text_dataset(
    name: str, spec: DatasetSpec, fingerprint: str, columns: dict[str, list[Any]], class_names: list[str] | None = None
) -> LoadedDataset:
    if spec.limit is not None:
        columns = {key: values[: spec.limit] for key, values in columns.items()}
    for column in spec.text_columns + ([spec.label] if spec.label else []):
        if column not in columns:
            raise DataError(
                f"dataset '{name}' has no column '{column}'", hint=f"its columns are: {', '.join(columns)}"
            )
    for column in spec.text_columns:
        columns[column] = ["" if value is None else str(value) for value in columns[column]]
    return LoadedDataset(name, spec, "text", fingerprint, columns=columns, class_names=class_names)


def _load_with_datasets(spec: DatasetSpec, base_dir: Path) -> tuple[dict[str, list[Any]], list[str] | None]:
    """The columns of the split (limited), and the class names of the label column if it is a ClassLabel."""
    import datasets

    datasets.disable_progress_bars()
    options = dict(spec.builder_options)
    path = spec.path
    if path == "tsv":
        path = "csv"
        options = {"delimiter": "\t", "quoting": 3, **options}
    elif path == "csv" and options.get("delimiter") == "\t":
        options.setdefault("quoting", 3)  # csv.QUOTE_NONE: tabs separate, quotes are text
    data_files = spec.data_files
    if data_files is not None:
        data_files = _resolve_files(data_files, base_dir)
    split = spec.split
    if spec.limit is not None and "[" not in split:
        split = f"{split}[:{spec.limit}]"
    try:
        loaded = datasets.load_dataset(
            path,
            spec.name,
            data_files=data_files,
            data_dir=str(_resolve(base_dir, spec.data_dir)) if spec.data_dir else None,
            revision=spec.revision,
            split=split,
            **options,
        )
    except Exception as error:  # datasets raises many types; all mean "could not load this"
        raise DataError(f"could not load dataset '{spec.path}' ({type(error).__name__}: {error})") from None
    feature = loaded.features.get(spec.label) if spec.label else None
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    return loaded.to_dict(), class_names


def _load_code(spec: DatasetSpec, base_dir: Path) -> list[Any]:
    from workbench.data.python_code import read_code_dir, read_code_jsonl

    options = {**PYTHON_CODE_OPTIONS, **spec.builder_options}
    if spec.data_dir:
        return read_code_dir(_resolve(base_dir, spec.data_dir), limit=spec.limit)
    examples: list[Any] = []
    for path in data_paths(spec, base_dir):
        examples += read_code_jsonl(
            path,
            code_field=options["code_field"],
            name_field=options["name_field"],
            partition=options["partition"],
            limit=spec.limit,
        )
    return examples[: spec.limit]


def _listed_files(spec: DatasetSpec) -> list[str]:
    files = spec.data_files
    if files is None:
        listed = []
    elif isinstance(files, str):
        listed = [files]
    elif isinstance(files, list):
        listed = list(files)
    else:
        listed = [item for value in files.values() for item in ([value] if isinstance(value, str) else value)]
    if spec.data_dir and spec.path in OWN_SOURCES:
        listed.append(spec.data_dir)
    return listed


def _resolve_files(files: Any, base_dir: Path) -> Any:
    if isinstance(files, str):
        return str(_resolve(base_dir, files))
    if isinstance(files, list):
        return [str(_resolve(base_dir, item)) for item in files]
    return {split: _resolve_files(value, base_dir) for split, value in files.items()}


def _resolve(base_dir: Path, item: str) -> Path:
    path = Path(item).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _unknown_options(options: dict[str, Any], known: dict[str, Any] | list[str]) -> list[tuple[str, str]]:
    problems = []
    for key in options:
        if key not in known:
            hint = did_you_mean(key, list(known) + list(DatasetSpec.model_fields))
            problems.append((key, f"unknown option '{key}'" + (f" ({hint})" if hint else "")))
    return problems


def _builder_fields(builder: str) -> list[str]:
    """The options a packaged datasets builder accepts (its config dataclass's fields)."""
    import importlib

    module = importlib.import_module(f"datasets.packaged_modules.{builder}.{builder}")
    config = next(
        value
        for value in vars(module).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__name__.endswith("Config")
    )
    return [f.name for f in dataclasses.fields(config)]
