"""The cache under stress: entries that match their manifest yet cannot be loaded, two processes
committing one key, and a step that another process is computing (waited for, not computed twice).

Processes are real: `workbench run` children (tests/helpers.start_cli), lock holders that are
killed with SIGKILL, commits racing from separate interpreters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import REPO, agreement, cli, entry_dir, recipe, run_json, start_cli, statuses, steps_by_id, write_yaml
from workbench.cache import MANIFEST, Cache, CorruptEntry
from workbench.hashing import read_sha256
from workbench.processes import LockFile, process_start_time

KEY = "ab" * 32


def small_result(**metrics: float):
    import torch

    from workbench.step_result import StepResult

    return StepResult(
        metrics=metrics or {"accuracy": 0.5},
        head_scores={"importance": torch.arange(8, dtype=torch.float32).reshape(2, 4)},
        layer_scores={"norm": torch.ones(2)},
        data={"curve": [1, 2, 3]},
    )


def rewrite_manifest(entry: Path) -> None:
    """Make the manifest describe the files as they are now: the damage then passes the hash check."""
    files = sorted(p for p in entry.rglob("*") if p.is_file() and p.name != MANIFEST)
    items = [{"path": str(p.relative_to(entry)), "bytes": p.stat().st_size, "sha256": read_sha256(p)} for p in files]
    (entry / MANIFEST).write_text(json.dumps(items))


def _set_json(path: Path, value) -> None:
    path.write_text(json.dumps(value))


def _edit_result(change):
    def edit(entry: Path) -> None:
        summary = json.loads((entry / "result.json").read_text())
        change(summary)
        _set_json(entry / "result.json", summary)
    return edit


def _garbage_header(entry: Path) -> None:
    path = entry / "tensors.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"{not json at all, not a header!!"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, rewrite, reported",
    [
        (lambda e: _set_json(e / "result.json", [1, 2]), True, "result.json is not an object"),
        (_edit_result(lambda s: s.pop("metrics")), True, "result.json lacks metrics"),
        (_edit_result(lambda s: s["metrics"].update(accuracy="high")), True, "metrics that are not numbers"),
        (_edit_result(lambda s: s.update(head_scores=["importance", "ghost"])), True, "but tensors.safetensors holds"),
        (lambda e: _set_json(e / MANIFEST, []), False, "empty or malformed manifest"),
        (lambda e: _set_json(e / MANIFEST, {"result.json": 1}), False, "empty or malformed manifest"),
        (lambda e: _set_json(e / MANIFEST, [{"path": "../../../etc/hostname", "bytes": 1, "sha256": "0" * 64}]), False,
         "a path outside the entry"),
        (lambda e: _set_json(e / MANIFEST, [{"path": "result.json"}]), False, "malformed manifest item"),
        (_garbage_header, True, "tensors.safetensors cannot be read"),
        (lambda e: (e / "tensors.safetensors").write_bytes(b"\xff" * 8 + b"{}"), True, "tensors.safetensors cannot be read"),
    ],
    ids=["result-list", "no-metrics", "text-metric", "ghost-tensor", "empty-manifest", "manifest-object",
         "path-escape", "manifest-item", "header-garbage", "header-length"],
)
def test_an_entry_that_matches_its_manifest_but_cannot_be_loaded_is_corrupt(tmp_path, damage, rewrite, reported):
    cache = Cache(tmp_path / "cache")
    cache.commit(KEY, cache.staging_dir(KEY), small_result())
    entry = cache.entry_dir(KEY)
    damage(entry)
    if rewrite:
        rewrite_manifest(entry)
    with pytest.raises(CorruptEntry, match=reported):
        cache.load(KEY)


def test_an_intact_entry_loads_back(tmp_path):
    cache = Cache(tmp_path / "cache")
    committed = cache.commit(KEY, cache.staging_dir(KEY), small_result(accuracy=0.75))
    assert committed.won
    result, manifest = cache.load(KEY)
    assert manifest == committed.manifest
    assert result.metrics == {"accuracy": 0.75} and result.data == {"curve": [1, 2, 3]}
    assert result.head_scores["importance"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


# ---- through the executor: discarded, recomputed, recorded ----------------------------------------


@pytest.fixture
def extract_recipe(tiny_model_dir, tmp_path) -> Path:
    steps = {"extract": {"kind": "extract", "dataset": "dev", "pooling": "first"}}
    return write_yaml(tmp_path / "extract.yaml", recipe(tiny_model_dir("bert"), datasets={"dev": agreement(16, 2)}, steps=steps))


@pytest.mark.parametrize(
    "damage, reported",
    [
        (lambda e: (_set_json(e / "result.json", ["not", "a", "result"]), rewrite_manifest(e)), "result.json is not an object"),
        (lambda e: _set_json(e / MANIFEST, []), "empty or malformed manifest"),
        (lambda e: (_garbage_header(e), rewrite_manifest(e)), "tensors.safetensors cannot be read"),
    ],
    ids=["result-shape", "empty-manifest", "safetensors-header"],
)
def test_an_unloadable_entry_is_recomputed_and_the_warning_recorded(extract_recipe, store_dir, damage, reported):
    first = cli("run", extract_recipe, "--store", store_dir, "-q")
    assert first.code == 0, first.text
    base = run_json(store_dir)
    key = base["steps"][0]["key"]
    damage(entry_dir(store_dir, key))

    for attempt in range(2):  # the damage is repaired by the first rerun, not met on every later one
        rerun = cli("run", extract_recipe, "--store", store_dir, "-q")
        assert rerun.code == 0 and "Traceback" not in rerun.text, rerun.text
        shown = run_json(store_dir)
        step = steps_by_id(shown)["extract"]
        if attempt == 0:
            assert reported in rerun.text and "recomputing" in rerun.text
            assert step["status"] == "done"
            assert any(reported in warning for warning in step["data"]["warnings"])
            assert step["layer_scores"] == steps_by_id(base)["extract"]["layer_scores"]
            shown_text = cli("show", "latest", "--store", store_dir, "--step", "extract").text
            assert "warning:" in shown_text and reported in shown_text
        else:
            assert step["status"] == "cached" and "warnings" not in step["data"]


# ---- two processes, one key ------------------------------------------------------------------------

COMMIT_AT_ONCE = """
import json, sys, time
from pathlib import Path
import torch
from workbench.cache import Cache
from workbench.step_result import StepResult
root, key, who, go = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
cache = Cache(Path(root))
staging = cache.staging_dir(key)
result = StepResult(metrics={"who": who}, head_scores={"h": torch.full((2, 2), who)})
(staging / "files" / "weights.bin").write_bytes(bytes([int(who)]) * 1000)
Path(f"{go}.ready.{who}").touch()
while not go.exists():
    time.sleep(0.001)
