"""What can be wrong with a store's database, found when it is opened and said in plain words.

SQLite's own messages name the symptom, not the cause: "unable to open database file" is a
read-only folder, a missing folder or a full disk; "file is not a database" is a damaged file.
These checks look at the folder and the file first, and turn driver errors into StoreErrors that
say which of those it is and what to do.
"""

from __future__ import annotations

import errno
import os
import shlex
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from workbench.db.urls import mask_urls_in
from workbench.errors import StoreError

DATABASE_FILE = "workbench.sqlite"
NO_STORE_HINT = "run a recipe first or pass --store"


def cache_entry_count(cache_dir: Path) -> int:
    return sum(1 for _ in cache_dir.glob("??/*/manifest.json")) if cache_dir.is_dir() else 0


def orphaned_cache(entries: int, state: str, database: Path, cache_dir: Path) -> StoreError:
    """A cache with entries beside a database that is missing or empty: restore it, never start afresh."""
    return StoreError(
        f"the cache has {entries} {'entry' if entries == 1 else 'entries'} but the database is {state}: {database}",
        hint="restore the database from a backup; to start a new store instead, delete the cache "
        f"({shlex.quote(str(cache_dir))}) or pass --store to another folder",
    )


def check_folder_writable(folder: Path, what: str = "store folder") -> None:
    """SQLite in WAL mode writes beside the database (-wal, -shm) even to read: the folder must take files."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".workbench-probe-") as probe:
            probe.write(b"x")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise folder_error(error, folder, what) from None


def folder_error(error: OSError, folder: Path, what: str = "store folder") -> StoreError:
    """An OSError from writing into the store or the cache, named by its cause."""
    code = error.errno
    if code == errno.EROFS:
        return StoreError(f"the {what} {folder} is on a read-only file system", hint="pass --store to a writable folder")
    if code in (errno.EACCES, errno.EPERM):
        return StoreError(f"the {what} {folder} is read-only (permission denied)", hint="pass --store to a writable folder, or fix its permissions")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"no space left on the disk holding the {what} {folder}", hint="free some space (`workbench gc` removes unused cache entries)")
    if code == errno.ENOENT:
        return StoreError(f"the {what} {folder} does not exist")
    return StoreError(f"cannot write into the {what} {folder}: {error.strerror or error}")


def check_database_file(path: Path, *, create: bool, cache_dir: Path | None) -> None:
    """Refuse to start afresh beside a cache whose database has gone, and to create anything when reading.

    `cache_dir` is the cache that belongs with this database (None when the database lives elsewhere).
    """
    exists = path.is_file()
    empty = exists and path.stat().st_size == 0 and not Path(f"{path}-wal").is_file()
    if exists and not empty:
        return
    entries = cache_entry_count(cache_dir) if cache_dir is not None else 0
    if entries and cache_dir is not None:
        raise orphaned_cache(entries, "empty" if exists else "missing", path, cache_dir)
    if not create:
        raise StoreError(f"no store at {path.parent}; {NO_STORE_HINT}")


def check_rows(connection: sqlite3.Connection, pragma: str, limit: int = 100) -> list[str]:
    """The problems PRAGMA quick_check or integrity_check finds; ["ok"] when healthy.

    On some damage SQLite fails the statement ("database disk image is malformed") after finding
    problems, and Python's sqlite3 then drops the rows it had: fall back to a cheaper check, then
    to the first problem alone, so the report still says where the damage is.
    """
    attempts = [f"{pragma}({limit})", f"quick_check({limit})", f"{pragma}(1)"]
    failure = None
    for attempt in attempts:
        try:
            rows = [line for row in connection.execute(f"PRAGMA {attempt}") for line in str(row[0]).splitlines()]
        except sqlite3.DatabaseError as error:
            if "locked" in str(error) or "busy" in str(error):  # another process, not damage
                raise
            failure = failure or str(error)
            continue
        rows = [row for row in rows if not row.startswith("*** in database")]
        if rows == ["ok"] and failure is None:
            return rows
        return [row for row in rows if row != "ok"] + ([failure] if failure else [])
    return [failure or "the check failed"]


def damaged_tables(connection: sqlite3.Connection, tables: list[str]) -> list[str]:
    """Which of the tables (with their indexes) integrity_check finds damage in."""
    damaged = []
    for table in tables:
        try:
            rows = [row[0] for row in connection.execute(f'PRAGMA integrity_check("{table}")')]
        except sqlite3.DatabaseError:
            rows = ["damaged"]
        if rows != ["ok"]:
            damaged.append(table)
    return damaged


def recovery_hint(path: Path) -> str:
    """The commands that save what a damaged SQLite file still holds."""
    db = shlex.quote(str(path))
    recovered = shlex.quote(str(path.with_name("recovered.sqlite")))
    return (
        f"save what can still be read: sqlite3 {db} .recover | sqlite3 {recovered} "
        "(.dump instead of .recover where that fails, as sqlite3 3.40 does with 'SQL logic error'); "
        f"then move {db} and its -wal and -shm files aside and {recovered} into its place"
    )


def damaged(path: Path, problem: str) -> StoreError:
    return StoreError(f"the database {path} is damaged: {problem}", hint=recovery_hint(path))


class DatabaseLocked(StoreError):
    """SQLite answered "database is locked": another process holds the lock, or a lock upgrade would deadlock."""


def explain(error: SQLAlchemyError | sqlite3.Error, *, doing: str, database: str, path: Path | None) -> StoreError:
    """A driver error (or SQLAlchemy's wrapper of one) as a StoreError that names its cause, passwords masked."""
    raw = getattr(error, "orig", None) or error
    text = mask_urls_in(str(raw).strip().splitlines()[0] if str(raw).strip() else type(raw).__name__)
    lowered = text.lower()
    if path is not None:
        if "malformed" in lowered or "not a database" in lowered or "disk i/o error" in lowered:
            return damaged(path, text)
        if "disk is full" in lowered:
            return StoreError(
                f"{doing}: the disk holding {path} is full (SQLite: {text})",
                hint="free some space (`workbench gc` removes unused cache entries)",
            )
        if "readonly database" in lowered or "read-only" in lowered:
            return StoreError(f"{doing}: the database {path} is read-only", hint="pass --store to a writable folder, or fix its permissions")
        if "unable to open database file" in lowered:
            try:
                check_folder_writable(path.parent)
            except StoreError as cause:
                return StoreError(f"{doing}: {cause.message}", hint=cause.hint)
            return StoreError(f"{doing}: SQLite cannot open {path} ({text})")
        if "database is locked" in lowered:
            return DatabaseLocked(
                f"{doing}: the database {path} stayed locked by another process for too long",
                hint="another `workbench` is writing to this store; wait for it, or check for a hung process",
            )
    return StoreError(f"{doing} ({database}): {text}")
