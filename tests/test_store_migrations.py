"""Stores written by earlier versions open, are upgraded to the current schema, and keep their runs.

Two old stores: tests/data/stores/store-69720ce.db, a file written by the store code of commit
69720ce (runs.pid_started, no recorded version), and the baseline schema (before pid_started)
written here with raw SQL, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_store_database import database_url  # noqa: F401  (fixture: SQLite, and PostgreSQL if configured)
from workbench.db import migrations
from workbench.db.store import Store
from workbench.errors import StoreError

FIXTURE = Path(__file__).parent / "data" / "stores" / "store-69720ce.db"

# The tables as `Base.metadata.create_all` made them before pid_started, with one run in them.
BASELINE_SQLITE = """
CREATE TABLE recipes (id INTEGER NOT NULL, content_hash VARCHAR(64) NOT NULL, name VARCHAR(200) NOT NULL,
  path TEXT, text TEXT NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (id), UNIQUE (content_hash));
CREATE TABLE runs (id INTEGER NOT NULL, recipe_id INTEGER NOT NULL, name VARCHAR(200) NOT NULL,
  status VARCHAR(20) NOT NULL, started_at DATETIME NOT NULL, finished_at DATETIME, host VARCHAR(200) NOT NULL,
  pid INTEGER NOT NULL, device VARCHAR(50), seed INTEGER NOT NULL, overrides TEXT NOT NULL,
  environment TEXT NOT NULL, error TEXT, PRIMARY KEY (id), FOREIGN KEY(recipe_id) REFERENCES recipes (id));
CREATE TABLE steps (id INTEGER NOT NULL, run_id INTEGER NOT NULL, step_id VARCHAR(200) NOT NULL,
  kind VARCHAR(50) NOT NULL, "key" VARCHAR(64) NOT NULL, status VARCHAR(20) NOT NULL, started_at DATETIME NOT NULL,
  finished_at DATETIME, duration_s FLOAT, params TEXT NOT NULL, data TEXT NOT NULL, error TEXT, PRIMARY KEY (id),
  FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE);
CREATE INDEX ix_steps_run_id ON steps (run_id);
CREATE INDEX ix_steps_key ON steps ("key");
CREATE TABLE metrics (id INTEGER NOT NULL, step_pk INTEGER NOT NULL, name VARCHAR(200) NOT NULL, value FLOAT,
  PRIMARY KEY (id), FOREIGN KEY(step_pk) REFERENCES steps (id) ON DELETE CASCADE);
CREATE INDEX ix_metrics_step_pk ON metrics (step_pk);
CREATE TABLE head_scores (id INTEGER NOT NULL, step_pk INTEGER NOT NULL, name VARCHAR(200) NOT NULL,
  layer INTEGER NOT NULL, head INTEGER NOT NULL, value FLOAT, PRIMARY KEY (id),
  FOREIGN KEY(step_pk) REFERENCES steps (id) ON DELETE CASCADE);
CREATE INDEX ix_head_scores_step_name ON head_scores (step_pk, name);
CREATE TABLE layer_scores (id INTEGER NOT NULL, step_pk INTEGER NOT NULL, name VARCHAR(200) NOT NULL,
  layer INTEGER NOT NULL, value FLOAT, PRIMARY KEY (id), FOREIGN KEY(step_pk) REFERENCES steps (id) ON DELETE CASCADE);
CREATE INDEX ix_layer_scores_step_name ON layer_scores (step_pk, name);
CREATE TABLE artifacts (id INTEGER NOT NULL, step_pk INTEGER NOT NULL, name TEXT NOT NULL, kind VARCHAR(50) NOT NULL,
  cache_key VARCHAR(64) NOT NULL, sha256 VARCHAR(64) NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (id),
  FOREIGN KEY(step_pk) REFERENCES steps (id) ON DELETE CASCADE);
CREATE INDEX ix_artifacts_step_pk ON artifacts (step_pk);
"""
BASELINE_POSTGRES = """
CREATE TABLE recipes (id SERIAL NOT NULL, content_hash VARCHAR(64) NOT NULL, name VARCHAR(200) NOT NULL,
  path TEXT, text TEXT NOT NULL, created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, PRIMARY KEY (id), UNIQUE (content_hash));
