"""Local data files read by hand before a builder sees them.

`datasets.load_dataset` reports a broken file with whatever pandas or pyarrow say, which names no
line, sometimes quotes the data, and for a short TSV row says nothing at all (pandas pads it with
nulls). So the workbench reads delimited files (csv, tsv) and JSON Lines itself first:

    scan(path, layout)              every row: the structure, for loading (a few hundred ms for SST-2's train)
    scan(path, layout, max_rows=N)  the header and first rows only, for `workbench validate`

Problems are FileProblem(line, message). Messages name lines, byte offsets and columns, never a
cell's content: data files are the user's data, and error messages end up in logs and in the store.

What counts as a problem: an empty file, a header without rows, bytes that are not in the file's
encoding, a row with more OR fewer fields than the header (pandas rejects more, but silently pads
fewer with nulls), a JSON line that is not a JSON object. A file whose reading options we do not
model (custom column names, skipped rows, comments, ...) gets `layout_for(...) is None` and is
left to the builder.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# pandas' default `na_values`: cells reading exactly like these become nulls (datasets' csv builder
# keeps pandas' defaults), so a sentence "NA" or "null" is a missing text, not a string.
PANDAS_NA = frozenset(
    "#N/A,#N/A N/A,#NA,-1.#IND,-1.#QNAN,-NaN,-nan,1.#IND,1.#QNAN,<NA>,N/A,NA,NULL,NaN,None,n/a,nan,null".split(",")
) | {""}
# csv builder options that change which lines are rows or how they split: the builder decides alone.
UNMODELLED_CSV_OPTIONS = frozenset(
    {"header", "names", "column_names", "index_col", "usecols", "prefix", "skiprows", "nrows", "comment",
     "lineterminator", "dialect", "skipfooter", "skip_blank_lines", "on_bad_lines", "error_bad_lines"}
)
TYPE_OPTIONS = frozenset({"features", "converters", "true_values", "false_values", "dtype"})
NA_OPTIONS = frozenset({"na_values", "keep_default_na", "na_filter"})
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".tar")
INTEGER = re.compile(r"[+-]?\d+")
FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity)", re.IGNORECASE)


class FileProblem(Exception):
    """What is wrong with a data file, and on which line (None: the file as a whole)."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class FileLayout:
    """How a builder will read a file: delimited text or JSON Lines, with the options that matter."""

    kind: str  # "delimited" | "jsonl"
    delimiter: str = ","
    quoting: bool = True  # False: csv.QUOTE_NONE, quotes are text (GLUE's TSVs)
    quotechar: str = '"'
    encoding: str = "utf-8"
    na_strings: frozenset[str] = PANDAS_NA  # cells the builder reads as nulls
    typed_by_builder: bool = True  # False when features/converters decide the column types


@dataclass
class FileScan:
    """What a scan found: the columns, and for each data row its line (and, in a peek, its cells)."""

    columns: list[str]
    row_lines: list[int] = field(default_factory=list)  # 1-based line where each data row starts
    rows: list[dict[str, Any]] = field(default_factory=list)  # only with max_rows: raw cells / JSON values
    complete: bool = True  # False when max_rows stopped the scan early
    cells: list[list[str]] = field(default_factory=list)  # only with keep_cells (delimited): every row's raw cells


def layout_for(builder: str, options: dict[str, Any], path: Path) -> FileLayout | None:
    """The layout of a local file for `builder` (tsv, csv, json) and its options; None if we do not model it."""
    if path.suffix.lower() in COMPRESSED or not path.is_file():
        return None
    encoding = options.get("encoding") or "utf-8"
    if options.get("encoding_errors") not in (None, "strict") or not _splits_on_newline_bytes(encoding):
        return None
    if builder in ("tsv", "csv"):
        return _delimited_layout(builder, options, encoding)
    if builder == "json" and not options.get("field") and _looks_like_json_lines(path, encoding):
        return FileLayout("jsonl", encoding=encoding, typed_by_builder=not options.get("features"))
    return None


