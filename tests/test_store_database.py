"""The store's database on SQLite and, when WORKBENCH_TEST_DB names a PostgreSQL server, on PostgreSQL.

Every test that takes `database_url` runs once per backend, against a database of its own: a
file in tmp_path, or a PostgreSQL database created for the test and dropped after it.
WORKBENCH_TEST_DB is an administrative URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres);
.ci/run starts a server and sets it, so CI runs these for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import REPO
from workbench.db.store import Store
from workbench.errors import StoreError

ADMIN_URL = os.environ.get("WORKBENCH_TEST_DB")


def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards (connections and all)."""
    if not ADMIN_URL:
        pytest.skip("WORKBENCH_TEST_DB is not set (a postgresql:// URL to create test databases with)")
    from workbench.db.urls import checked_url

    admin_url = checked_url(ADMIN_URL)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"workbench_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'workbench.sqlite'}"
    else:
        yield from postgres_database()


@pytest.fixture
def store(database_url) -> Iterator[Store]:
    with Store(database_url) as opened:
        yield opened


def start_run(store: Store, *, name: str = "r", seed: int = 0, recipe_hash: str = "h" * 64) -> int:
    return store.start_run(
        name=name, recipe_text="version: 1", recipe_path=None, recipe_hash=recipe_hash, seed=seed,
        device="cpu", overrides=[], environment={},
    )


def test_values_sqlite_never_checked_fit(store):
    """Seeds >= 2**31, files >= 2 GiB, names longer than 200 characters and NUL characters in an error."""
    long_name = "step_" + "x" * 300
    run_id = start_run(store, name="n" * 250, seed=2**40 + 1)
    step_pk = store.start_step(run_id, long_name, "k" * 80, "a" * 64, {"batch_size": 8})
    store.finish_step(
        step_pk, status="failed", duration_s=1.0, error="bad byte \x00 here",
        metrics={"m" * 220: 0.5, "huge": 1e300},
        head_scores={"score_" + "s" * 210: [[0.25, float("nan")]]},
        layer_scores={"l" * 205: [1.0, 2.0]},
        artifacts=[{"name": "files/model/model.safetensors", "kind": "model", "cache_key": "a" * 64,
                    "sha256": "b" * 64, "bytes": 3 * 2**30}],
    )
    store.finish_run(run_id, "failed", "e" * 5000)
    detail = store.get_run(run_id)
    assert detail.seed == 2**40 + 1 and detail.summary.name == "n" * 250
    step = detail.steps[0]
    assert step.step_id == long_name and step.kind == "k" * 80
    assert step.error == "bad byte \ufffd here"
    assert step.metrics == {"m" * 220: 0.5, "huge": 1e300}
    assert step.head_scores[0].values == [[0.25, None]]
    assert step.artifacts[0].bytes == 3 * 2**30


def test_a_seed_beyond_64_bits_is_a_clear_error(store):
    with pytest.raises(StoreError, match="64-bit"):
        start_run(store, seed=2**64 - 1)


def test_a_fresh_database_is_built_by_the_migrations_and_matches_the_models(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from workbench.db import migrations
    from workbench.db.orm import Base

    assert store.schema_revision == migrations.HEAD
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    if store.engine.dialect.name == "sqlite":  # declared types are not changed on SQLite (see 0003)
        differences = [d for d in differences if not (isinstance(d, list) and d[0][0] == "modify_type")]
    assert differences == []


def test_head_is_the_newest_revision():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from workbench.db import migrations

    config = Config()
    config.set_main_option("script_location", str(migrations.HERE))
    assert ScriptDirectory.from_config(config).get_heads() == [migrations.HEAD]


OPEN_AND_WRITE = """
import os, sys, time
from pathlib import Path
from workbench.db.store import Store
go = Path(sys.argv[2])
Path(f"{go}.ready.{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.002)
store = Store(sys.argv[1])
store.start_run(name="racer", recipe_text="x", recipe_path=None, recipe_hash="r" * 64, seed=1, device="cpu",
                overrides=[], environment={})
print("ok")
"""


def open_at_once(url: str, tmp_path: Path, processes: int = 4) -> list[subprocess.CompletedProcess]:
    """`processes` real processes that open the same (fresh) database at the same moment."""
    go = tmp_path / f"go-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen([sys.executable, "-c", OPEN_AND_WRITE, url, str(go)], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(processes)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob(f"{go.name}.ready.*"))) < processes and time.monotonic() < deadline:
        time.sleep(0.02)  # until every child has imported the store and waits for the signal
    go.touch()
    done = []
    for child in children:
        out, err = child.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(child.args, child.returncode, out, err))
    return done


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_processes_opening_a_fresh_database_at_once_all_succeed(backend, tmp_path):
    """PostgreSQL has no CREATE TABLE race protection of its own: processes that created the tables
    together failed with UniqueViolation on pg_type (2 to 3 of 4 succeeding, one round in three)."""
    from workbench.db import migrations

    for round_ in range(3):
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'round{round_}' / 'workbench.sqlite'}"
            (tmp_path / f"round{round_}").mkdir()
            databases = iter([url])
        else:
            databases = postgres_database()
            url = next(databases)
        try:
            results = open_at_once(url, tmp_path)
            failures = [r.stderr.strip().splitlines()[-1] for r in results if r.returncode != 0]
            assert failures == [], f"round {round_}: {failures}"
            with Store(url, create=False) as store:
                assert store.schema_revision == migrations.HEAD
                assert len(store.list_runs()) == 4
        finally:
            for _ in databases:  # drops the PostgreSQL database
                pass


