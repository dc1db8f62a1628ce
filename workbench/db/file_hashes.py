"""The state table: sha256 of local files by (path, inode, size, mtime_ns), kept between processes.

DVC's idea: a file whose path, inode, size and modification time are what they were when it was
hashed has the bytes it had, so a cached rerun over a multi-GB checkpoint stats it instead of
reading it. Any of the four changing (rewritten, touched, replaced, copied over) means a fresh
hash. Rewriting a file in place and setting its old mtime back defeats this, as it defeats make
and rsync; `workbench verify` re-hashes the cache, and `--force` recomputes a step.

The table lives in a SQLite file of this machine (the user cache folder, or WORKBENCH_HASH_STATE),
not in the store's database: the plan hashes the model and data before any store is opened (a
recipe that fails to plan must create no store, and a dry run writes none), bundles and `locate`
hash files with no store at all, and paths and inodes mean nothing on the other hosts that share
a PostgreSQL store. It is a cache: losing or deleting it costs one read of each file.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

STATE_FILE = "file-hashes.sqlite"
ENV = "WORKBENCH_HASH_STATE"  # a file path, or "off" for no state between processes
OFF = ("", "0", "off", "none", "no", "false")
BUSY_TIMEOUT_S = 5  # a memo never makes a run wait long: a locked write is skipped
SCHEMA_VERSION = 1  # PRAGMA user_version; another version is dropped and rebuilt (it is only a cache)

# What a failing state raises (a read-only or full disk, a lock held too long, a damaged file).
STATE_ERRORS = (OSError, SQLAlchemyError, sqlite3.Error)

metadata = sa.MetaData()
file_hashes = sa.Table(
    "file_hashes",
    metadata,
    sa.Column("path", sa.Text, primary_key=True),  # absolute; one row per path, the latest state
    sa.Column("inode", sa.BigInteger, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("checked_at", sa.DateTime, nullable=False),  # when the bytes were last read (UTC)
)


def default_state_path(env: dict[str, str] | None = None) -> Path | None:
    """WORKBENCH_HASH_STATE, else file-hashes.sqlite in the user cache folder; None when turned off."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    named = env.get(ENV)
    if named is not None:
        return None if named.strip().lower() in OFF else Path(named).expanduser()
    try:
        import platformdirs
    except ImportError:  # a minimal install: the XDG convention by hand
        return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "workbench" / STATE_FILE
    return platformdirs.user_cache_path("workbench", appauthor=False) / STATE_FILE


class FileHashState:
    """The state table in one SQLite file. Every method may raise OSError or SQLAlchemyError:
    callers (workbench/hashing.py) treat a state that fails as no state."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = _engine(self.path)
        # A forked child (a DataLoader worker) must not share the parent's SQLite connections.
        os.register_at_fork(after_in_child=lambda: self.engine.dispose(close=False))
        try:
            self._prepare()
        except sa.exc.DatabaseError as error:
            if "not a database" not in str(error) and "malformed" not in str(error):
                raise
            self.engine.dispose()  # a damaged cache file: start it again
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.engine = _engine(self.path)
            self._prepare()

    def _prepare(self) -> None:
        with self.engine.begin() as connection:
            version = connection.exec_driver_sql("PRAGMA user_version").scalar()
            if version == SCHEMA_VERSION:
                return
            if version:  # written by another version of this module
                file_hashes.drop(connection, checkfirst=True)
            # IF NOT EXISTS: processes that open a new file at once all get here
            connection.execute(sa.schema.CreateTable(file_hashes, if_not_exists=True))
            connection.exec_driver_sql(f"PRAGMA user_version={SCHEMA_VERSION}")

    def lookup(self, path: str, inode: int, size: int, mtime_ns: int) -> str | None:
        """The remembered sha256 of the file at `path` if it still has this inode, size and mtime."""
        query = sa.select(file_hashes.c.sha256).where(
            file_hashes.c.path == path,
            file_hashes.c.inode == _signed(inode),
            file_hashes.c.size == size,
            file_hashes.c.mtime_ns == mtime_ns,
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()

    def remember(self, path: str, inode: int, size: int, mtime_ns: int, sha256: str) -> None:
        row = {
            "path": path,
            "inode": _signed(inode),
            "size": size,
            "mtime_ns": mtime_ns,
            "sha256": sha256,
            "checked_at": datetime.now(timezone.utc).replace(tzinfo=None),
        }
        from sqlalchemy.dialects.sqlite import insert

        statement = insert(file_hashes).values(row)
        statement = statement.on_conflict_do_update(index_elements=["path"], set_={k: v for k, v in row.items() if k != "path"})
        with self.engine.begin() as connection:
            connection.execute(statement)

    def rows(self) -> list[dict[str, object]]:
        """Every remembered file (for tests and for people looking)."""
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.select(file_hashes).order_by(file_hashes.c.path))]

    def close(self) -> None:
        self.engine.dispose()


def _engine(path: Path) -> Engine:
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_S})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(connection, _record):  # type: ignore[no-untyped-def]
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # no fsync per remembered hash
        cursor.close()

    return engine


def _signed(inode: int) -> int:
    """st_ino is unsigned 64-bit; SQLite integers are signed."""
    return inode - 2**64 if inode >= 2**63 else inode
