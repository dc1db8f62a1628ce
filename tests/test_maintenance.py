"""rm, gc and verify (workbench.maintenance) on real stores: runs made by `workbench run`, real cache
entries, real damage (flipped bytes, a broken database page)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import agreement, cli, entry_dir, keys, recipe, run_json, statuses, write_yaml
from tests.test_store_database import database_url  # noqa: F401  (fixture: SQLite, and PostgreSQL if configured)
from tests.test_store_health import damage_a_page, store_with_runs
from workbench.cache import Cache
from workbench.db.store import Store
from workbench.errors import StoreError
from workbench.maintenance import garbage_collect, remove_runs, verify


@pytest.fixture
def extract_recipe(tiny_model_dir, tmp_path) -> Path:
    steps = {"extract": {"kind": "extract", "dataset": "dev", "pooling": "first"}}
    return write_yaml(tmp_path / "extract.yaml", recipe(tiny_model_dir("bert"), datasets={"dev": agreement(16, 2)}, steps=steps))


def run_ok(recipe_file: Path, store: Path, *options: str) -> dict:
    result = cli("run", recipe_file, "--store", store, "-q", *options)
    assert result.code == 0, result.text
    return run_json(store)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def dead_staging_folder(cache_root: Path) -> Path:
    """A staging folder as a killed run leaves it: named after a process that no longer exists."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    from workbench.cache import _HOST

    folder = cache_root / "tmp" / f"{'f' * 16}-{_HOST}-{child.pid}-0-deadbeef"
    (folder / "files").mkdir(parents=True)
    (folder / "files" / "half-written.bin").write_bytes(b"x" * 5000)
    return folder


def test_rm_then_gc_frees_exactly_the_entries_no_run_uses(extract_recipe, store_dir):
    first = run_ok(extract_recipe, store_dir)
    second = run_ok(extract_recipe, store_dir, "--set", "steps.extract.pooling=mean")
    kept_key, freed_key = keys(first)["extract"], keys(second)["extract"]
    assert kept_key != freed_key
    staging = dead_staging_folder(store_dir / "cache")

    with Store.open(store_dir, create=False) as store:
        nothing = garbage_collect(store_dir, dry_run=True)
        assert nothing.entries == [] and nothing.kept == 2 and nothing.staging == [staging]

        report = remove_runs(store, [second["id"], 99])
        assert report.removed == [second["id"]] and report.not_found == [99] and report.steps == 1
        assert [run.id for run in store.list_runs()] == [first["id"]]
        assert entry_dir(store_dir, freed_key).is_dir()  # rm leaves the cache alone
        assert any("workbench gc" in line for line in report.lines())

    expected = folder_bytes(entry_dir(store_dir, freed_key)) + folder_bytes(staging)
    planned = garbage_collect(store_dir, dry_run=True)
    assert planned.entries == [freed_key] and planned.bytes_freed == expected
    assert entry_dir(store_dir, freed_key).is_dir() and staging.is_dir()  # a dry run changes nothing
    assert "would remove 1 cache entry" in planned.lines()[0]

    done = garbage_collect(store_dir)
    assert done.entries == [freed_key] and done.bytes_freed == expected and done.kept == 1
    assert not entry_dir(store_dir, freed_key).exists() and not staging.exists()
    assert entry_dir(store_dir, kept_key).is_dir()

    assert statuses(run_ok(extract_recipe, store_dir)) == {"extract": "cached"}
    assert statuses(run_ok(extract_recipe, store_dir, "--set", "steps.extract.pooling=mean")) == {"extract": "done"}


def test_gc_never_empties_the_cache_of_a_lost_or_foreign_database(extract_recipe, store_dir, tmp_path, monkeypatch):
    base = run_ok(extract_recipe, store_dir)
    entry = entry_dir(store_dir, keys(base)["extract"])
    monkeypatch.setenv("WORKBENCH_DB", f"sqlite:///{tmp_path / 'other.sqlite'}")
    Store.open(store_dir).close()  # an empty database elsewhere
    with pytest.raises(StoreError, match="has no runs: gc would remove all 1 cache entry"):
        garbage_collect(store_dir)
    assert entry.is_dir()
    monkeypatch.delenv("WORKBENCH_DB")
    (store_dir / "workbench.sqlite").unlink()
    with pytest.raises(StoreError, match="the cache has 1 entry but the database is missing"):
        garbage_collect(store_dir)
    assert entry.is_dir()


