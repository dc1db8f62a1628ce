"""File hashes remembered between processes (the state table), and cache reads that do not re-hash big files.

Every "fresh process" here is a real child interpreter, and every state table a real SQLite file.
To tell a remembered hash from one read now, files are rewritten in place with their size and
mtime put back (the one change the state table cannot see, by design): a process that reads the
file reports the new bytes' hash, one that trusts the state the old one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import agreement, cli_subprocess, recipe, run_json, statuses, subprocess_env, write_yaml
from workbench.cache import Cache, CorruptEntry
from workbench.db.file_hashes import FileHashState
from workbench.hashing import read_sha256
from workbench.maintenance import verify

HOUR_NS = 3600 * 10**9
HASH_IN_A_CHILD = (
    "import sys; from pathlib import Path; from workbench.hashing import file_sha256; print(file_sha256(Path(sys.argv[1])))"
)


def child_sha256(path: Path, **env: str) -> str:
    """file_sha256 of `path` as computed by a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", HASH_IN_A_CHILD, str(path)], env=subprocess_env(**env), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def age(path: Path, ns: int = HOUR_NS) -> None:
    """Date the file back (a checkpoint downloaded an hour ago), out of the racy window."""
    then = time.time_ns() - ns
    os.utime(path, ns=(then, then))