def test_opening_read_only_never_creates_a_store(database_url, tmp_path):
    with pytest.raises(StoreError, match="no store at .*; run a recipe first or pass --store"):
        Store(database_url, create=False)
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "db").exists()
    else:
        engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
        assert sa.inspect(engine).get_table_names() == []
        engine.dispose()
    Store(database_url).close()  # a writer creates it; now a reader opens it
    Store(database_url, create=False).close()


def test_store_open_read_only_of_a_missing_folder_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        Store.open(tmp_path / "nowhere", create=False)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    "url, expected",
    [
        ("mysql://bob:hunter2@db.example/results", "unsupported database URL mysql://bob:***@db.example/results"),
        ("postgresql+psycopg2://bob:hunter2@db/x", "its driver 'psycopg2' is not installed"),
        ("oracle+cx_oracle://bob:hunter2@db/x", "unsupported database URL"),
        ("not a url at all", "not a database URL"),
    ],
)
def test_unsupported_urls_are_clear_errors_with_the_password_masked(url, expected, monkeypatch, tmp_path):
    from tests.helpers import cli

    if "psycopg2" in url:
        import importlib.util

        if importlib.util.find_spec("psycopg2") is not None:
            pytest.skip("psycopg2 is installed here")
    with pytest.raises(StoreError) as raised:
        Store(url)
    assert expected in str(raised.value) and "hunter2" not in str(raised.value)
    monkeypatch.setenv("WORKBENCH_DB", url)
    listed = cli("runs", "--store", tmp_path)
    assert listed.code == 2 and expected in listed.text
    assert "hunter2" not in listed.text and "Traceback" not in listed.text


def test_an_unreachable_postgresql_server_is_named_without_its_password():
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError) as raised:
        Store("postgresql://bob:hunter2@127.0.0.1:9/results")  # port 9: nothing listens
    message = str(raised.value)
    assert "postgresql+psycopg://bob:***@127.0.0.1:9/results" in message and "hunter2" not in message


def test_runs_steps_and_cascading_deletes(store):
    first, second = start_run(store, seed=1), start_run(store, seed=2)
    for run_id in (first, second):
        step_pk = store.start_step(run_id, "s", "extract", "c" * 64, {})
        store.finish_step(step_pk, status="done", duration_s=0.1, metrics={"m": 1.0},
                          head_scores={"h": [[1.0, 2.0]]}, layer_scores={"l": [3.0]},
                          artifacts=[{"name": "result.json", "kind": "result", "cache_key": "c" * 64,
                                      "sha256": "d" * 64, "bytes": 10}])
        store.finish_run(run_id, "finished")
    removed = store.delete_runs([first, 99])
    assert removed.removed == [first] and removed.not_found == [99] and removed.steps == 1
    assert [run.id for run in store.list_runs()] == [second]
    from workbench.db.orm import SqlHeadScore, SqlMetric, SqlStep

    with store.session() as session:
        for table, rows in ((SqlStep, 1), (SqlMetric, 1), (SqlHeadScore, 2)):  # the other run's only
            assert session.scalar(sa.select(sa.func.count()).select_from(table)) == rows
    assert store.cache_keys_in_use() == {"c" * 64}


def test_a_live_run_is_not_deleted(store):
    from workbench.db.store import register_live_run, unregister_live_run

    run_id = start_run(store)
    register_live_run(run_id)
    try:
        removed = store.delete_runs([run_id])
    finally:
        unregister_live_run(run_id)
    assert removed.removed == [] and removed.still_running == [run_id]
    assert [run.id for run in store.list_runs()] == [run_id]
