"""Keeping a store healthy: remove runs, collect the cache's garbage, verify everything.

Plain functions that return report dataclasses; the CLI (`workbench rm | gc | verify`) prints
`report.lines()` and picks the exit code (`report.ok` for verify). None of them imports torch.

    remove_runs(store, [3, 4])            runs and their steps, metrics, scores; cache entries stay
    garbage_collect(store_dir, dry_run)   cache entries no remaining run refers to, stale staging folders
    verify(store_dir)                     every cache entry re-hashed and read back; SQLite's integrity_check
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.cache import Cache, CorruptEntry, read_result
from workbench.db.health import cache_entry_count, check_rows, damaged_tables, recovery_hint
from workbench.db.store import Store, database_url
from workbench.db.urls import checked_url, mask_url, sqlite_path
from workbench.errors import StoreError

# ---- rm -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoveReport:
    removed: list[int]
    not_found: list[int]
    still_running: list[int]  # a live process is writing these; they were kept
    steps: int  # step rows removed with the runs

    def lines(self) -> list[str]:
        lines = []
        if self.removed:
            lines.append(f"removed {_plural(len(self.removed), 'run')} ({_ids(self.removed)}) with {_plural(self.steps, 'step')}")
        else:
            lines.append("removed no runs")
        if self.still_running:
            lines.append(f"kept {_ids(self.still_running)}: still running")
        if self.not_found:
            lines.append(f"no run with id {_ids(self.not_found)}")
        if self.removed:
            lines.append("their cache entries stay until `workbench gc` removes those no run uses")
        return lines


def remove_runs(store: Store, run_ids: Iterable[int]) -> RemoveReport:
    """Delete runs with their steps, metrics, scores and artifact rows (recipes no run uses go too).

    A run that is still running (its process is alive) is kept and reported. Cache entries are not
    touched: another run may use them, and `garbage_collect` removes the ones nobody does.
    """
    removed = store.delete_runs(run_ids)
    return RemoveReport(removed.removed, removed.not_found, removed.still_running, removed.steps)


# ---- gc -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GcReport:
    dry_run: bool
    entries: list[str]  # cache keys removed (or, in a dry run, that would be)
    bytes_freed: int  # cache entries, staging folders and stale locks together
    staging: list[Path]  # staging folders left by dead processes
    locks: list[Path]  # lock files of dead processes
    kept: int  # entries some run still refers to

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        lines = [
            f"{verb} {_plural(len(self.entries), 'cache entry', 'cache entries')} no run uses"
            f" and {_plural(len(self.staging), 'stale staging folder')}: {_size(self.bytes_freed)}"
            f"{' would be' if self.dry_run else ''} freed",
            f"kept {_plural(self.kept, 'entry', 'entries')} that runs use",
        ]
        if self.locks:
            lines.append(f"{verb} {_plural(len(self.locks), 'lock file')} of processes that are gone")
        return lines


def garbage_collect(
    store_dir: Path, dry_run: bool = False, *, store: Store | None = None, allow_no_runs: bool = False
) -> GcReport:
    """Remove the cache entries that no run in the store refers to, and leftovers of dead processes.

    The store is opened read-only (`store` may be passed instead): a store whose database is
    missing or damaged raises StoreError, so a lost database never empties the cache. So does a
    database without a single run beside a cache with entries (WORKBENCH_DB naming another
    database, most likely) unless `allow_no_runs`. Entries are listed before the runs are read, so
    an entry a run starts using meanwhile is kept.
    """
    cache = Cache(Path(store_dir) / "cache")
    folders = cache.entry_folders()  # first: see the docstring
    opened = store or Store.open(Path(store_dir), create=False)
    try:
        in_use = opened.cache_keys_in_use()
        if not in_use and folders and not allow_no_runs:
            raise StoreError(
                f"the store's database ({opened.display_url}) has no runs: gc would remove all "
                f"{_plural(len(folders), 'cache entry', 'cache entries')} of {cache.root}",
                hint="check --store and WORKBENCH_DB; to empty the cache on purpose, delete the cache folder",
            )
    finally:
        if store is None:
            opened.close()
    removed, freed = [], 0
    for folder in folders:
        key = folder.parent.name + folder.name
        if key in in_use or cache.lock_path(key).exists():
            continue
        freed += _folder_bytes(folder)
        removed.append(key)
        if not dry_run:
            cache.discard_folder(folder, key)
    staging, locks = cache.stale_staging(), cache.stale_locks()
    freed += sum(_folder_bytes(folder) for folder in staging)
    if not dry_run:
        import shutil

        for folder in staging:
            shutil.rmtree(folder, ignore_errors=True)
        for lock in locks:
            lock.unlink(missing_ok=True)
        for prefix in cache.root.glob("??"):
            if prefix.is_dir() and not any(prefix.iterdir()):
                prefix.rmdir()
    return GcReport(dry_run, removed, freed, staging, locks, kept=len(folders) - len(removed))


# ---- verify ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DamagedEntry:
    key: str
    problem: str
    discarded: bool  # removed, so the step is recomputed the next time a recipe needs it


@dataclass(frozen=True)
class DatabaseCheck:
    database: str  # the masked URL
    checked: bool  # False where the workbench cannot check (PostgreSQL checks itself)
    problems: list[str] = field(default_factory=list)  # empty: healthy
    hint: str | None = None  # how to recover, when there are problems
    schema_revision: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class VerifyReport:
    entries_checked: int
    bytes_checked: int
    damaged: list[DamagedEntry]
    database: DatabaseCheck
    missing_entries: int | None  # keys runs refer to that are not in the cache (None: database unreadable)

    @property
    def ok(self) -> bool:
        return not self.damaged and self.database.ok

    def lines(self) -> list[str]:
        lines = [f"cache: {_plural(self.entries_checked, 'entry', 'entries')} re-hashed ({_size(self.bytes_checked)})"]
        if not self.damaged:
            lines.append("  all match their manifests and load")
        for entry in self.damaged:
            action = "discarded; recomputed when a recipe needs it" if entry.discarded else "left in place"
            lines.append(f"  damaged {entry.key[:12]}: {entry.problem} ({action})")
        if self.missing_entries:
            lines.append(
                f"  {_plural(self.missing_entries, 'cache key')} that runs refer to "
                f"{'is' if self.missing_entries == 1 else 'are'} not cached (recomputed when their recipes run)"
            )
        check = self.database
        version = f", schema {check.schema_revision}" if check.schema_revision else ""
        if not check.checked:
            lines.append(f"database: {check.database}{version}: integrity not checked here (use the server's tools, e.g. amcheck)")
        elif check.ok:
            lines.append(f"database: {check.database}{version}: integrity_check ok")
        else:
            lines.append(f"database: {check.database}{version}: DAMAGED")
            lines.extend(f"  {problem}" for problem in check.problems)
            if check.hint:
                lines.append(f"  to recover: {check.hint}")
        return lines


def verify(store_dir: Path, *, repair: bool = True) -> VerifyReport:
    """Re-hash every cache entry and read it back; check the database's integrity.

    Damaged entries (a file that does not match the manifest, an entry that cannot be loaded, a
    folder without a manifest) are discarded when `repair` is true, so the steps are recomputed the
    next time a recipe needs them. A damaged database is reported with the commands that recover
    it; verify never changes the database. Works on a store whose database cannot be opened.
    """
    store_dir = Path(store_dir)
    cache = Cache(store_dir / "cache")
    damaged, checked, checked_bytes = [], 0, 0
    for folder in cache.entry_folders():
        key = folder.parent.name + folder.name
        checked += 1
        checked_bytes += _folder_bytes(folder)
        problem = _entry_problem(cache, key)
        if problem is not None:
            if repair:
                cache.discard_folder(folder, key)
            damaged.append(DamagedEntry(key, problem, discarded=repair))
    database = _check_database(store_dir)
    missing = None
    if database.ok:
        try:
            with Store.open(store_dir, create=False) as store:
                missing = len(store.cache_keys_in_use() - set(cache.keys()))
        except StoreError:
            missing = None
    return VerifyReport(checked, checked_bytes, damaged, database, missing)


def _entry_problem(cache: Cache, key: str) -> str | None:
    if not cache.has(key):
        return "incomplete (no manifest)"
    try:
        cache.verify(key)  # every file re-hashed: no memo
        read_result(cache.entry_dir(key), key)  # and loadable: structure, safetensors header
    except CorruptEntry as error:
        return error.message.removeprefix(f"cache entry {key[:12]}").lstrip(": ")
    return None


def _check_database(store_dir: Path) -> DatabaseCheck:
    url = database_url(store_dir)
    try:
        parsed = checked_url(url)
    except StoreError as error:
        return DatabaseCheck(mask_url(url), True, [error.message])
    path = sqlite_path(parsed)
    if path is None:  # PostgreSQL: reachable, and which schema version
        try:
            with Store(url, create=False, store_dir=store_dir) as store:
                return DatabaseCheck(mask_url(parsed), False, schema_revision=store.schema_revision)
        except StoreError as error:
            return DatabaseCheck(mask_url(parsed), True, [error.message], error.hint)
    database = Path(path)
    if not database.is_file() or database.stat().st_size == 0:
        entries = cache_entry_count(store_dir / "cache")
        state = "missing" if not database.is_file() else "empty"
        return DatabaseCheck(str(database), True, [f"the database is {state} (the cache has {entries} entries)"],
                             "restore it from a backup; runs cannot be recovered from the cache")
    try:
        connection = sqlite3.connect(database, timeout=60)
        try:
            rows = check_rows(connection, "integrity_check")
            if rows != ["ok"]:
                rows += _damaged_tables_line(connection)
            else:  # healthy pages; are the rows consistent?
                rows = [f"foreign key violation in {row[0]} (row {row[1]})" for row in connection.execute("PRAGMA foreign_key_check")]
            try:
                revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.DatabaseError:
                revision = None
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        rows = [str(error)]
        revision = None
    problems = [] if rows == ["ok"] else rows
    return DatabaseCheck(str(database), True, problems, recovery_hint(database) if problems else None,
                         revision[0] if revision else None)


def _damaged_tables_line(connection: sqlite3.Connection) -> list[str]:
    """Which tables hold the damage: what a recovery may lose."""
    try:
        tables = sorted(row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    except sqlite3.DatabaseError:
        return []
    hit = damaged_tables(connection, tables)
    return [f"damage in the tables: {', '.join(hit)}"] if hit else []


# ---- helpers --------------------------------------------------------------------------------------


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            pass
    return total


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _ids(ids: list[int]) -> str:
    return ", ".join(str(run_id) for run_id in ids)


def _size(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} bytes"


__all__ = [
    "DamagedEntry",
    "DatabaseCheck",
    "GcReport",
    "RemoveReport",
    "VerifyReport",
    "garbage_collect",
    "remove_runs",
    "verify",
]