committed = cache.commit(key, staging, result)
print(json.dumps({"won": committed.won, "manifest": [vars(f) for f in committed.manifest],
                  "metrics": committed.result.metrics, "h": committed.result.head_scores["h"].tolist()}))
"""


def test_the_process_that_loses_the_commit_race_gets_the_winners_entry(tmp_path):
    root = tmp_path / "cache"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen([sys.executable, "-c", COMMIT_AT_ONCE, str(root), KEY, str(who), str(go)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for who in (1.0, 2.0, 3.0)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.ready.*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outcomes = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outcomes.append(json.loads(out))
    assert sorted(outcome["won"] for outcome in outcomes) == [False, False, True]
    winner = next(outcome for outcome in outcomes if outcome["won"])
    on_disk, manifest = Cache(root).load(KEY)
    for outcome in outcomes:  # everyone describes the entry that is in the cache
        assert outcome["manifest"] == [vars(f) for f in manifest]
        assert outcome["metrics"] == winner["metrics"] == on_disk.metrics
        assert outcome["h"] == on_disk.head_scores["h"].tolist()
    assert not list((root / "tmp").iterdir()), "a loser left its staging folder"


# ---- the executor and other processes computing the same step ---------------------------------------


@pytest.fixture
def finetune_recipe(tiny_model_dir, tmp_path):
    """A one-step recipe whose step takes a few seconds (the window other processes act in)."""

    def make(max_steps: int = 300) -> tuple[Path, str]:
        from workbench.plan import build_plan
        from workbench.recipe.loader import load_recipe

        steps = {"finetune": {"kind": "finetune", "dataset": "train", "max_steps": max_steps, "batch_size": 8}}
        path = write_yaml(tmp_path / f"finetune-{max_steps}.yaml",
                          recipe(tiny_model_dir("bert"), datasets={"train": agreement(32, 1)}, steps=steps))
        return path, build_plan(load_recipe(path)).steps[0].key

    return make


def commit_entry(store_dir: Path, key: str, **metrics: float) -> list:
    """Commit an entry for `key` from this process, ignoring locks (as an older workbench would)."""
    cache = Cache(store_dir / "cache")
    return cache.commit(key, cache.staging_dir(key), small_result(**metrics)).manifest


def wait_for(condition, child: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            pytest.fail(f"the run exited before {what} ({child.returncode}): {child.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def recorded_artifacts(step: dict) -> list[tuple[str, str, int]]:
    return sorted((a["name"], a["sha256"], a["bytes"]) for a in step["artifacts"])


def manifest_rows(manifest) -> list[tuple[str, str, int]]:
    return sorted((f.path, f.sha256, f.bytes) for f in manifest)


def finish(child: subprocess.Popen, timeout: float = 300) -> str:
    try:
        _, err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err[-3000:]
    return err


def test_a_run_that_loses_the_commit_race_records_the_entry_that_won(finetune_recipe, store_dir):
    path, key = finetune_recipe(150)
    child = start_cli("run", path, "--store", store_dir, "-q")
    try:
        staging = store_dir / "cache" / "tmp"
        wait_for(lambda: any(staging.glob(f"*-{child.pid}-*")), child, "the child began computing")
        theirs = commit_entry(store_dir, key, final_loss=123.0)  # lands while the child trains
    finally:
        err = finish(child)
    assert "another process cached this step first" in err
    step = steps_by_id(run_json(store_dir))["finetune"]
    assert step["status"] == "done" and step["metrics"] == {"final_loss": 123.0}
    _, on_disk = Cache(store_dir / "cache").load(key)
    assert recorded_artifacts(step) == manifest_rows(on_disk) == manifest_rows(theirs)
    assert any("cached this step first" in w for w in step["data"]["warnings"])


def test_two_identical_runs_compute_the_step_once(finetune_recipe, store_dir):
    path, key = finetune_recipe(300)
    first = start_cli("run", path, "--store", store_dir, "-q")
    second = start_cli("run", path, "--store", store_dir, "-q")
    errors = {first.pid: finish(first), second.pid: finish(second)}
    listed = cli("runs", "--json", "--store", store_dir).json()
    runs = [run_json(store_dir, r["id"]) for r in listed]
    assert sorted(statuses(run)["finetune"] for run in runs) == ["cached", "done"]
    waiter = next(run for run in runs if statuses(run)["finetune"] == "cached")
    computer = next(run for run in runs if statuses(run)["finetune"] == "done")
    waiter_err = [err for err in errors.values() if "waiting for pid" in err]
    assert len(waiter_err) == 1, errors
    _, manifest = Cache(store_dir / "cache").load(key)
    for run in (waiter, computer):
        step = steps_by_id(run)["finetune"]
        assert recorded_artifacts(step) == manifest_rows(manifest)
    assert steps_by_id(waiter)["finetune"]["metrics"] == steps_by_id(computer)["finetune"]["metrics"]
    assert not list((store_dir / "cache" / "locks").glob("*.lock"))


def test_a_waiting_run_loads_what_the_lock_holder_commits(finetune_recipe, store_dir, tmp_path):
    """This test process holds the lock, as a run computing the step would; the child waits for it."""
    path, key = finetune_recipe(2)
    lock = LockFile(Cache(store_dir / "cache").lock_path(key))
    assert lock.acquire() is None
    child = start_cli("run", path, "--store", store_dir, "-q")
    try:
        wait_for(lambda: _step_status(store_dir, "finetune") == "running", child, "the child reached the step")
        time.sleep(1.0)  # it is waiting, not computing: no staging folder of its own
        assert not any((store_dir / "cache" / "tmp").glob(f"*-{child.pid}-*"))
        commit_entry(store_dir, key, final_loss=7.0)
        lock.release()
    finally:
        err = finish(child)
    assert f"waiting for pid {os.getpid()}" in err
    step = steps_by_id(run_json(store_dir))["finetune"]
    assert step["status"] == "cached" and step["metrics"] == {"final_loss": 7.0}


def test_a_lock_whose_holder_is_killed_is_broken(finetune_recipe, store_dir):
    path, key = finetune_recipe(2)
    holder = subprocess.Popen([sys.executable, "-c", SLEEPER_HOLDS_LOCK, str(Cache(store_dir / "cache").lock_path(key))],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    child = start_cli("run", path, "--store", store_dir, "-q")
    try:
        wait_for(lambda: _step_status(store_dir, "finetune") == "running", child, "the child reached the step")
        time.sleep(1.0)
        assert _step_status(store_dir, "finetune") == "running"  # still waiting for the live holder
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
        err = finish(child)
    assert f"waiting for pid {holder.pid}" in err
    assert statuses(run_json(store_dir)) == {"finetune": "done"}
    assert not Path(Cache(store_dir / "cache").lock_path(key)).exists()


def test_a_lock_left_by_a_dead_process_does_not_delay_a_run(finetune_recipe, store_dir):
    path, key = finetune_recipe(2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    started = process_start_time()  # any start time: the pid no longer exists
    lock_path = Cache(store_dir / "cache").lock_path(key)
    lock_path.parent.mkdir(parents=True)
    from workbench.processes import HOST

    lock_path.write_text(json.dumps({"host": HOST, "pid": dead.pid, "started": started, "since": time.time() - 60}))
    result = cli("run", path, "--store", store_dir, "-q")
    assert result.code == 0 and "waiting" not in result.text, result.text
    assert statuses(run_json(store_dir)) == {"finetune": "done"}
    assert not lock_path.exists()


SLEEPER_HOLDS_LOCK = """
import sys, time
from pathlib import Path
from workbench.processes import LockFile
assert LockFile(Path(sys.argv[1])).acquire() is None
print("locked", flush=True)
time.sleep(600)
"""


def _step_status(store: Path, step_id: str) -> str | None:
    if not (store / "workbench.sqlite").exists():
        return None
    shown = cli("show", "latest", "--store", store, "--json")
    return statuses(shown.json()).get(step_id) if shown.code == 0 else None


def test_lock_files_name_their_holder_and_only_the_holder_releases(tmp_path):
    path = tmp_path / "locks" / f"{uuid.uuid4().hex}.lock"
    mine = LockFile(path)
    assert mine.acquire() is None
    other = LockFile(path)
    holder = other.acquire()
    assert holder is not None and holder.pid == os.getpid() and holder.alive()
    other.release()  # never held: does nothing
    assert path.exists()
    mine.release()
    assert not path.exists()
