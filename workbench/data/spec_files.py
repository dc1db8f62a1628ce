"""What a recipe dataset's spec names on disk, and the checks of its builder options, for any kind.

Shared by the kinds' checks and loaders (workbench/data/kinds/), the text loading
(data/text_loading.py), sources.py (checks, fingerprints), `workbench validate` (data/peek.py) and
the bundles' provenance. It sits below the kinds: where the answer depends on whether the
workbench reads a `path:` itself (tsv, conllu, python_code, agreement) rather than a datasets
builder, the caller passes the kind that reads it (`kind_for(spec.path)`, or the kind itself).

Paths resolve against the recipe's folder: `data_files`, a `data_dir` of a packaged builder
(csv, json, ...) or of a kind of ours, and a `path:` that names a local dataset folder. A
`data_dir` of a hub dataset or of a local dataset folder is a folder inside that dataset, as
`datasets` defines it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data.files import FileLayout, FileProblem, scan
from workbench.errors import DataError, did_you_mean
from workbench.recipe.schema import DatasetSpec

if TYPE_CHECKING:
    from workbench.data.kinds.base import DatasetKind

PACKAGED_BUILDERS = ("csv", "json", "parquet", "text", "arrow")
SCANNED_BUILDERS = ("tsv", "csv", "json")  # whose local files workbench/data/files.py reads first
NA_HINT = (
    "csv/tsv cells that read NA, N/A, null, None or nan are missing values to pandas "
    "(keep_default_na: false keeps them as text)"
)


def listed_files(spec: DatasetSpec, kind: DatasetKind) -> list[str]:
    """Every file the recipe names for the dataset, as it names them (and the data_dir our own kinds read).

    `kind`: the kind that reads the dataset; its data_dir is listed where the kind reads `spec.path` itself.
    """
    files = spec.data_files
    if files is None:
        listed = []
    elif isinstance(files, str):
        listed = [files]
    elif isinstance(files, list):
        listed = list(files)
    else:
        listed = [item for value in files.values() for item in ([value] if isinstance(value, str) else value)]
    if spec.data_dir and kind.reads_itself(spec.path):
        listed.append(spec.data_dir)
    return listed


def data_paths(spec: DatasetSpec, base_dir: Path, kind: DatasetKind) -> list[Path]:
    """Local files the dataset reads, resolved against the recipe folder (empty for hub datasets)."""
    return [resolve_path(base_dir, item) for item in listed_files(spec, kind)]


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


def split_slice(split: str) -> tuple[str, int | None, int | None, bool]:
    """One split as (name, start, stop, in percent): 'train[10:20]' -> ('train', 10, 20, False)."""
    match = re.fullmatch(r"\s*(?P<name>[\w.]+)\s*(\[(?P<start>-?[\d_]+)?(?P<p1>%)?:(?P<stop>-?[\d_]+)?(?P<p2>%)?\])?.*", split)
    if match is None:
        return split, None, None, False
    start = int(match["start"].replace("_", "")) if match["start"] else None
    stop = int(match["stop"].replace("_", "")) if match["stop"] else None
    return match["name"], start, stop, bool(match["p1"] or match["p2"])


def resolve_path(base_dir: Path, item: str) -> Path:
    """A path as the recipe writes it, resolved against the recipe's folder (absolute paths stay)."""
    path = Path(item).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def data_dir_is_local(spec: DatasetSpec, kind: DatasetKind) -> bool:
    """A packaged builder's data_dir is a folder on disk; a hub or local dataset's is a folder inside it."""
    return spec.path in PACKAGED_BUILDERS or kind.reads_itself(spec.path)


def is_hub_dataset(spec: DatasetSpec, base_dir: Path, kind: DatasetKind) -> bool:
    """A dataset `path:` that names a hub repository (not a builder, one of ours, or a local folder)."""
    if kind.reads_itself(spec.path) or spec.path in PACKAGED_BUILDERS:
        return False
    return not resolve_path(base_dir, spec.path).exists()


def local_dataset_folder(spec: DatasetSpec, base_dir: Path, kind: DatasetKind) -> Path | None:
    """The folder a `path:` names on disk (resolved against the recipe's folder), or None."""
    if kind.reads_itself(spec.path) or spec.path in PACKAGED_BUILDERS:
        return None
    folder = resolve_path(base_dir, spec.path)
    return folder if folder.exists() else None


def scan_file(item: str, path: Path, layout: FileLayout, max_rows: int | None = None, keep_cells: bool = False) -> Any:
    """`files.scan`, its problem turned into a DataError at `item:line` (item: the file as the recipe names it)."""
    try:
        return scan(path, layout, max_rows=max_rows, keep_cells=keep_cells)
    except FileProblem as problem:
        raise DataError(file_problem_message(item, problem)) from None


def file_problem_message(item: str, problem: FileProblem) -> str:
    return f"{item}:{problem.line}: {problem.message}" if problem.line else f"{item}: {problem.message}"


def unknown_options(options: dict[str, Any], known: dict[str, Any] | list[str]) -> list[tuple[str, str]]:
    """An 'unknown option' problem for each builder option not in `known` (with a did-you-mean)."""
    problems = []
    for key in options:
        if key not in known:
            hint = did_you_mean(key, list(known) + list(DatasetSpec.model_fields))
            problems.append((key, f"unknown option '{key}'" + (f" ({hint})" if hint else "")))
    return problems


def builder_fields(builder: str) -> list[str]:
    """The options a packaged datasets builder accepts (its config dataclass's fields)."""
    import importlib

    module = importlib.import_module(f"datasets.packaged_modules.{builder}.{builder}")
    config = next(
        value
        for value in vars(module).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__name__.endswith("Config")
    )
    return [f.name for f in dataclasses.fields(config)]
