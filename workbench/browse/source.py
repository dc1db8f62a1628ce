"""The browser's view of a store: the same read API the CLI uses (`list_runs`, `get_run`,
`mark_dead_runs`), plus a cheap "has anything changed?" check so polling every second costs
nothing while the store is idle.

Polling happens in a worker thread (workbench/browse/app.py): every method here is safe to call
from one, since the Store opens a connection (and a transaction) per call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.db.records import RunDetail, RunSummary
from workbench.errors import StoreError
from workbench.store_location import StoreLocation

if TYPE_CHECKING:
    from workbench.db.store import Store
    from workbench.maintenance import RemoveReport

MAX_RUNS = 2000  # the newest runs listed; a store with more says so under the list
DEAD_CHECK_S = 5.0  # while a run is 'running', how often to ask whether its process is gone


@dataclass
class Poll:
    """What one poll found: the runs (None: unchanged since the last poll), the details asked for."""

    runs: list[RunSummary] | None
    details: dict[int, RunDetail | None] = field(default_factory=dict)  # None: the run is gone
    error: str | None = None
    seconds: float = 0.0


class StoreSource:
    def __init__(self, location: StoreLocation, store: "Store | None" = None):
        """`store`: an open Store (tests); by default `location.open(create=False)`, which never creates one."""
        self.location = location
        self.store = store if store is not None else location.open(create=False)
        self.cache_dir: Path = location.cache_dir
        self._stamp: tuple | None = None
        self._last_dead_check = 0.0
        self.runs: list[RunSummary] = []
        self.truncated = False

    @property
    def description(self) -> str:
        return self.location.describe()

    def close(self) -> None:
        self.store.close()

    # ---- reading ------------------------------------------------------------------------------

    def load_runs(self) -> list[RunSummary]:
        """The newest runs. The file's stamp is taken first: a commit during the query is seen next poll."""
        self._stamp = self._file_stamp()
        listed = self.store.list_runs(MAX_RUNS + 1)
        self.truncated = len(listed) > MAX_RUNS
        self.runs = listed[:MAX_RUNS]
        return self.runs

    def run(self, run_id: int) -> RunDetail:
        return self.store.get_run(run_id)

    def mark_dead(self) -> list[int]:
        self._last_dead_check = time.monotonic()
        return self.store.mark_dead_runs()

    def remove(self, run_ids: Iterable[int]) -> "RemoveReport":
        """`workbench rm`: runs and their rows go (a run still running is kept); cache entries stay."""
        from workbench.maintenance import remove_runs

        report = remove_runs(self.store, run_ids)
        self._stamp = None
        return report

    def _detail(self, run_id: int) -> RunDetail | None:
        try:
            return self.run(run_id)
        except StoreError as error:
            if "no run with id" in str(error):  # removed meanwhile (`workbench rm` elsewhere)
                return None
            raise

    # ---- polling ------------------------------------------------------------------------------

    def _file_stamp(self) -> tuple | None:
        """(size, mtime) of the SQLite file and its WAL: a commit always changes one of them.
        None for PostgreSQL, which is always asked."""
        path = getattr(self.store, "database_path", None)
        if path is None:
            return None
        stamp = []
        for candidate in (Path(path), Path(f"{path}-wal")):
            try:
                status = candidate.stat()
                stamp.append((status.st_size, status.st_mtime_ns, status.st_ino))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def poll(self, watched: Mapping[int, RunSummary | None]) -> Poll:
        """Runs and details that may have changed: the run list when the database changed, and
        `get_run` for each watched run whose summary changed or that is still running."""
        started = time.monotonic()
        try:
            running = any(run.status == "running" for run in self.runs)
            if running and started - self._last_dead_check >= DEAD_CHECK_S:
                self.mark_dead()  # a killed process never writes again: ask, now and then
            stamp = self._file_stamp()
            changed = stamp is None or stamp != self._stamp
            runs = self.load_runs() if changed else None
            current = {run.id: run for run in self.runs}
            details: dict[int, RunDetail | None] = {}
            for run_id, known in watched.items():
                now = current.get(run_id)
                if now is None:  # removed, or older than the newest MAX_RUNS
                    if not self.truncated:
                        details[run_id] = None
                    elif changed:
                        details[run_id] = self._detail(run_id)
                elif now != known or (changed and now.status == "running"):  # a step may have moved on
                    details[run_id] = self._detail(run_id)
            return Poll(runs, details, seconds=time.monotonic() - started)
        except StoreError as error:
            return Poll(None, error=str(error), seconds=time.monotonic() - started)