def _delimited_layout(builder: str, options: dict[str, Any], encoding: str) -> FileLayout | None:
    if UNMODELLED_CSV_OPTIONS & options.keys():
        return None
    if builder == "tsv":
        delimiter, quoting = "\t", options.get("quoting", 3) != 3
    else:
        delimiter = options.get("delimiter") or options.get("sep") or ","
        quoting = options.get("quoting", 3 if delimiter == "\t" else 0) != 3  # text_loading.py: tabs mean quoting off
    if len(delimiter) != 1:
        return None  # a regex separator: pandas' python engine decides
    return FileLayout(
        "delimited",
        delimiter=delimiter,
        quoting=quoting,
        quotechar=options.get("quotechar") or '"',
        encoding=encoding,
        na_strings=_na_strings(options),
        typed_by_builder=not (TYPE_OPTIONS & options.keys()),
    )


def _na_strings(options: dict[str, Any]) -> frozenset[str]:
    if options.get("na_filter") is False:
        return frozenset()
    defaults = PANDAS_NA if options.get("keep_default_na", True) else frozenset({""})
    extra = options.get("na_values") or []
    extra = [extra] if isinstance(extra, str) else extra if isinstance(extra, list) else []
    return defaults | {str(value) for value in extra}


def _splits_on_newline_bytes(encoding: str) -> bool:
    """Lines are read as bytes up to b"\\n", which holds for UTF-8 and single-byte codecs, not UTF-16/32."""
    try:
        return "\n".encode(encoding) == b"\n"
    except LookupError:
        return True  # an unknown codec: the scan says so, naming the file


def _looks_like_json_lines(path: Path, encoding: str) -> bool:
    """Whether the file is JSON Lines: a .jsonl file, or one whose first non-blank line is a whole JSON object.

    Anything else (a JSON array, a pretty-printed document) the json builder reads whole; we leave it be.
    """
    if path.suffix.lower() == ".jsonl":
        return True
    with path.open("rb") as handle:
        for raw in handle:
            text = raw.decode(encoding, errors="ignore").strip().lstrip("\ufeff")
            if text:
                try:
                    return isinstance(json.loads(text), dict)
                except json.JSONDecodeError:
                    return False
    return True  # empty: the scan reports it


def scan(path: Path, layout: FileLayout, max_rows: int | None = None, keep_cells: bool = False) -> FileScan:
    """Read the file's rows (the first `max_rows` only, if given); raise FileProblem for the first problem.

    `keep_cells` (delimited files): keep every row's raw cells, for reading the file without a builder."""
    lines = decoded_lines(path, layout.encoding)
    if layout.kind == "jsonl":
        found = _scan_json_lines(lines, max_rows)
    else:
        found = _scan_delimited(lines, layout, max_rows, keep_cells)
    if not found.row_lines and found.complete:
        if layout.kind == "jsonl" or not found.columns:
            raise FileProblem(None, "the file is empty (no rows)")
        raise FileProblem(None, f"the file has a header ({', '.join(found.columns)}) but no rows")
    return found


def decoded_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every line, decoded one line at a time so an error has a line."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise FileProblem(None, f"unknown encoding '{encoding}'") from None
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise FileProblem(
                    number, f"not {encoding} text ({error.reason} at byte {offset + error.start} of the file)"
                ) from None
            if number == 1:
                text = text.lstrip("\ufeff")  # a UTF-8 byte order mark (GLUE's MRPC) is not part of the header
            offset += len(raw)
            yield number, text


