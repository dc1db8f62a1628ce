"""A store in a bad state is named as such when it is opened: a damaged SQLite file, a database gone
from beside its cache, a read-only folder, a full disk. Never "unable to open database file", never
a silent fresh start, never a traceback.

Read-only folders and full disks are real: as root (CI) a read-only bind mount and a tiny tmpfs,
otherwise file permissions; the tests that need a mount skip where mounting is not allowed.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from tests.helpers import cli
from workbench.db.store import Store
from workbench.errors import StoreError

BTREE_PAGE_TYPES = (0x02, 0x05, 0x0A, 0x0D)


def store_with_runs(folder: Path, runs: int = 3) -> None:
    """A store whose database spans many pages (head scores of a few runs)."""
    with Store.open(folder) as store:
        for index in range(runs):
            run_id = store.start_run(name=f"r{index}", recipe_text="x" * 2000, recipe_path=None, recipe_hash=f"{index:064d}",
                                     seed=index, device="cpu", overrides=[], environment={})
            step_pk = store.start_step(run_id, "importance", "importance", "a" * 64, {})
            grid = [[float(layer * 16 + head) for head in range(16)] for layer in range(24)]
            store.finish_step(step_pk, status="done", duration_s=1.0, head_scores={"importance": grid, "other": grid})
            store.finish_run(run_id, "finished")


def damage_a_page(database: Path) -> int:
    """Overwrite the header of one b-tree page in the second half of the file; returns its page number."""
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(database.read_bytes())
    pages = len(data) // page_size
    for index in range(pages // 2, pages):
        if data[index * page_size] in BTREE_PAGE_TYPES:
            data[index * page_size : index * page_size + 8] = b"\xee" * 8  # not a page type, garbage counts
            database.write_bytes(bytes(data))
            return index + 1
    raise AssertionError("no b-tree page found to damage")


def fake_cache_entries(cache: Path, count: int) -> None:
    for index in range(count):
        entry = cache / f"{index:02x}" / ("e" * 62)
        entry.mkdir(parents=True)
        (entry / "manifest.json").write_text("[]")


def test_a_damaged_database_is_detected_on_open_with_a_recovery_hint(tmp_path):
    store_with_runs(tmp_path)
    page = damage_a_page(tmp_path / "workbench.sqlite")
    with pytest.raises(StoreError) as raised:
        Store.open(tmp_path, create=False)
    message = str(raised.value)
    assert "is damaged" in message and str(tmp_path / "workbench.sqlite") in message, (page, message)
    assert ".recover" in message
    listed = cli("runs", "--store", tmp_path)
    assert listed.code == 2 and "is damaged" in listed.text and "Traceback" not in listed.text


def test_a_file_that_is_not_a_database_is_named_damaged(tmp_path):
    (tmp_path / "workbench.sqlite").write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match="is damaged: file is not a database"):
        Store.open(tmp_path)


@pytest.mark.parametrize("state", ["missing", "empty", "no tables"])
def test_a_cache_whose_database_is_gone_is_not_silently_started_afresh(tmp_path, state):
    store_with_runs(tmp_path, runs=1)
    fake_cache_entries(tmp_path / "cache", 3)
    database = tmp_path / "workbench.sqlite"
    database.unlink()
    if state == "empty":
        database.write_bytes(b"")
    elif state == "no tables":
        with sqlite3.connect(database) as connection:
            connection.execute("PRAGMA user_version = 1")
    shown = "missing" if state == "missing" else "empty"
    for create in (True, False):
        with pytest.raises(StoreError, match=f"the cache has 3 entries but the database is {shown}: {database}"):
            Store.open(tmp_path, create=create)
    assert database.exists() == (state != "missing")  # nothing was created in its place
    listed = cli("runs", "--store", tmp_path)
    assert listed.code == 2 and "the cache has 3 entries" in listed.text


def test_a_cache_folder_without_entries_is_no_reason_to_refuse(tmp_path):
    (tmp_path / "cache" / "tmp").mkdir(parents=True)
    with Store.open(tmp_path) as store:
        assert store.list_runs() == []


@contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """The folder made read-only for this process: as root a read-only bind mount (or the immutable
    attribute), otherwise permissions."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:  # a container without CAP_SYS_ADMIN: the immutable attribute binds root too
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if immutable.returncode != 0:
            pytest.skip(f"cannot make a folder read-only for root here: {mounted.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    try:
        remounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True)
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remounted.stderr.decode().strip()}")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_store_folder_is_named_as_such(tmp_path):
    folder = tmp_path / "store"
    store_with_runs(folder, runs=1)
    with read_only_folder(folder):
        for create in (True, False):
            with pytest.raises(StoreError) as raised:
                Store.open(folder, create=create)
            message = str(raised.value)
            assert f"the store folder {folder} is" in message and "read-only" in message
            assert "unable to open database file" not in message
        listed = cli("runs", "--store", folder)
        assert listed.code == 2 and "read-only" in listed.text and "Traceback" not in listed.text


