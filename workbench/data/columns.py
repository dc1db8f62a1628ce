"""A loaded dataset's columns, left in Arrow until a step reads them.

`datasets.load_dataset` leaves a split as a memory-mapped Arrow table in its cache. Turning the
whole table into Python lists (`Dataset.to_dict()`) costs time and memory for every column, also
the ones no step reads (ids, metadata, long documents beside a short title). `ArrowColumns` is the
`LoadedDataset.columns` mapping over such a table: it lists every column, and converts one to a
Python list (with datasets' own formatting, exactly what `to_dict()` gives) only when it is read.
The text columns are read at load time (their values are checked), the label column when a step
asks for it (`LoadedDataset.labels()`); the rest stay Arrow unless something reads them.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any


class ArrowColumns(MutableMapping):
    """name -> list of values, each column converted from the Arrow table the first time it is read."""

    def __init__(self, table: Any):  # a datasets.Dataset
        self._table = table
        self._names = list(table.column_names)
        self._lists: dict[str, list[Any]] = {}
        self.num_rows = len(table)

    def first(self, count: int) -> "ArrowColumns":
        """The first `count` rows (an Arrow selection: nothing is copied or converted)."""
        if count >= self.num_rows:
            return self
        limited = ArrowColumns(self._table.select(range(count)))
        limited._names = list(self._names)
        limited._lists = {name: values[:count] for name, values in self._lists.items()}
        return limited

    def __getitem__(self, name: str) -> list[Any]:
        if name not in self._lists:
            if name not in self._names:
                raise KeyError(name)
            self._lists[name] = self._table.select_columns([name]).to_dict()[name]
        return self._lists[name]

    def __setitem__(self, name: str, values: list[Any]) -> None:
        if name not in self._names:
            self._names.append(name)
        self._lists[name] = values

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._names.remove(name)
        self._lists.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def converted(self) -> list[str]:
        """The columns that have been turned into Python lists so far."""
        return [name for name in self._names if name in self._lists]

    def __repr__(self) -> str:
        return f"ArrowColumns({self.num_rows} rows: {', '.join(self._names)}; as lists: {', '.join(self.converted()) or 'none'})"
