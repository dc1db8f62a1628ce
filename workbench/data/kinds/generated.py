"""Generated datasets: `path: agreement`, subject-verb agreement sentences (workbench/data/agreement.py).

A text dataset made by the workbench from its options (`size`, `seed`, `attractor_rate`) instead
of read from files: columns sentence, label (1 = the verb agrees), subject_index, verb_index, ...
Steps see a text dataset (`kind` "text"); it cannot stream, and the recipe need not name its
`text:` column (the steps that read texts do). Its `size` is bounded (`size_bounds`): the check
here refuses the lower bound, the recipe loader (workbench/recipe/loader.py) either bound at the
option's line; a million sentences take seconds to generate, more is a typo that would hang the run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.data.kinds.text import TextKind

if TYPE_CHECKING:
    from workbench.data.loaded import LoadedDataset
    from workbench.recipe.schema import DatasetSpec

AGREEMENT_OPTIONS = {"size": 2000, "seed": 0, "attractor_rate": 0.7}


class AgreementKind(TextKind):
    paths = ("agreement",)
    capabilities = frozenset({"texts", "labels"})
    needs_text_column = False
    generated = True
    size_bounds = (2, 1_000_000)

    def check(self, spec: "DatasetSpec", base_dir: Path) -> list[tuple[str, str]]:
        from workbench.data.spec_files import unknown_options

        options = spec.builder_options
        problems = unknown_options(options, AGREEMENT_OPTIONS)
        size = options.get("size", AGREEMENT_OPTIONS["size"])
        if not isinstance(size, int) or size < 2:  # the least of size_bounds; the loader checks both
            problems.append(("size", f"expected an integer of at least 2, got {size!r}"))
        rate = options.get("attractor_rate", AGREEMENT_OPTIONS["attractor_rate"])
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            problems.append(("attractor_rate", f"expected a number between 0 and 1, got {rate!r}"))
        return problems

    def load(self, name: str, spec: "DatasetSpec", base_dir: Path, fingerprint: str) -> "LoadedDataset":
        from workbench.data.agreement import generate_agreement
        from workbench.data.text_loading import text_dataset

        options = {**AGREEMENT_OPTIONS, **spec.builder_options}
        rows = generate_agreement(options["size"], options["seed"], options["attractor_rate"])
        columns = {f.name: [getattr(row, f.name) for row in rows] for f in dataclasses.fields(rows[0])}
        return text_dataset(self, name, spec, fingerprint, columns)
