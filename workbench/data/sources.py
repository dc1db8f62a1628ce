"""Where a recipe's datasets come from, how they are checked, fingerprinted and loaded.

`path:` is anything `datasets.load_dataset` takes (a hub name or a packaged builder such as csv,
json, parquet), plus four sources of our own:

    tsv           csv with a tab delimiter and quoting off (GLUE's TSVs contain bare quotes)
    conllu        a CoNLL-U treebank (`data_files`)
    python_code   Python functions from JSONL rows (`data_files`) or a folder of .py files (`data_dir`)
    agreement     generated subject-verb agreement sentences (options: size, seed, attractor_rate)

Every local file is hostile until checked. Before a builder reads a csv, tsv or JSON Lines file,
workbench/data/files.py reads it once by hand, so that an empty file, a header without rows, a row
with the wrong number of fields, an invalid JSON line or bytes that are not UTF-8 are reported as
`dataset 'dev': data/dev.tsv:17: ...`, naming the line but never quoting it. Whatever the builder
still raises becomes a DataError that names the dataset, the files and the exception's type only:
pandas' and pyarrow's messages may quote rows.

Empty texts are an error, not skipped: a null, NaN or whitespace-only text (pandas also reads cells
such as NA, null or None as nulls) in the examples a step uses stops the run with the count and the
first one's line. Skipping would change the examples, and with them every metric, without anyone
deciding to; fixing the file (or `keep_default_na: false`) is one edit.

Paths resolve against the recipe's folder: `data_files`, a `data_dir` of a packaged builder
(csv, json, ...) and a `path:` that names a local dataset folder. A `data_dir` of a hub dataset or of
a local dataset folder is a folder inside that dataset, as `datasets` defines it.

`split:` takes datasets' slicing (`train[:2000]`, `train[10%:20%]`, `train+validation`; the schema
checks the syntax); `limit` then keeps the first N of what the split selects. A split stays the
memory-mapped Arrow table datasets made (data/columns.py): only the text columns (checked at load)
and the columns a step reads (the label) become Python lists. `streaming: true` streams a split too big to download and convert whole,
reading only its first `limit` examples (or an absolute slice, `train[1000:3000]`); a stream without
an end is refused when the recipe is checked, as the steps need a sized dataset.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.columns import ArrowColumns
from workbench.data.files import FileLayout, FileProblem, is_missing_text, layout_for, scan
from workbench.errors import DataError, did_you_mean
from workbench.hashing import file_sha256, value_sha256
from workbench.recipe.schema import DatasetSpec

OWN_SOURCES = ("tsv", "conllu", "python_code", "agreement")
PACKAGED_BUILDERS = ("csv", "json", "parquet", "text", "arrow")
SCANNED_BUILDERS = ("tsv", "csv", "json")  # whose local files workbench/data/files.py reads first
NA_HINT = (
    "csv/tsv cells that read NA, N/A, null, None or nan are missing values to pandas "
    "(keep_default_na: false keeps them as text)"
)
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

    def __len__(self) -> int:
        if self.kind == "treebank":
            return len(self.sentences)
        if self.kind == "code":
            return len(self.examples)
        rows = getattr(self.columns, "num_rows", None)  # ArrowColumns: without converting a column
        return rows if rows is not None else len(next(iter(self.columns.values()), []))

    def texts(self) -> list[tuple[str, ...]]:
        """One tuple of 1 or 2 strings per example (sentence pairs give 2)."""
        columns = [self.columns[name] for name in self.spec.text_columns]
        return list(zip(*columns))

    def labels(self) -> list[Any] | None:
        """The label column as read: strings, class ids or floats; mapped to ids by the model (data/labels.py)."""
        return self.columns.get(self.spec.label) if self.spec.label else None


def data_paths(spec: DatasetSpec, base_dir: Path) -> list[Path]:
    """Local files the dataset reads, resolved against the recipe folder (empty for hub datasets)."""
    return [resolve_path(base_dir, item) for item in _listed_files(spec)]


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
        if options:  # importing datasets to list a builder's fields costs ~1 s: only when there is something to check
            problems += _unknown_options(options, _builder_fields("csv" if spec.path == "tsv" else spec.path))
        if spec.data_files is None and spec.data_dir is None:
            problems.append(("data_files", f"the {spec.path} builder needs data_files"))
    if spec.path not in ("conllu", "python_code", "agreement") and not spec.text_columns:
        problems.append(("text", "name the text column (or two columns for sentence pairs)"))
    for item, path in zip(_listed_files(spec), data_paths(spec, base_dir)):
        if not path.exists():
            problems.append(("data_files", f"file not found: {item} (looked for {path})"))
    if spec.data_dir and _data_dir_is_local(spec) and not resolve_path(base_dir, spec.data_dir).is_dir():
        problems.append(("data_dir", f"folder not found: {spec.data_dir} (looked for {resolve_path(base_dir, spec.data_dir)})"))
    if _looks_local(spec.path) and not resolve_path(base_dir, spec.path).exists():
        problems.append(("path", f"folder not found: {spec.path} (looked for {resolve_path(base_dir, spec.path)})"))
    if spec.streaming:
        problems += _streaming_problems(spec)
    return problems


def _streaming_problems(spec: DatasetSpec) -> list[tuple[str, str]]:
    """What `streaming: true` cannot do: our own sources, several splits, slices counted from the end."""
    if spec.path in OWN_SOURCES and spec.path != "tsv":
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


def split_slice(split: str) -> tuple[str, int | None, int | None, bool]:
    """One split as (name, start, stop, in percent): 'train[10:20]' -> ('train', 10, 20, False)."""
    match = re.fullmatch(r"\s*(?P<name>[\w.]+)\s*(\[(?P<start>-?[\d_]+)?(?P<p1>%)?:(?P<stop>-?[\d_]+)?(?P<p2>%)?\])?.*", split)
    if match is None:
        return split, None, None, False
    start = int(match["start"].replace("_", "")) if match["start"] else None
    stop = int(match["stop"].replace("_", "")) if match["stop"] else None
    return match["name"], start, stop, bool(match["p1"] or match["p2"])


def _looks_local(path: str) -> bool:
    """A `path:` that can only mean a folder on disk (a hub name has no leading ./, ../, / or ~)."""
    return path.startswith((".", "/", "~")) or path.count("/") > 1


def _data_dir_is_local(spec: DatasetSpec) -> bool:
    """A packaged builder's data_dir is a folder on disk; a hub or local dataset's is a folder inside it."""
    return spec.path in PACKAGED_BUILDERS or spec.path in OWN_SOURCES


def dataset_fingerprint(spec: DatasetSpec, base_dir: Path) -> str:
    """Hash of the spec with every local path replaced by the content hash of what it names.

    Where files lie does not matter; what they contain, and which split each belongs to, does.
    """
    normalized = spec.model_dump(mode="json")
    if not normalized.get("streaming"):  # the default: fingerprints stay those of specs before the field
        normalized.pop("streaming", None)
    normalized["data_files"] = _content_of(spec.data_files, base_dir)
    if _data_dir_is_local(spec):
        normalized["data_dir"] = _content_of(spec.data_dir, base_dir)
    if local_dataset_folder(spec, base_dir) is not None:  # its files are its content, wherever it lies
        normalized["path"] = _content_of(spec.path, base_dir)
    if is_hub_dataset(spec, base_dir):
        from workbench.hub import resolve_commit

        normalized["revision"] = resolve_commit(spec.path, spec.revision, "dataset") or f"{spec.revision or 'main'} (unresolved)"
    return value_sha256(normalized)


def is_hub_dataset(spec: DatasetSpec, base_dir: Path) -> bool:
    """A dataset `path:` that names a hub repository (not a builder, one of ours, or a local folder)."""
    if spec.path in OWN_SOURCES or spec.path in PACKAGED_BUILDERS:
        return False
    return not resolve_path(base_dir, spec.path).exists()


def local_dataset_folder(spec: DatasetSpec, base_dir: Path) -> Path | None:
    """The folder a `path:` names on disk (resolved against the recipe's folder), or None."""
    if spec.path in OWN_SOURCES or spec.path in PACKAGED_BUILDERS:
        return None
    folder = resolve_path(base_dir, spec.path)
    return folder if folder.exists() else None


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
    try:
        loaded = _load(name, spec, base_dir, fingerprint)
    except DataError as error:
        raise _about(name, error) from None
    if len(loaded) == 0:
        files = ", ".join(_listed_files(spec)) or spec.path
        raise DataError(f"dataset '{name}' has no examples ({files})")
    return loaded


def _load(name: str, spec: DatasetSpec, base_dir: Path, fingerprint: str) -> LoadedDataset:
    if spec.path == "conllu":
        return LoadedDataset(name, spec, "treebank", fingerprint, sentences=_load_treebank(spec, base_dir))
    if spec.path == "python_code":
        return LoadedDataset(name, spec, "code", fingerprint, examples=_load_code(spec, base_dir))
    if spec.path == "agreement":
        from workbench.data.agreement import generate_agreement

        options = {**AGREEMENT_OPTIONS, **spec.builder_options}
        rows = generate_agreement(options["size"], options["seed"], options["attractor_rate"])
        columns = {f.name: [getattr(row, f.name) for row in rows] for f in dataclasses.fields(rows[0])}
        return _text_dataset(name, spec, fingerprint, columns)
    origins = _sliced(_scan_local_files(spec, base_dir), spec.split)
    columns, class_names = _load_with_datasets(name, spec, base_dir)
    return _text_dataset(name, spec, fingerprint, columns, class_names, origins)


def _sliced(origins: list[str] | None, split: str) -> list[str] | None:
    """The 'file:line' of each example a sliced split selects (None where that cannot be told cheaply)."""
    if origins is None or "[" not in split:
        return origins
    if "+" in split:
        return None
    _, start, stop, percent = split_slice(split)
    return None if percent else origins[start:stop]


def _about(name: str, error: DataError) -> DataError:
    """The error, its message starting with the dataset's name (readers name only their file)."""
    prefix = f"dataset '{name}'"
    if error.message.startswith(prefix):
        return error
    return DataError(f"{prefix}: {error.message}", hint=error.hint)


def _text_dataset(
    name: str,
    spec: DatasetSpec,
    fingerprint: str,
    columns: MutableMapping[str, list[Any]],
    class_names: list[str] | None = None,
    origins: list[str] | None = None,
) -> LoadedDataset:
    if spec.limit is not None and isinstance(columns, ArrowColumns):
        columns = columns.first(spec.limit)  # an Arrow selection; no column is converted for it
    elif spec.limit is not None:
        columns = {key: values[: spec.limit] for key, values in columns.items()}
    files = ", ".join(_listed_files(spec)) or spec.path
    for column in spec.text_columns + ([spec.label] if spec.label else []):
        if column not in columns:
            raise DataError(
                f"dataset '{name}' ({files}) has no column '{column}'",
                hint=f"its columns are: {', '.join(columns)}" + _suggestion(column, columns),
            )
    for column in spec.text_columns:
        _refuse_missing_texts(name, column, columns[column], origins, files)
        columns[column] = [str(value) for value in columns[column]]
    return LoadedDataset(name, spec, "text", fingerprint, columns=columns, class_names=class_names)


def _suggestion(column: str, columns: Any) -> str:
    hint = did_you_mean(column, columns)
    return f"; {hint}" if hint else ""


def _refuse_missing_texts(name: str, column: str, values: list[Any], origins: list[str] | None, files: str) -> None:
    """Empty texts are an error (the module docstring says why), counted and located, never quoted."""
    missing = [index for index, value in enumerate(values) if is_missing_text(value)]
    if not missing:
        return
    first = missing[0]
    where = origins[first] if origins is not None and len(origins) >= len(values) else f"example {first + 1} of {files}"
    raise DataError(
        f"dataset '{name}': {len(missing)} of {len(values)} examples have an empty or missing text in column "
        f"'{column}' (the first: {where})",
        hint="remove or fill those rows; " + NA_HINT,
    )


def _scan_local_files(spec: DatasetSpec, base_dir: Path) -> list[str] | None:
    """Read every local csv/tsv/JSON Lines file once by hand (workbench/data/files.py); raise at the first problem.

    Returns 'file:line' of each example of the split in order (for messages), or None when some
    file of the split could not be scanned (a layout we do not model, a hub dataset, a data_dir).
    """
    if spec.path not in SCANNED_BUILDERS or spec.data_files is None:
        return None
    origins: list[str] | None = []
    in_split = set(split_files(spec))
    for item in _listed_files(spec):
        path = resolve_path(base_dir, item)
        layout = layout_for(spec.path, spec.builder_options, path)
        if layout is None:
            origins = None if item in in_split else origins
            continue
        found = scan_file(item, path, layout)
        if item in in_split and origins is not None:
            origins += [f"{item}:{line}" for line in found.row_lines]
    return origins


def scan_file(item: str, path: Path, layout: FileLayout, max_rows: int | None = None) -> Any:
    """`files.scan`, its problem turned into a DataError at `item:line` (item: the file as the recipe names it)."""
    try:
        return scan(path, layout, max_rows=max_rows)
    except FileProblem as problem:
        raise DataError(file_problem_message(item, problem)) from None


def file_problem_message(item: str, problem: FileProblem) -> str:
    return f"{item}:{problem.line}: {problem.message}" if problem.line else f"{item}: {problem.message}"


def split_files(spec: DatasetSpec) -> list[str]:
    """The files (as the recipe names them) of the split the dataset reads: `split: validation` -> data_files.validation."""
    files = spec.data_files
    if files is None:
        return []
    if not isinstance(files, dict):
        return [files] if isinstance(files, str) else list(files)
    wanted = {part.split("[")[0].strip() for part in spec.split.split("+")}
    chosen = [value for split, value in files.items() if split in wanted]
    return [item for value in chosen for item in ([value] if isinstance(value, str) else value)]


def _load_with_datasets(name: str, spec: DatasetSpec, base_dir: Path) -> tuple[MutableMapping[str, list[Any]], list[str] | None]:
    """The columns of the split (limited), and the class names of the label column if it is a ClassLabel.

    The split stays the memory-mapped Arrow table datasets made (an ArrowColumns: a column becomes a
    Python list when read); a stream (`streaming: true`) is read for its first `limit` examples only.
    """
    _refuse_unreachable_hub(name, spec, base_dir)
    import datasets

    datasets.disable_progress_bars()
    options = dict(spec.builder_options)
    path = spec.path
    if path == "tsv":
        path = "csv"
        options = {"delimiter": "\t", "quoting": 3, **options}
    elif path == "csv" and options.get("delimiter") == "\t":
        options.setdefault("quoting", 3)  # csv.QUOTE_NONE: tabs separate, quotes are text
    folder = local_dataset_folder(spec, base_dir)
    if folder is not None:
        path = str(folder)  # datasets would look for it in the current directory
    data_files = spec.data_files
    if data_files is not None:
        data_files = _resolve_files(data_files, base_dir)
    data_dir = spec.data_dir
    if data_dir and _data_dir_is_local(spec):
        data_dir = str(resolve_path(base_dir, data_dir))
    arguments = {"data_files": data_files, "data_dir": data_dir, "revision": spec.revision, **options}
    if spec.streaming:
        return _load_stream(name, spec, base_dir, path, arguments)
    split = spec.split
    if spec.limit is not None and "[" not in split:
        split = f"{split}[:{spec.limit}]"
    try:
        with _quiet_datasets_logging():
            loaded = datasets.load_dataset(path, spec.name, split=split, **arguments)
    except Exception as error:  # datasets raises many types; all mean "could not load this"
        raise _load_failure(name, spec, base_dir, error) from None
    return ArrowColumns(loaded), _class_names(loaded.features, spec)


def _class_names(features: Any, spec: DatasetSpec) -> list[str] | None:
    import datasets

    feature = features.get(spec.label) if spec.label and features is not None else None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _load_stream(
    name: str, spec: DatasetSpec, base_dir: Path, path: str, arguments: dict[str, Any]
) -> tuple[dict[str, list[Any]], list[str] | None]:
    """The first examples of a streamed split: `limit` of them, from the slice's start (check_dataset_spec
    has refused streams without an end; without one here, the context asked for the whole split)."""
    import datasets

    split, start, stop, _ = split_slice(spec.split)
    count = None if stop is None else stop - (start or 0)
    if spec.limit is not None:
        count = spec.limit if count is None else min(count, spec.limit)
    columns: dict[str, list[Any]] = {}
    try:
        with _quiet_datasets_logging():
            stream = datasets.load_dataset(path, spec.name, split=split, streaming=True, **arguments)
            features = stream.features
            if features is not None:
                columns = {column: [] for column in features}
            if start:
                stream = stream.skip(start)
            if count is not None:
                stream = stream.take(count)
            for index, row in enumerate(stream):
                for column in row:
                    if column not in columns:  # a column the first rows did not have: None before it
                        columns[column] = [None] * index
                for column, values in columns.items():
                    values.append(row.get(column))
    except Exception as error:  # as for load_dataset: the builder's message may quote the data
        raise _load_failure(name, spec, base_dir, error) from None
    return columns, _class_names(features, spec)


def _refuse_unreachable_hub(name: str, spec: DatasetSpec, base_dir: Path) -> None:
    """One attempt to reach the hub (workbench/hub.py) instead of half a minute of retries per file."""
    from workbench.hub import hub_unreachable, offline

    if not is_hub_dataset(spec, base_dir) or offline():
        return
    reason = hub_unreachable()
    if reason:
        raise DataError(
            f"dataset '{name}': the Hugging Face hub cannot be reached ({reason}) to load '{spec.path}'",
            hint="download it once and set HF_HUB_OFFLINE=1 to read the local cache, or give local data_files",
        )


def _load_failure(name: str, spec: DatasetSpec, base_dir: Path, error: Exception) -> DataError:
    """A builder's exception as a DataError naming the dataset, its files and the exception's type.

    For local files the builder's message is left out: pandas and pyarrow quote rows in theirs.
    """
    kinds = type(error).__name__
    cause = error.__cause__ or error.__context__
    if cause is not None and type(cause) is not type(error):
        kinds += f" caused by {type(cause).__name__}"
    files = _listed_files(spec)
    if spec.data_dir:
        files.append(spec.data_dir)
    if files or local_dataset_folder(spec, base_dir) is not None:
        where = ", ".join(files) or spec.path
        return DataError(
            f"dataset '{name}': the {spec.path} builder could not read {where} ({kinds})",
            hint="its message is not shown, as it may quote the data; check the file's format and the builder "
            "options (delimiter, quoting, encoding, field, ...)",
        )
    from workbench.hub import redact

    return DataError(f"dataset '{name}': could not load '{spec.path}' ({kinds}: {redact(_first_line(error))})")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else ""


class _quiet_datasets_logging:
    """Silence datasets' own error logging while it loads: it prints the builder's message (with data) to stderr."""

    def __enter__(self) -> None:
        import logging

        self._logger = logging.getLogger("datasets")
        self._level = self._logger.level
        self._logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def _load_treebank(spec: DatasetSpec, base_dir: Path) -> list[Any]:
    from workbench.data.treebank import read_conllu

    sentences: list[Any] = []
    for item, path in zip(_listed_files(spec), data_paths(spec, base_dir)):
        read = read_conllu(path, limit=spec.limit)
        if not read:
            raise DataError(f"{item}: holds no sentence (an empty CoNLL-U file, or comments only)")
        sentences += read
    return sentences[: spec.limit]


def _load_code(spec: DatasetSpec, base_dir: Path) -> list[Any]:
    from workbench.data.python_code import read_code_dir, read_code_jsonl

    options = {**PYTHON_CODE_OPTIONS, **spec.builder_options}
    if spec.data_dir:
        return _some_code(spec.data_dir, read_code_dir(resolve_path(base_dir, spec.data_dir), limit=spec.limit))
    examples: list[Any] = []
    for item, path in zip(_listed_files(spec), data_paths(spec, base_dir)):
        read = read_code_jsonl(
            path,
            code_field=options["code_field"],
            name_field=options["name_field"],
            partition=options["partition"],
            limit=spec.limit,
        )
        examples += _some_code(item, read)
    return examples[: spec.limit]


def _some_code(item: str, read: Any) -> list[Any]:
    """The examples a code reader produced; an error when it skipped every source it found."""
    if not read and read.skipped:
        first = read.skipped[0]
        raise DataError(
            f"{item}: no source could be read; all {len(read.skipped)} were skipped "
            f"(the first, {first.location}: {first.reason})"
        )
    if not read:
        raise DataError(f"{item}: holds no code (an empty file?)")
    return list(read)


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
        return str(resolve_path(base_dir, files))
    if isinstance(files, list):
        return [str(resolve_path(base_dir, item)) for item in files]
    return {split: _resolve_files(value, base_dir) for split, value in files.items()}


def resolve_path(base_dir: Path, item: str) -> Path:
    """A path as the recipe writes it, resolved against the recipe's folder (absolute paths stay)."""
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
