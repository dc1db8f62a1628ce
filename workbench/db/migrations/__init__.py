"""The store's schema version, and bringing an older store up to date (Alembic, run from code).

The version lives in Alembic's `alembic_version` table. Opening a store reads it (one query, no
Alembic import); only a store that is behind, or new, runs the migrations in versions/, under a
lock so that processes opening one fresh database at once create it once: SQLite takes its write
lock up front (BEGIN IMMEDIATE), PostgreSQL a transaction-scoped advisory lock. The migrations run
in that one transaction: a crash leaves the old schema, never half of the new one.

Stores written before versions were recorded have the tables but no version: they are stamped
with the revision their columns match, then upgraded. Every revision is idempotent, so a store
whose columns do not match its recorded version (edited by hand, or copied between versions) is
repaired by replaying the chain from the start.

Adding a change: edit workbench/db/orm.py, copy the newest file in versions/ to the next number,
write its `upgrade()` (idempotent, both dialects), and set HEAD below. tests/test_store_migrations.py
checks that a fresh store built by the chain matches the models.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from workbench.db.orm import Base
from workbench.errors import StoreError

HEAD = "0004"
HERE = Path(__file__).resolve().parent
STORE_TABLES = frozenset(table.name for table in Base.metadata.sorted_tables)
# Any constant works; it only has to be the same for every process that migrates a database.
POSTGRES_LOCK_KEY = 0x776F726B62656E63  # "workbenc"


@dataclass(frozen=True)
class SchemaState:
    """What a database holds: the recorded revision, the store tables, and what the models miss in it."""

    revision: str | None
    tables: frozenset[str]
    missing: tuple[str, ...]  # "table" or "table.column" the models have and the database lacks
    has_pid_started: bool

    @property
    def empty(self) -> bool:
        return not (self.tables & STORE_TABLES)

    @property
    def current(self) -> bool:
        return self.revision == HEAD and not self.missing


def read_state(connection: Connection) -> SchemaState:
    inspector = sa.inspect(connection)
    tables = frozenset(inspector.get_table_names())
    revision = None
    if "alembic_version" in tables:
        revision = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    missing: list[str] = []
    has_pid_started = False
    for table in Base.metadata.sorted_tables:
        if table.name not in tables:
            missing.append(table.name)
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        has_pid_started |= table.name == "runs" and "pid_started" in present
        missing.extend(f"{table.name}.{column.name}" for column in table.columns if column.name not in present)
    return SchemaState(revision, tables & (STORE_TABLES | {"alembic_version"}), tuple(missing), has_pid_started)


def upgrade(engine: Engine) -> SchemaState:
    """Create the schema, or bring it to HEAD; a no-op when another process already did.

    Returns the state the database was found in (under the lock), so callers can say what changed.
    """
    with _schema_lock(engine) as connection:
        found = read_state(connection)
        if found.current:
            return found
        if found.empty and "alembic_version" not in found.tables and connection.dialect.name == "sqlite":
            _create_at_head(connection)
            return found
        from alembic import command
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(HERE))
        config.attributes["connection"] = connection
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        if found.revision is not None and found.revision not in known:
            raise StoreError(
                f"the store's schema is version {found.revision}, newer than this workbench knows (up to {HEAD})",
                hint="it was written by a newer workbench: upgrade the workbench (pip install -U bertology-workbench)",
            )
        if found.revision is None and not found.empty:  # written before versions were recorded
            command.stamp(config, "0002" if found.has_pid_started else "0001")
        command.upgrade(config, "head")
        if read_state(connection).missing:  # the recorded version lied: replay the idempotent chain
            command.stamp(config, "base", purge=True)
            command.upgrade(config, "head")
        after = read_state(connection)
        if not after.current:
            raise StoreError(
                f"the store's schema could not be brought to version {HEAD}: missing {', '.join(after.missing)}"
            )
        return found


def _create_at_head(connection: Connection) -> None:
    """A new SQLite store: the models' tables and the HEAD version, in the lock's transaction, without Alembic.

    Replaying the chain on an empty file builds the same tables (the upgrade tests check that the
    chain reaches every model column) but imports Alembic and runs four migrations: a quarter of a
    second of every fresh run (issue 14). PostgreSQL stores keep the chain, which also sets the
    column types its later revisions widened."""
    Base.metadata.create_all(connection)
    connection.execute(sa.text(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
    ))
    connection.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": HEAD})


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """One transaction that only one process at a time can hold, on a connection of its own."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(POSTGRES_LOCK_KEY)))
            yield connection
        return
    # pysqlite neither begins a transaction before DDL nor lets one ask for the write lock up front:
    # take over the transaction handling on a private engine, as SQLAlchemy's pysqlite notes describe.
    private = sa.create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 60})

    @sa.event.listens_for(private, "connect")
    def _autocommit_driver(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(private, "begin")
    def _begin_immediate(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with private.begin() as connection:
            yield connection
    finally:
        private.dispose()
