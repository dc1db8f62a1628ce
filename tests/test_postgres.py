"""`workbench run`, `runs`, `show` and maintenance with the store's database in PostgreSQL
(WORKBENCH_DB); skipped unless WORKBENCH_TEST_DB names a server to create the database on."""

from __future__ import annotations

import pytest

from tests.helpers import agreement, cli, recipe, run_json, statuses, write_yaml
from tests.test_store_database import postgres_database
from workbench.db.store import Store
from workbench.maintenance import garbage_collect, remove_runs, verify


@pytest.fixture
def postgres_url():
    yield from postgres_database()


def test_runs_recorded_in_postgresql(postgres_url, tiny_model_dir, tmp_path, store_dir, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DB", postgres_url)
    steps = {"extract": {"kind": "extract", "dataset": "dev", "pooling": "first"}}
    path = write_yaml(tmp_path / "r.yaml", recipe(tiny_model_dir("bert"), datasets={"dev": agreement(16, 2)}, steps=steps, seed=2**31 + 5))
    for expected in ("done", "cached"):
        result = cli("run", path, "--store", store_dir, "-q")
        assert result.code == 0, result.text
        shown = run_json(store_dir)
        assert statuses(shown) == {"extract": expected}
    assert not (store_dir / "workbench.sqlite").exists()  # the database is PostgreSQL; the cache is here
    listed = cli("runs", "--json", "--store", store_dir).json()
    assert [r["status"] for r in listed] == ["finished", "finished"]
    assert run_json(store_dir, listed[0]["id"])["steps"][0]["layer_scores"] == run_json(store_dir, listed[1]["id"])["steps"][0]["layer_scores"]

    with Store.open(store_dir, create=False) as store:
        assert store.get_run(listed[0]["id"]).seed == 2**31 + 5
        assert remove_runs(store, [listed[0]["id"]]).removed == [listed[0]["id"]]
    assert garbage_collect(store_dir).entries == []  # the other run still uses the entry
    report = verify(store_dir)
    assert report.ok and not report.database.checked and "postgresql+psycopg://" in report.database.database