CREATE TABLE runs (id SERIAL NOT NULL, recipe_id INTEGER NOT NULL, name VARCHAR(200) NOT NULL,
  status VARCHAR(20) NOT NULL, started_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, finished_at TIMESTAMP WITHOUT TIME ZONE,
  host VARCHAR(200) NOT NULL, pid INTEGER NOT NULL, device VARCHAR(50), seed INTEGER NOT NULL, overrides TEXT NOT NULL,
  environment TEXT NOT NULL, error TEXT, PRIMARY KEY (id), FOREIGN KEY(recipe_id) REFERENCES recipes (id));
CREATE TABLE steps (id SERIAL NOT NULL, run_id INTEGER NOT NULL, step_id VARCHAR(200) NOT NULL,
  kind VARCHAR(50) NOT NULL, key VARCHAR(64) NOT NULL, status VARCHAR(20) NOT NULL,
  started_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, finished_at TIMESTAMP WITHOUT TIME ZONE, duration_s FLOAT,
  params TEXT NOT NULL, data TEXT NOT NULL, error TEXT, PRIMARY KEY (id),
  FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE);
CREATE INDEX ix_steps_run_id ON steps (run_id);
CREATE INDEX ix_steps_key ON steps (key);
CREATE TABLE metrics (id SERIAL NOT NULL, step_pk INTEGER NOT NULL, name VARCHAR(200) NOT NULL, value FLOAT,
  PRIMARY KEY (id), FOREIGN KEY(step_pk) REFERENCES steps (id) ON DELETE CASCADE);
CREATE INDEX ix_metrics_step_pk ON metrics (step_pk);
CREATE TABLE head_scores (id SERIAL NOT NULL, step_pk INTEGER NOT NULL, name VARCHAR(200) NOT NULL,
  layer INTEGER NOT NULL, head INTEGER NOT NULL, value FLOAT, PRIMARY KEY (id),
  FOREIGN KEY(step_pk) REFERENCES steps (id) ON DELETE CASCADE);
CREATE INDEX ix_head_scores_step_name ON head_scores (step_pk, name);
CREATE TABLE layer_scores (id SERIAL NOT NULL, step_pk INTEGER NOT NULL, name VARCHAR(200) NOT NULL,
  layer INTEGER NOT NULL, value FLOAT, PRIMARY KEY (id), FOREIGN KEY(step_pk) REFERENCES steps (id) ON DELETE CASCADE);
CREATE INDEX ix_layer_scores_step_name ON layer_scores (step_pk, name);
CREATE TABLE artifacts (id SERIAL NOT NULL, step_pk INTEGER NOT NULL, name TEXT NOT NULL, kind VARCHAR(50) NOT NULL,
  cache_key VARCHAR(64) NOT NULL, sha256 VARCHAR(64) NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (id),
  FOREIGN KEY(step_pk) REFERENCES steps (id) ON DELETE CASCADE);
CREATE INDEX ix_artifacts_step_pk ON artifacts (step_pk);
"""
ROWS = """
INSERT INTO recipes (id, content_hash, name, path, text, created_at)
  VALUES (1, 'aaaa', 'old-recipe', NULL, 'version: 1', '2025-01-02 03:04:05');
INSERT INTO runs (id, recipe_id, name, status, started_at, finished_at, host, pid, device, seed, overrides, environment, error)
  VALUES (1, 1, 'old-recipe', 'finished', '2025-01-02 03:04:05', '2025-01-02 03:05:05', 'oldhost', 4242, 'cpu', 13, '[]', '{}', NULL);
INSERT INTO steps (id, run_id, step_id, kind, key, status, started_at, finished_at, duration_s, params, data, error)
  VALUES (1, 1, 'importance', 'importance', 'bbbb', 'done', '2025-01-02 03:04:05', NULL, 2.5, '{}', '{}', NULL);