def rewrite_keeping_stat(path: Path, offset: int = -4) -> None:
    """Change one byte in place: same inode, same size, and the old mtime put back."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(os.urandom(1 << 16))
    age(path)
    return path


def state_rows() -> list[dict]:
    return FileHashState(Path(os.environ["WORKBENCH_HASH_STATE"])).rows()


def test_a_fresh_process_takes_an_unchanged_files_hash_from_the_state_table(weights):
    original = child_sha256(weights)
    assert original == read_sha256(weights)
    [row] = state_rows()
    stat = weights.stat()
    assert (row["path"], row["inode"], row["size"], row["mtime_ns"], row["sha256"]) == (
        str(weights), stat.st_ino, stat.st_size, stat.st_mtime_ns, original
    )
    rewrite_keeping_stat(weights)
    assert child_sha256(weights) == original, "the second process read the file instead of the state table"
    assert read_sha256(weights) != original  # the bytes did change: only a read would have seen it


def _touch(path: Path) -> None:
    os.utime(path)  # now: a new mtime, same bytes


def _same_size_new_mtime(path: Path) -> None:
    rewrite_keeping_stat(path)
    age(path, HOUR_NS // 2)


def _new_size_old_mtime(path: Path) -> None:
    mtime = path.stat().st_mtime_ns
    with open(path, "ab") as handle:
        handle.write(b"more")
    os.utime(path, ns=(mtime, mtime))


def _replaced_by_a_new_inode(path: Path) -> None:
    stat = path.stat()
    twin = path.with_name("twin")
    twin.write_bytes(os.urandom(stat.st_size))
    os.utime(twin, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(twin, path)  # same path, size and mtime: only the inode tells


@pytest.mark.parametrize(
    "change", [_touch, _same_size_new_mtime, _new_size_old_mtime, _replaced_by_a_new_inode],
    ids=["touched", "same-size-new-mtime", "new-size-old-mtime", "new-inode"],
)
def test_a_changed_file_is_hashed_again(weights, change):
    child_sha256(weights)
    change(weights)
    if change is _touch:
        age(weights, HOUR_NS // 3)  # a file touched this very moment is racy: see the next test
    assert child_sha256(weights) == read_sha256(weights)
    [row] = state_rows()  # one row per path: the latest state replaced the old one
    now = weights.stat()
    assert (row["inode"], row["size"], row["mtime_ns"]) == (now.st_ino, now.st_size, now.st_mtime_ns)


def test_a_file_modified_moments_ago_is_not_remembered_between_processes(tmp_path):
    fresh = tmp_path / "just-written.bin"
    fresh.write_bytes(b"x" * 100)  # a same-size write within its mtime tick could follow unseen
    assert child_sha256(fresh) == read_sha256(fresh)
    assert state_rows() == []
    age(fresh)
    child_sha256(fresh)
    assert [row["path"] for row in state_rows()] == [str(fresh)]


def test_without_a_usable_state_table_files_are_read(weights, tmp_path):
    truth = read_sha256(weights)
    child_sha256(weights, WORKBENCH_HASH_STATE="off")
    assert not Path(os.environ["WORKBENCH_HASH_STATE"]).exists()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert child_sha256(weights, WORKBENCH_HASH_STATE=str(blocked / "state.sqlite")) == truth  # cannot be created
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"this is no database" * 100)
    assert child_sha256(weights, WORKBENCH_HASH_STATE=str(damaged)) == truth  # rebuilt...
    rewrite_keeping_stat(weights)
    assert child_sha256(weights, WORKBENCH_HASH_STATE=str(damaged)) == truth  # ...and used


def test_processes_starting_on_a_new_state_file_at_once_all_remember(tmp_path):
    files = []
    for number in range(4):
        path = tmp_path / f"shard-{number}.bin"
        path.write_bytes(os.urandom(4096))
        age(path)
        files.append(path)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", HASH_IN_A_CHILD, str(path)], env=subprocess_env(), stdout=subprocess.PIPE, text=True
        )
        for path in files
    ]
    printed = [child.communicate(timeout=120)[0].strip() for child in children]
    assert printed == [read_sha256(path) for path in files]
    assert sorted(row["path"] for row in state_rows()) == sorted(map(str, files))


# ---- through `workbench run` --------------------------------------------------------------------


def test_a_cached_rerun_in_a_fresh_process_does_not_read_the_weights(tiny_model_dir, tmp_path, store_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("bert"), model)
    for path in model.iterdir():
        age(path)
    steps = {"evaluate": {"kind": "evaluate", "dataset": "dev"}}
    recipe_file = write_yaml(tmp_path / "r.yaml", recipe(model, datasets={"dev": agreement(16, 2)}, steps=steps))

    def run(**env: str) -> dict:
        done = cli_subprocess("run", recipe_file, "--store", store_dir, "-q", **env)
        assert done.code == 0, done.text
        shown = run_json(store_dir)
        return {"status": statuses(shown)["evaluate"], "key": shown["steps"][0]["key"]}

    first = run()
    assert first["status"] == "done"
    rewrite_keeping_stat(model / "model.safetensors")  # the lowest byte of the last weight
    assert run() == {"status": "cached", "key": first["key"]}, "the rerun read the weights"
    read_now = run(WORKBENCH_HASH_STATE="off")  # the same rerun hashing every file
    assert read_now["status"] == "done" and read_now["key"] != first["key"]
    _touch(model / "model.safetensors")
    age(model / "model.safetensors", HOUR_NS // 2)
    assert run() == {"status": "cached", "key": read_now["key"]}  # a new mtime: hashed again, the new bytes' entry


# ---- cache reads: sizes always, hashes of the small files ---------------------------------------


KEY = "cd" * 32


def entry_with_a_blob(root: Path, blob_bytes: int) -> Cache:
    import torch

    from workbench.step_result import StepResult

    cache = Cache(root)
    staging = cache.staging_dir(KEY)
    (staging / "files" / "blob.bin").write_bytes(os.urandom(blob_bytes))
    cache.commit(KEY, staging, StepResult(metrics={"accuracy": 0.5}, head_scores={"s": torch.ones(2, 4)}))
    return cache


def test_a_cache_read_checks_every_size_but_hashes_only_what_fits_the_budget(tmp_path):
    cache = entry_with_a_blob(tmp_path / "cache", 1 << 20)
    entry = cache.entry_dir(KEY)
    rewrite_keeping_stat(entry / "files" / "blob.bin", 1 << 19)
    cache.verify(KEY, hash_bytes=1 << 16)  # the blob (1 MiB) is over the budget: checked by size
    with pytest.raises(CorruptEntry, match="blob.bin does not match its hash"):
        cache.verify(KEY)  # workbench verify's check
    rewrite_keeping_stat(entry / "tensors.safetensors")  # small: within the budget
    with pytest.raises(CorruptEntry, match="tensors.safetensors does not match its hash"):
        cache.verify(KEY, hash_bytes=1 << 16)


def test_a_big_damaged_file_passes_a_run_but_not_workbench_verify(tmp_path, monkeypatch):
    import workbench.cache

    store = tmp_path / "store"
    cache = entry_with_a_blob(store / "cache", 1 << 20)
    monkeypatch.setattr(workbench.cache, "HASH_ON_READ_BYTES", 1 << 16)  # a 1 MiB blob stands for a saved model
    rewrite_keeping_stat(cache.entry_dir(KEY) / "files" / "blob.bin", 1 << 19)
    result, _ = cache.load(KEY)
    assert result.metrics == {"accuracy": 0.5}
    (cache.entry_dir(KEY) / "files" / "blob.bin").open("ab").write(b"!")
    with pytest.raises(CorruptEntry, match="blob.bin has 1048577 bytes, expected 1048576"):
        cache.load(KEY)  # sizes are always checked

    cache = entry_with_a_blob(tmp_path / "other" / "cache", 1 << 20)
    rewrite_keeping_stat(cache.entry_dir(KEY) / "files" / "blob.bin", 1 << 19)
    report = verify(tmp_path / "other")  # what `workbench verify` runs
    assert [damage.problem for damage in report.damaged] == ["files/blob.bin does not match its hash"]
    assert not cache.has(KEY)  # discarded: recomputed the next time a recipe needs it
