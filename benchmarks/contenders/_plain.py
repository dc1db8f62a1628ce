"""What the plain contender scripts share: reading SST-2 rows, length-sorted batches, padding, timing.

Deliberately small and free of the workbench: a contender is what a user would write by hand
with transformers alone. Each script prints one JSON line (its own timings) as its last output.
"""

from __future__ import annotations

import json
import sys
import time

STARTED = time.perf_counter()  # this module is imported first: the script's imports are timed from here


def read_rows(path: str, limit: int | None) -> tuple[list[str], list[int]]:
    """The first `limit` rows (None: all) of a GLUE TSV (sentence<TAB>label, quotes are text)."""
    sentences, labels = [], []
    with open(path, encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            sentence, label = line.rstrip("\n").rsplit("\t", 1)
            sentences.append(sentence)
            labels.append(int(label))
            if len(sentences) == limit:
                break
    return sentences, labels


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length, longest first (ties in dataset order), cut into batches."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # sorted() is stable
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad(ids: list[list[int]], rows: list[int], pad_id: int, width: int | None = None):  # type: ignore[no-untyped-def]
    """(input_ids, attention_mask) of the chosen rows, right-padded to their longest (or to `width`)."""
    import torch

    width = width or max(len(ids[i]) for i in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, index in enumerate(rows):
        input_ids[row, : len(ids[index])] = torch.tensor(ids[index])
        mask[row, : len(ids[index])] = 1
    return input_ids, mask


class Clock:
    """Named phases after the imports; `report` prints them with import_s and step_s (= all phases)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.imported = time.perf_counter()
        self._last = self.imported

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self._last
        self._last = now

    def report(self, **extra: object) -> None:
        result = {
            "import_s": self.imported - STARTED,
            "step_s": self._last - self.imported,
            **{f"{name}_s": seconds for name, seconds in self.phases.items()},
            **extra,
        }
        print(json.dumps(result), flush=True)
        sys.stdout.flush()