def test_a_read_only_cache_is_named_as_such(tmp_path):
    import torch

    from workbench.cache import Cache
    from workbench.step_result import StepResult

    cache = Cache(tmp_path / "cache")
    staging = cache.staging_dir("ab" * 32)
    cache.commit("ab" * 32, staging, StepResult(metrics={"m": 1.0}, head_scores={"h": torch.ones(2, 2)}))
    with read_only_folder(tmp_path / "cache"):
        with pytest.raises(StoreError, match="the cache folder .* read-only"):
            cache.staging_dir("cd" * 32)


@contextmanager
def tiny_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount (root)")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


def test_a_full_disk_is_named_as_such(tmp_path):
    with tiny_disk(tmp_path / "disk") as disk:
        store = Store.open(disk / "store")
        _fill(disk)
        with pytest.raises(StoreError) as raised:
            for index in range(50):
                store.start_run(name="r", recipe_text=f"{index}" + "x" * 200_000, recipe_path=None,
                                recipe_hash=f"{index:064d}", seed=0, device="cpu", overrides=[], environment={})
        assert "full" in str(raised.value) and "disk" in str(raised.value)
        store.close()
        with pytest.raises(StoreError, match="no space left on the disk holding the store folder"):
            Store.open(disk / "other")


def test_a_full_disk_while_caching_is_named_as_such(tmp_path):
    import torch

    from workbench.cache import Cache
    from workbench.step_result import StepResult

    with tiny_disk(tmp_path / "disk") as disk:
        cache = Cache(disk / "cache")
        staging = cache.staging_dir("ab" * 32)
        _fill(disk)
        with pytest.raises(StoreError, match="no space left on the disk holding the cache folder"):
            cache.commit("ab" * 32, staging, StepResult(head_scores={"h": torch.ones(300, 300)}, data={"x": "y" * 100_000}))
        assert not staging.exists()


def test_a_database_that_reaches_sqlites_size_limit_says_the_disk_is_full(tmp_path):
    """SQLITE_FULL, as a full disk gives it, from SQLite's own page limit: runs without root."""
    store = Store.open(tmp_path)
    event.listen(store.engine, "connect", lambda connection, _: connection.execute("PRAGMA max_page_count = 40"))
    store.engine.dispose()  # new connections get the limit
    with pytest.raises(StoreError) as raised:
        store.start_run(name="r", recipe_text="x" * 400_000, recipe_path=None, recipe_hash="h" * 64,
                        seed=0, device="cpu", overrides=[], environment={})
    assert "is full" in str(raised.value) and str(tmp_path / "workbench.sqlite") in str(raised.value)
    store.close()


def test_recovery_hint_recovers_a_damaged_store(tmp_path):
    """The hint's commands work: the recovered file opens, with the runs SQLite could still read."""
    import shutil

    if shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 command-line tool is not installed")
    store_with_runs(tmp_path)
    damage_a_page(tmp_path / "workbench.sqlite")
    database = tmp_path / "workbench.sqlite"
    recovered = tmp_path / "recovered.sqlite"
    for command in (".recover", ".dump"):  # as the hint says: .dump where .recover fails (sqlite3 3.40)
        dump = subprocess.run(["sqlite3", str(database), command], capture_output=True, text=True)
        if dump.returncode == 0:
            break
    subprocess.run(["sqlite3", str(recovered)], input=dump.stdout, text=True, check=True)
    database.rename(tmp_path / "workbench.sqlite.damaged")
    recovered.rename(database)
    with Store.open(tmp_path, create=False) as store:
        assert len(store.list_runs()) >= 1