def _scan_delimited(lines: Iterator[tuple[int, str]], layout: FileLayout, max_rows: int | None, keep_cells: bool = False) -> FileScan:
    found: FileScan | None = None
    for line, cells, last_line in _delimited_rows(lines, layout):
        if found is None:
            found = FileScan(columns=cells)
            continue
        if max_rows is not None and len(found.row_lines) >= max_rows:
            found.complete = False
            break
        if len(cells) != len(found.columns):
            raise FileProblem(line, _field_count_message(layout, len(cells), found.columns, line, last_line))
        found.row_lines.append(line)
        if max_rows is not None:
            found.rows.append(dict(zip(found.columns, cells)))
        if keep_cells:
            found.cells.append(cells)
    return found or FileScan(columns=[])


def _delimited_rows(lines: Iterator[tuple[int, str]], layout: FileLayout) -> Iterator[tuple[int, list[str], int]]:
    """(first line, cells, last line) of every non-blank row; quoted fields may span lines."""
    if not layout.quoting:
        for number, text in lines:
            text = text.rstrip("\r\n")
            if text:  # pandas skips blank lines
                yield number, text.split(layout.delimiter), number
        return
    numbers: list[int] = []

    def texts() -> Iterator[str]:
        for number, text in lines:
            numbers.append(number)
            yield text

    reader = csv.reader(texts(), delimiter=layout.delimiter, quotechar=layout.quotechar, strict=False)
    start = 1
    try:
        for cells in reader:
            last = numbers[-1] if numbers else start
            if cells:
                yield start, cells, last
            start = last + 1
    except csv.Error as error:  # e.g. a field larger than the csv module's limit; its messages quote nothing
        raise FileProblem(start, f"cannot split the row ({error})") from None


def _field_count_message(layout: FileLayout, found: int, columns: list[str], line: int, last_line: int) -> str:
    kind = "tab-separated" if layout.delimiter == "\t" else f"'{layout.delimiter}'-separated"
    message = f"{found} {kind} field{'s' if found != 1 else ''}, but the header has {len(columns)} ({', '.join(columns)})"
    if last_line > line:
        message += f"; the row runs on to line {last_line}: an unclosed quote?"
    return message


def _scan_json_lines(lines: Iterator[tuple[int, str]], max_rows: int | None) -> FileScan:
    found = FileScan(columns=[])
    seen: dict[str, None] = {}  # the columns in order of first appearance
    for number, text in lines:
        if not text.strip():
            continue
        if max_rows is not None and len(found.row_lines) >= max_rows:
            found.complete = False
            break
        row = _json_object(number, text)
        for key in row:
            seen.setdefault(key, None)
        found.row_lines.append(number)
        if max_rows is not None:
            found.rows.append(row)
    found.columns = list(seen)
    return found


def _json_object(number: int, text: str) -> dict[str, Any]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise FileProblem(number, f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise FileProblem(number, f"expected a JSON object per line, got a JSON {_json_kind(row)}")
    return row


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def cell_value(raw: Any, layout: FileLayout) -> Any:
    """A delimited cell as the builder will type it on its own (None for a null); JSON values as they are."""
    if layout.kind != "delimited" or raw is None:
        return raw
    if raw in layout.na_strings:
        return None
    if INTEGER.fullmatch(raw):
        return int(raw)
    if FLOAT.fullmatch(raw):
        return float(raw)
    return raw


def column_values(found: FileScan, column: str, layout: FileLayout) -> list[Any]:
    """A peeked column typed as pandas types a whole column: all ints, else all floats, else all strings."""
    values = [cell_value(row.get(column), layout) for row in found.rows]
    if layout.kind != "delimited":
        return values
    present = [value for value in values if value is not None]
    if any(isinstance(value, str) for value in present):  # one string makes the column strings
        raw = [row.get(column) for row in found.rows]
        return [None if value is None else str(text) for value, text in zip(values, raw)]
    if any(isinstance(value, float) for value in present) or len(present) < len(values):
        return [None if value is None else float(value) for value in values]  # a null turns ints into floats
    return values


def is_missing_text(value: Any) -> bool:
    """Null, NaN, or a string of whitespace only: nothing for a tokenizer to read."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and not value.strip()
