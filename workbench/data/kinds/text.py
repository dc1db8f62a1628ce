"""Text datasets: `path: tsv`, and every path the workbench does not read itself.

That is anything `datasets.load_dataset` takes (a hub name, a packaged builder such as csv, json,
parquet, text, arrow) and a local dataset folder; `tsv` is csv with a tab delimiter and quoting
off (GLUE's TSVs contain bare quotes). Examples are the recipe's `text:` column(s), one or two
(sentence pairs: data/batching.py gives the pair token types), with an optional `label:` column.
Loading is workbench/data/text_loading.py's (`load_text`): local files are scanned first
(data/files.py), then the builder reads them into a memory-mapped Arrow table (data/columns.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from workbench.data.kinds.base import DatasetKind

if TYPE_CHECKING:
    from workbench.data.loaded import LoadedDataset
    from workbench.recipe.schema import DatasetSpec


class TextKind(DatasetKind):
    kind = "text"
    paths = ("tsv",)  # and, as the registry's fallback, every path no kind names
    capabilities = frozenset({"texts", "labels", "streaming"})
    description = "text"
    needs_text_column = True

    def check(self, spec: "DatasetSpec", base_dir: Path) -> list[tuple[str, str]]:
        from workbench.data.spec_files import PACKAGED_BUILDERS, builder_fields, unknown_options

        if spec.path not in PACKAGED_BUILDERS and spec.path != "tsv":
            return []  # a hub dataset or a local folder: datasets checks its own options
        problems = []
        if spec.builder_options:  # importing datasets to list a builder's fields costs ~1 s: only when there is something to check
            problems += unknown_options(spec.builder_options, builder_fields("csv" if spec.path == "tsv" else spec.path))
        if spec.data_files is None and spec.data_dir is None:
            problems.append(("data_files", f"the {spec.path} builder needs data_files"))
        return problems

    def load(self, name: str, spec: "DatasetSpec", base_dir: Path, fingerprint: str) -> "LoadedDataset":
        from workbench.data.text_loading import load_text

        return load_text(self, name, spec, base_dir, fingerprint)