def test_gc_against_every_database(database_url, tmp_path, monkeypatch):  # noqa: F811
    """The runs live in SQLite or PostgreSQL (WORKBENCH_DB); the cache in the folder."""
    import torch

    from workbench.step_result import StepResult

    store_dir = tmp_path / "store"
    monkeypatch.setenv("WORKBENCH_DB", database_url)
    cache = Cache(store_dir / "cache")
    used, unused = "1" * 64, "2" * 64
    for key in (used, unused):
        cache.commit(key, cache.staging_dir(key), StepResult(metrics={"m": 1.0}, head_scores={"h": torch.ones(2, 2)}))
    with Store.open(store_dir) as store:
        run_id = store.start_run(name="r", recipe_text="x", recipe_path=None, recipe_hash="h" * 64, seed=0,
                                 device="cpu", overrides=[], environment={})
        store.finish_step(store.start_step(run_id, "s", "extract", used, {}), status="done", duration_s=0.0)
        store.finish_run(run_id, "finished")
    report = garbage_collect(store_dir)
    assert report.entries == [unused] and cache.keys() == [used]


def test_verify_a_healthy_store(extract_recipe, store_dir):
    run_ok(extract_recipe, store_dir)
    report = verify(store_dir)
    assert report.ok and report.entries_checked == 1 and report.damaged == [] and report.missing_entries == 0
    assert report.database.ok and report.database.schema_revision is not None
    assert any("integrity_check ok" in line for line in report.lines())


def test_verify_reports_a_damaged_entry_and_a_damaged_database_page(extract_recipe, store_dir):
    base = run_ok(extract_recipe, store_dir)
    store_with_runs(store_dir)  # more pages, so there is one to damage
    key = keys(base)["extract"]
    tensors = entry_dir(store_dir, key) / "tensors.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0xFF
    tensors.write_bytes(bytes(data))
    damage_a_page(store_dir / "workbench.sqlite")

    report = verify(store_dir)
    text = "\n".join(report.lines())
    print(text)  # what `workbench verify` shows
    assert not report.ok
    assert [(d.key, d.discarded) for d in report.damaged] == [(key, True)]
    assert "tensors.safetensors does not match its hash" in report.damaged[0].problem
    assert not entry_dir(store_dir, key).exists()  # discarded: recomputed on the next run
    assert not report.database.ok and report.database.hint and ".recover" in report.database.hint
    assert "DAMAGED" in text and "Page " in text and "damage in the tables: " in text
    assert report.missing_entries is None  # the runs could not be read


def test_verify_discards_entries_that_cannot_be_loaded_and_incomplete_ones(extract_recipe, store_dir):
    from tests.test_store_cache import _garbage_header, rewrite_manifest

    base = run_ok(extract_recipe, store_dir)
    entry = entry_dir(store_dir, keys(base)["extract"])
    _garbage_header(entry)
    rewrite_manifest(entry)  # the hashes match: only reading it back shows the damage
    incomplete = store_dir / "cache" / "cd" / ("e" * 62)
    incomplete.mkdir(parents=True)
    (incomplete / "result.json").write_text("{}")
    report = verify(store_dir)
    problems = {d.key[:2]: d.problem for d in report.damaged}
    assert "tensors.safetensors cannot be read" in problems[keys(base)["extract"][:2]]
    assert problems["cd"] == "incomplete (no manifest)"
    assert report.missing_entries == 1  # the run's entry is gone now
    assert not entry.exists() and not incomplete.exists()
    assert statuses(run_ok(extract_recipe, store_dir)) == {"extract": "done"}


def test_verify_without_repair_changes_nothing(extract_recipe, store_dir):
    base = run_ok(extract_recipe, store_dir)
    entry = entry_dir(store_dir, keys(base)["extract"])
    (entry / "result.json").write_text("{}")
    report = verify(store_dir, repair=False)
    assert [d.discarded for d in report.damaged] == [False] and entry.is_dir()
    assert "left in place" in "\n".join(report.lines())


def test_maintenance_never_imports_torch(tmp_path):
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from workbench.db.store import Store\n"
        "from workbench.maintenance import garbage_collect, remove_runs, verify\n"
        f"store = Store.open(Path({str(tmp_path)!r}))\n"
        "remove_runs(store, [1]); garbage_collect(Path(sys.argv[1])); verify(Path(sys.argv[1]))\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
