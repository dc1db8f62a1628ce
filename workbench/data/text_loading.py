"""Text datasets into memory: datasets' builders for the text kind (`load_text`), and the checks
every text dataset's columns pass (`text_dataset`, also the generated kind's).

The dataset kinds call these (workbench/data/kinds/text.py, kinds/generated.py), passing
themselves: the LoadedDataset made here is of that kind, and where a file list or a folder
depends on whether the workbench reads a `path:` itself, the kind says (data/spec_files.py).

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

A split stays the memory-mapped Arrow table datasets made (data/columns.py): only the text columns
(checked at load) and the columns a step reads (the label) become Python lists. `streaming: true`
reads only the split's first `limit` examples (or an absolute slice, `train[1000:3000]`);
sources.py has refused, when the recipe was checked, a stream without an end.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data.columns import ArrowColumns
from workbench.data.files import FLOAT, INTEGER, is_missing_text, layout_for
from workbench.data.loaded import LoadedDataset
from workbench.data.spec_files import (
    NA_HINT,
    SCANNED_BUILDERS,
    data_dir_is_local,
    is_hub_dataset,
    listed_files,
    local_dataset_folder,
    resolve_path,
    scan_file,
    split_files,
    split_slice,
)
from workbench.errors import DataError, did_you_mean
from workbench.recipe.schema import DatasetSpec

if TYPE_CHECKING:
    from workbench.data.kinds.base import DatasetKind


def load_text(kind: DatasetKind, name: str, spec: DatasetSpec, base_dir: Path, fingerprint: str) -> LoadedDataset:
    """A text dataset (the text kind's loader): local files scanned first; read by datasets.load_dataset,
    or straight from the scan where that gives exactly the same columns (`_columns_from_scan`)."""
    by_hand = _by_hand_file(spec, base_dir, kind)
    origins, whole = _scan_local_files(spec, base_dir, kind, keep=by_hand)
    columns = _columns_from_scan(whole) if whole is not None else None
    class_names = None
    if columns is None:
        columns, class_names = _load_with_datasets(name, spec, base_dir, kind)
    return text_dataset(kind, name, spec, fingerprint, columns, class_names, _sliced(origins, spec.split))


# Reading a local delimited file without `datasets` (issue 14: importing datasets and pandas and building
# the Arrow cache cost a fresh run about a second). Only where the columns are certainly what the csv
# builder makes of the file: one file of at most BY_HAND_BYTES, the split by name without slicing,
# no option beyond how cells split and which cells are nulls, and every column all integers (int64,
# no null) or strings (a null: None). Floats (pandas' parser may round the last digit differently),
# booleans, a null among integers, duplicate or empty column names: datasets reads the file.
BY_HAND_BYTES = 64 * 2**20
BY_HAND_OPTIONS = frozenset({"delimiter", "sep", "quoting", "quotechar", "encoding", "na_values", "keep_default_na", "na_filter"})
BOOLEAN_CELLS = frozenset({"True", "False", "TRUE", "FALSE", "true", "false"})
INT64 = (-(2**63), 2**63 - 1)
BUILDER_CHUNK = 10_000  # rows per pandas chunk in datasets' csv builder (CsvConfig.chunksize)


def _by_hand_file(spec: DatasetSpec, base_dir: Path, kind: DatasetKind) -> str | None:
    """The one local file (as the recipe names it) the split reads, if it may be read by hand; else None."""
    if spec.path not in ("tsv", "csv") or spec.streaming or spec.data_dir or spec.data_files is None:
        return None
    if "[" in spec.split or "+" in spec.split or set(spec.builder_options) - BY_HAND_OPTIONS:
        return None
    if not isinstance(spec.data_files, dict) and spec.split != "train":
        return None  # datasets names the split of undivided files "train"; another split is its error to report
    files = split_files(spec)
    if len(files) != 1:
        return None
    path = resolve_path(base_dir, files[0])
    layout = layout_for(spec.path, spec.builder_options, path)
    if layout is None or layout.kind != "delimited" or not layout.typed_by_builder or path.stat().st_size > BY_HAND_BYTES:
        return None
    return files[0]


def _columns_from_scan(found: Any) -> dict[str, list[Any]] | None:
    """The columns of a scanned file (`FileScan` with its cells) as the csv builder types them, or None."""
    names = found.columns
    if len(set(names)) != len(names) or any(not name.strip() for name in names):
        return None  # pandas renames them (a.1, Unnamed: 0)
    na = found.layout.na_strings
    columns: dict[str, list[Any]] = {}
    for position, name in enumerate(names):
        raw = [row[position] for row in found.cells]
        present = [cell for cell in raw if cell not in na]
        if present and all(INTEGER.fullmatch(cell) for cell in present):
            if len(present) < len(raw):
                return None  # a null makes pandas read the integers as floats
            values = [int(cell) for cell in raw]
            if not all(INT64[0] <= value <= INT64[1] for value in values):
                return None
            columns[name] = values
            continue
        # pandas types each chunk of BUILDER_CHUNK rows the csv builder reads on its own: every chunk
        # must hold a cell that is neither a number nor a boolean to be read as strings, like the whole
        for start in range(0, len(raw), BUILDER_CHUNK):
            chunk = [cell for cell in raw[start : start + BUILDER_CHUNK] if cell not in na]
            if all(_number_like(cell) or cell in BOOLEAN_CELLS for cell in chunk):
                return None  # floats, padded numbers, booleans, all nulls: the builder's own parsing decides
        columns[name] = [None if cell in na else cell for cell in raw]
    return columns


def _number_like(cell: str) -> bool:
    text = cell.strip()
    return bool(FLOAT.fullmatch(text) or INTEGER.fullmatch(text))


def _sliced(origins: list[str] | None, split: str) -> list[str] | None:
    """The 'file:line' of each example a sliced split selects (None where that cannot be told cheaply)."""
    if origins is None or "[" not in split:
        return origins
    if "+" in split:
        return None
    _, start, stop, percent = split_slice(split)
    return None if percent else origins[start:stop]


def text_dataset(
    kind: DatasetKind,
    name: str,
    spec: DatasetSpec,
    fingerprint: str,
    columns: MutableMapping[str, list[Any]],
    class_names: list[str] | None = None,
    origins: list[str] | None = None,
) -> LoadedDataset:
    """A LoadedDataset of `kind` (a text kind) of these columns: `limit` applied, the named columns checked, texts as str."""
    if spec.limit is not None and isinstance(columns, ArrowColumns):
        columns = columns.first(spec.limit)  # an Arrow selection; no column is converted for it
    elif spec.limit is not None:
        columns = {key: values[: spec.limit] for key, values in columns.items()}
    files = ", ".join(listed_files(spec, kind)) or spec.path
    for column in spec.text_columns + ([spec.label] if spec.label else []):
        if column not in columns:
            raise DataError(
                f"dataset '{name}' ({files}) has no column '{column}'",
                hint=f"its columns are: {', '.join(columns)}" + _suggestion(column, columns),
            )
    for column in spec.text_columns:
        _refuse_missing_texts(name, column, columns[column], origins, files)
        columns[column] = [str(value) for value in columns[column]]
    return LoadedDataset(name, spec, kind, fingerprint, columns=columns, class_names=class_names)


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


def _scan_local_files(spec: DatasetSpec, base_dir: Path, kind: DatasetKind, keep: str | None = None) -> tuple[list[str] | None, Any]:
    """Read every local csv/tsv/JSON Lines file once by hand (workbench/data/files.py); raise at the first problem.

    Returns 'file:line' of each example of the split in order (for messages), or None when some
    file of the split could not be scanned (a layout we do not model, a hub dataset, a data_dir);
    and the scan of file `keep` with every row's cells (its `layout` set), or None.
    """
    if spec.path not in SCANNED_BUILDERS or spec.data_files is None:
        return None, None
    kept = None
    origins: list[str] | None = []
    in_split = set(split_files(spec))
    for item in listed_files(spec, kind):
        path = resolve_path(base_dir, item)
        layout = layout_for(spec.path, spec.builder_options, path)
        if layout is None:
            origins = None if item in in_split else origins
            continue
        found = scan_file(item, path, layout, keep_cells=item == keep)
        if item == keep:
            found.layout, kept = layout, found
        if item in in_split and origins is not None:
            origins += [f"{item}:{line}" for line in found.row_lines]
    return origins, kept


def _load_with_datasets(
    name: str, spec: DatasetSpec, base_dir: Path, kind: DatasetKind
) -> tuple[MutableMapping[str, list[Any]], list[str] | None]:
    """The columns of the split (limited), and the class names of the label column if it is a ClassLabel.

    The split stays the memory-mapped Arrow table datasets made (an ArrowColumns: a column becomes a
    Python list when read); a stream (`streaming: true`) is read for its first `limit` examples only.
    """
    _refuse_unreachable_hub(name, spec, base_dir, kind)
    import datasets

    datasets.disable_progress_bars()
    options = dict(spec.builder_options)
    path = spec.path
    if path == "tsv":
        path = "csv"
        options = {"delimiter": "\t", "quoting": 3, **options}
    elif path == "csv" and options.get("delimiter") == "\t":
        options.setdefault("quoting", 3)  # csv.QUOTE_NONE: tabs separate, quotes are text
    folder = local_dataset_folder(spec, base_dir, kind)
    if folder is not None:
        path = str(folder)  # datasets would look for it in the current directory
    data_files = spec.data_files
    if data_files is not None:
        data_files = _resolve_files(data_files, base_dir)
    data_dir = spec.data_dir
    if data_dir and data_dir_is_local(spec, kind):
        data_dir = str(resolve_path(base_dir, data_dir))
    arguments = {"data_files": data_files, "data_dir": data_dir, "revision": spec.revision, **options}
    if spec.streaming:
        return _load_stream(name, spec, base_dir, kind, path, arguments)
    split = spec.split
    if spec.limit is not None and "[" not in split:
        split = f"{split}[:{spec.limit}]"
    try:
        with _quiet_datasets_logging():
            loaded = datasets.load_dataset(path, spec.name, split=split, **arguments)
    except Exception as error:  # datasets raises many types; all mean "could not load this"
        raise _load_failure(name, spec, base_dir, kind, error) from None
    return ArrowColumns(loaded), _class_names(loaded.features, spec)


def _class_names(features: Any, spec: DatasetSpec) -> list[str] | None:
    import datasets

    feature = features.get(spec.label) if spec.label and features is not None else None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _load_stream(
    name: str, spec: DatasetSpec, base_dir: Path, kind: DatasetKind, path: str, arguments: dict[str, Any]
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
        raise _load_failure(name, spec, base_dir, kind, error) from None
    return columns, _class_names(features, spec)


def _refuse_unreachable_hub(name: str, spec: DatasetSpec, base_dir: Path, kind: DatasetKind) -> None:
    """One attempt to reach the hub (workbench/hub.py) instead of half a minute of retries per file."""
    from workbench.hub import hub_unreachable, offline

    if not is_hub_dataset(spec, base_dir, kind) or offline():
        return
    reason = hub_unreachable()
    if reason:
        raise DataError(
            f"dataset '{name}': the Hugging Face hub cannot be reached ({reason}) to load '{spec.path}'",
            hint="download it once and set HF_HUB_OFFLINE=1 to read the local cache, or give local data_files",
        )


def _load_failure(name: str, spec: DatasetSpec, base_dir: Path, kind: DatasetKind, error: Exception) -> DataError:
    """A builder's exception as a DataError naming the dataset, its files and the exception's type.

    For local files the builder's message is left out: pandas and pyarrow quote rows in theirs.
    """
    kinds = type(error).__name__
    cause = error.__cause__ or error.__context__
    if cause is not None and type(cause) is not type(error):
        kinds += f" caused by {type(cause).__name__}"
    files = listed_files(spec, kind)
    if spec.data_dir:
        files.append(spec.data_dir)
    if files or local_dataset_folder(spec, base_dir, kind) is not None:
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


def _resolve_files(files: Any, base_dir: Path) -> Any:
    if isinstance(files, str):
        return str(resolve_path(base_dir, files))
    if isinstance(files, list):
        return [str(resolve_path(base_dir, item)) for item in files]
    return {split: _resolve_files(value, base_dir) for split, value in files.items()}
