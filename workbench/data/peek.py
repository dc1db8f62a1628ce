"""What `workbench validate` sees in a dataset's local files without loading them.

For csv, tsv and JSON Lines files it reads the header and the first PEEK_ROWS rows (those a step
will use: `limit` counts) with workbench/data/files.py, and reports, at the recipe field to fix:

    data_files   an empty file, a header without rows, bytes that are not UTF-8, a malformed row
    text         a text column that does not exist, an empty or missing text
    label        a label column that does not exist, labels the model's head refuses (labels.py)

Every message names the dataset and the file as the recipe writes it, and the line; none quotes
the data. Loading (workbench/data/text_loading.py) reads the whole file the same way, so what validate
misses beyond the first rows still stops the run, at its line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.data.files import FileLayout, FileProblem, FileScan, cell_value, column_values, is_missing_text, layout_for, scan
from workbench.data.labels import head_label_problem
from workbench.data.spec_files import NA_HINT, SCANNED_BUILDERS, file_problem_message, resolve_path, split_files
from workbench.errors import did_you_mean
from workbench.recipe.schema import DatasetSpec

PEEK_ROWS = 200
FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class LabelHead:
    """What the recipe model's head accepts as labels: num_labels 1 is regression; `names` the known classes."""

    num_labels: int
    names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ContentProblem:
    field: FieldPath  # below datasets.<name>: ("data_files", 0), ("text",), ("label",)
    message: str
    hint: str | None = None


def check_dataset_contents(name: str, spec: DatasetSpec, base_dir: Path, head: LabelHead | None) -> list[ContentProblem]:
    """Problems in the first rows of the dataset's local files; `head` None: labels are not checked."""
    if spec.path not in SCANNED_BUILDERS:
        return []
    problems: list[ContentProblem] = []
    in_split = set(split_files(spec))
    rows_left = min(spec.limit or PEEK_ROWS, PEEK_ROWS)  # the examples a step reads, as far as we look
    for field, item in file_fields(spec.data_files):
        path = resolve_path(base_dir, item)
        layout = layout_for(spec.path, spec.builder_options, path)
        if layout is None:
            continue
        try:
            found = scan(path, layout, max_rows=PEEK_ROWS)
        except FileProblem as problem:
            problems.append(ContentProblem(field, f"dataset '{name}': {file_problem_message(item, problem)}"))
            continue
        missing = _missing_columns(name, spec, item, found)
        problems += missing
        if item in in_split and not missing and rows_left > 0:
            used = _first_rows(found, rows_left)
            rows_left -= len(used.rows)
            problems += _text_problems(name, spec, item, used, layout)
            if head is not None and spec.label and layout.typed_by_builder:
                problems += _label_problems(name, spec, item, used, layout, head)
    return _first_per_field(problems)


def file_fields(files: Any, prefix: FieldPath = ("data_files",)) -> Iterator[tuple[FieldPath, str]]:
    """(recipe field path, file as written) of every file in `data_files`: a string, a list, or splits."""
    if isinstance(files, str):
        yield prefix, files
    elif isinstance(files, list):
        for index, item in enumerate(files):
            yield from file_fields(item, prefix + (index,))
    elif isinstance(files, dict):
        for split, value in files.items():
            yield from file_fields(value, prefix + (split,))


def _missing_columns(name: str, spec: DatasetSpec, item: str, found: FileScan) -> list[ContentProblem]:
    wanted: list[tuple[FieldPath, str]] = [
        (("text",) if isinstance(spec.text, str) else ("text", index), column)
        for index, column in enumerate(spec.text_columns)
    ]
    if spec.label:
        wanted.append((("label",), spec.label))
    return [
        ContentProblem(
            field,
            f"dataset '{name}': {item} has no column '{column}' (its columns: {', '.join(found.columns)})",
            did_you_mean(column, found.columns),
        )
        for field, column in wanted
        if column not in found.columns
    ]


def _first_rows(found: FileScan, count: int) -> FileScan:
    return FileScan(found.columns, found.row_lines[:count], found.rows[:count], found.complete)


def _text_problems(name: str, spec: DatasetSpec, item: str, found: FileScan, layout: FileLayout) -> list[ContentProblem]:
    problems = []
    for index, column in enumerate(spec.text_columns):
        field: FieldPath = ("text",) if isinstance(spec.text, str) else ("text", index)
        for line, row in zip(found.row_lines, found.rows):
            if is_missing_text(cell_value(row.get(column), layout)):
                message = f"dataset '{name}': {item}:{line}: empty or missing text in column '{column}'"
                problems.append(ContentProblem(field, message, "remove or fill the row; " + NA_HINT))
                break
    return problems


def _label_problems(
    name: str, spec: DatasetSpec, item: str, found: FileScan, layout: FileLayout, head: LabelHead
) -> list[ContentProblem]:
    values = column_values(found, str(spec.label), layout)
    problem = head_label_problem(values, head.num_labels, head.names)
    if problem is None:
        return []
    index, message, hint = problem
    return [ContentProblem(("label",), f"dataset '{name}': {item}:{found.row_lines[index]}: {message}", hint)]


def _first_per_field(problems: list[ContentProblem]) -> list[ContentProblem]:
    """One problem per recipe field: the first; fixing it may well fix the rest."""
    seen: dict[FieldPath, ContentProblem] = {}
    for problem in problems:
        seen.setdefault(problem.field, problem)
    return list(seen.values())