INSERT INTO metrics (id, step_pk, name, value) VALUES (1, 1, 'accuracy', 0.875);
INSERT INTO head_scores (id, step_pk, name, layer, head, value) VALUES (1, 1, 'importance', 0, 0, 0.5);
INSERT INTO head_scores (id, step_pk, name, layer, head, value) VALUES (2, 1, 'importance', 0, 1, 0.25);
"""


def write_baseline(url: str) -> None:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as connection:
            connection.executescript(BASELINE_SQLITE + ROWS)
        return
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in (BASELINE_POSTGRES + ROWS).split(";"):
            if statement.strip():
                connection.exec_driver_sql(statement)
        # SERIAL counters, as if the rows had been inserted without explicit ids
        for table in ("recipes", "runs", "steps", "metrics", "head_scores"):
            connection.exec_driver_sql(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
    engine.dispose()


def test_a_baseline_store_is_upgraded_and_keeps_its_runs(database_url):  # noqa: F811
    write_baseline(database_url)
    with Store(database_url, create=False) as store:
        assert store.schema_revision == migrations.HEAD
        detail = store.get_run(1)
        assert detail.summary.name == "old-recipe" and detail.summary.status == "finished" and detail.seed == 13
        assert detail.steps[0].metrics == {"accuracy": 0.875}
        assert detail.steps[0].head_scores[0].values == [[0.5, 0.25]]
        # What the old schema could not hold, the upgraded one does (on PostgreSQL: BIGINT, TEXT).
        run_id = store.start_run(name="x" * 300, recipe_text="t", recipe_path=None, recipe_hash="c" * 64,
                                 seed=2**33, device="cpu", overrides=[], environment={})
        assert store.get_run(run_id).seed == 2**33
        assert [run.id for run in store.list_runs()] == [run_id, 1]
        columns = {c["name"] for c in sa.inspect(store.engine).get_columns("runs")}
        assert "pid_started" in columns
    with Store(database_url) as again:  # and a second open finds it current
        assert again.schema_revision == migrations.HEAD


def test_the_store_file_of_the_previous_version_opens_with_its_runs(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "workbench.sqlite")
    with sqlite3.connect(tmp_path / "workbench.sqlite") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "alembic_version" not in tables and "runs" in tables  # written before versions were recorded
    with Store.open(tmp_path, create=False) as store:
        assert store.schema_revision == migrations.HEAD
        runs = store.list_runs()
        assert [(run.id, run.status) for run in runs] == [(2, "failed"), (1, "finished")]
        first = store.get_run(1)
        assert first.seed == 7 and first.overrides == ["seed=7"] and first.environment == {"python": "3.11"}
        step = first.step("importance")
        assert step is not None and step.metrics == {"accuracy": 0.75} and step.data == {"curve": [1, 2]}
        assert step.head_scores[0].values == [[0.1, 0.2], [0.3, 0.4]] and step.layer_scores[0].values == [1.0, 2.0]
        assert store.get_run(2).error == "boom"


def test_a_store_of_a_newer_version_is_refused_not_downgraded(database_url):  # noqa: F811
    Store(database_url).close()
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(StoreError, match="version 9999, newer than this workbench knows"):
        Store(database_url)


def test_a_store_whose_columns_do_not_match_its_version_is_repaired(tmp_path):
    """Migrations are idempotent: a hand-edited store that lost a column gets it back by replaying them."""
    Store.open(tmp_path).close()
    with sqlite3.connect(tmp_path / "workbench.sqlite") as connection:
        connection.execute("ALTER TABLE runs DROP COLUMN pid_started")
    with Store.open(tmp_path) as store:
        assert "pid_started" in {c["name"] for c in sa.inspect(store.engine).get_columns("runs")}
        assert store.schema_revision == migrations.HEAD


def test_a_new_sqlite_store_made_without_alembic_equals_one_made_by_the_chain(tmp_path):
    """Fresh SQLite stores get the models' tables and HEAD directly (issue 14: no Alembic in a fresh run);
    the chain replayed on an empty file must give the same tables, columns, keys and indexes."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from workbench.db import migrations
    from workbench.db.store import Store

    Store.open(tmp_path / "fast").close()
    chained = sa.create_engine(f"sqlite:///{tmp_path / 'chain.sqlite'}")
    with chained.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(migrations.HERE))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    def schema(engine):  # type: ignore[no-untyped-def]
        inspector = sa.inspect(engine)
        return {
            table: (
                # sorted: the chain adds later columns at the end, the models declare them in place
                sorted((c["name"], c["nullable"], c.get("primary_key")) for c in inspector.get_columns(table)),
                sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
                sorted(tuple(f["constrained_columns"]) for f in inspector.get_foreign_keys(table)),
            )
            for table in inspector.get_table_names()
        }

    fast = sa.create_engine(f"sqlite:///{next((tmp_path / 'fast').glob('*.sqlite'))}")
    assert schema(fast) == schema(chained)
    with fast.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == migrations.HEAD
