"""The executor end to end on a tiny BERT: caching, re-running what changed, corruption, SIGKILL, concurrency, store.

The pipeline is finetune -> evaluate, attention, extract on generated agreement sentences. Runs go
through the real `workbench` entry point, in this process (fast) or as child processes where the
point is a process boundary (SIGKILL, two writers).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import (
    agreement,
    cli,
    entry_dir,
    keys,
    recipe,
    results,
    run_json,
    start_cli,
    statuses,
    steps_by_id,
    write_yaml,
)

ALL_STEPS = ("finetune", "evaluate", "attention", "extract")


@pytest.fixture
def pipeline(tiny_model_dir, tmp_path) -> Path:
    """The recipe file of the tiny finetune -> evaluate/attention/extract pipeline."""
    return write_yaml(tmp_path / "pipeline.yaml", recipe(tiny_model_dir("bert")))


def run_ok(recipe_file: Path, store: Path, *options: object) -> dict:
    """`workbench run` in this process; asserts success and returns `show latest --json`."""
    result = cli("run", recipe_file, "--store", store, "-q", *options)
    assert result.code == 0, result.text
    return run_json(store)


def model_sha256(run: dict) -> str:
    """The sha256 of the fine-tuned weights, as recorded in the store's artifacts."""
    artifacts = steps_by_id(run)["finetune"]["artifacts"]
    return next(a["sha256"] for a in artifacts if a["name"] == "files/model/model.safetensors")


def test_second_run_is_all_cached_with_identical_results(pipeline, store_dir):
    first = run_ok(pipeline, store_dir)
    assert statuses(first) == dict.fromkeys(ALL_STEPS, "done")
    assert first["status"] == "finished"
    second = run_ok(pipeline, store_dir)
    assert statuses(second) == dict.fromkeys(ALL_STEPS, "cached")
    assert keys(second) == keys(first)
    assert results(second, skip_metrics=()) == results(first, skip_metrics=())
    attention = steps_by_id(second)["attention"]["head_scores"]
    assert set(attention) >= {"entropy_smoothed", "self", "prev", "next", "first", "sep", "punct"}
    assert all(len(grid) == 2 and all(len(row) == 4 for row in grid) for grid in attention.values())


def test_an_edit_reruns_only_the_edited_step_and_what_depends_on_it(pipeline, store_dir):
    base = run_ok(pipeline, store_dir)
    cases = [
        ("steps.evaluate.batch_size=8", {"evaluate"}),
        ("datasets.dev.limit=32", {"evaluate", "attention", "extract"}),  # finetune reads `train`
        ("steps.finetune.lr=0.001", set(ALL_STEPS)),
        ("steps.attention.description=only words", set()),  # cosmetic: not part of any key
    ]
    for override, rerun in cases:
        edited = run_ok(pipeline, store_dir, "--set", override)
        expected = {step: "done" if step in rerun else "cached" for step in ALL_STEPS}
        assert statuses(edited) == expected, override
        for step in ALL_STEPS:
            assert (keys(edited)[step] == keys(base)[step]) == (step not in rerun), (override, step)
        if override.startswith("steps.evaluate.batch_size"):  # padding differs, the scores must not
            assert results(edited)["evaluate"] == results(base)["evaluate"]


def test_force_recomputes_and_dry_run_writes_nothing(pipeline, store_dir, tmp_path):
    base = run_ok(pipeline, store_dir)

    forced = run_ok(pipeline, store_dir, "--force", "attention")
    assert statuses(forced) == {**dict.fromkeys(ALL_STEPS, "cached"), "attention": "done"}
    assert results(forced) == results(base)

    # Forcing a step recomputes every step that reads it: the cached evaluate described the old model.
    plan = cli("run", pipeline, "--store", store_dir, "--dry-run", "--force", "finetune")
    assert {step: _dry_run_verdict(plan.out, step) for step in ALL_STEPS} == dict.fromkeys(ALL_STEPS, "run")
    downstream = run_ok(pipeline, store_dir, "--force", "finetune")
    assert statuses(downstream) == dict.fromkeys(ALL_STEPS, "done")

    bad = cli("run", pipeline, "--store", store_dir, "--force", "atention")
    assert bad.code == 2 and "did you mean 'attention'" in bad.text and "Traceback" not in bad.text

    files_before = _snapshot(store_dir)
    plan = cli("run", pipeline, "--store", store_dir, "--dry-run", "--set", "steps.evaluate.batch_size=8")
    assert plan.code == 0, plan.text
    would = {step: _dry_run_verdict(plan.out, step) for step in ALL_STEPS}
    assert would == {**dict.fromkeys(ALL_STEPS, "load from cache"), "evaluate": "run"}
    assert _snapshot(store_dir) == files_before

    fresh = tmp_path / "never-created"
    plan = cli("run", pipeline, "--store", fresh, "--dry-run")
    assert plan.code == 0, plan.text
    assert {step: _dry_run_verdict(plan.out, step) for step in ALL_STEPS} == dict.fromkeys(ALL_STEPS, "run")
    assert not fresh.exists()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


def _dry_run_verdict(table: str, step: str) -> str:
    row = next(line for line in table.splitlines() if f" {step} " in line)
    return "load from cache" if "load from cache" in row else "run" if " run " in row else row


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "step, damaged_file, damage, reported",
    [
        ("attention", "tensors.safetensors", _flip_a_byte, "does not match its hash"),
        ("finetune", "files/model/model.safetensors", _truncate, "bytes, expected"),
        ("evaluate", "result.json", lambda path: path.unlink(), "missing"),
        ("extract", "manifest.json", lambda path: path.unlink(), "incomplete"),
    ],
    ids=["flipped-tensors", "truncated-model-weights", "deleted-result", "deleted-manifest"],
)
def test_damaged_cache_entry_is_detected_and_recomputed(pipeline, store_dir, step, damaged_file, damage, reported):
    base = run_ok(pipeline, store_dir)
    damage(entry_dir(store_dir, keys(base)[step]) / damaged_file)

    result = cli("run", pipeline, "--store", store_dir, "-q")
    assert result.code == 0, result.text
    assert reported in result.text and "recomputing" in result.text and keys(base)[step][:12] in result.text
    again = run_json(store_dir)
    assert statuses(again) == {**dict.fromkeys(ALL_STEPS, "cached"), step: "done"}
    assert results(again) == results(base)
    assert model_sha256(again) == model_sha256(base)  # retraining from the seed gives the same weights

    healed = run_ok(pipeline, store_dir)
    assert statuses(healed) == dict.fromkeys(ALL_STEPS, "cached")


def test_sigkill_mid_step_loses_no_finished_step(tiny_model_dir, tmp_path, store_dir):
    slow = recipe(
        tiny_model_dir("bert"),
        datasets={"dev": agreement(64, 2)},
        steps={
            "extract": {"kind": "extract", "dataset": "dev"},
            "finetune": {"kind": "finetune", "dataset": "dev", "max_steps": 100_000, "batch_size": 8},
        },
    )
    recipe_file = write_yaml(tmp_path / "slow.yaml", slow)
    child = start_cli("run", recipe_file, "--store", store_dir, "-q")
    staging = store_dir / "cache" / "tmp"
    try:
        # extract is finished and finetune (100k steps) has begun writing into its staging folder.
        _wait_for(lambda: _step_status(store_dir, "extract") == "done" and any(staging.glob(f"*-{child.pid}-*")), child)
        assert _step_status(store_dir, "finetune") == "running"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
    run = run_json(store_dir)
    listed = cli("runs", "--json", "--store", store_dir)
    assert listed.code == 0, listed.text
    assert [(r["id"], r["status"]) for r in listed.json()] == [(run["id"], "interrupted")]
    assert statuses(run_json(store_dir, run["id"])) == {"extract": "done", "finetune": "interrupted"}

    resumed = run_ok(recipe_file, store_dir, "--set", "steps.finetune.max_steps=2")
    assert statuses(resumed) == {"extract": "cached", "finetune": "done"}
    assert resumed["status"] == "finished"
    assert not list(staging.glob(f"*-{child.pid}-*")), "the killed run's staging folder was kept"
    every_run = cli("runs", "--json", "--store", store_dir).json()
    assert [r["status"] for r in every_run] == ["finished", "interrupted"]
    for listed_run in every_run:
        assert "running" not in statuses(run_json(store_dir, listed_run["id"])).values()


def _step_status(store: Path, step_id: str) -> str | None:
    """The step's status in the latest run, read through `workbench show` (None before it exists)."""
    if not (store / "workbench.sqlite").exists():
        return None
    shown = cli("show", "latest", "--store", store, "--json")
    return statuses(shown.json()).get(step_id) if shown.code == 0 else None


def _wait_for(condition, child, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            pytest.fail(f"the run exited early ({child.returncode}): {child.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the child run")
        time.sleep(0.1)


def test_two_processes_share_one_store(pipeline, store_dir):
    """A child `workbench run` and this process write runs, steps, metrics and scores into one store at
    the same time, and race to cache the same finetune step."""
    child = start_cli("run", pipeline, "--store", store_dir, "-q", "--set", "steps.finetune.max_steps=60")
    try:
        # Start once the child is training (or past it, on a fast machine: then only later steps overlap).
        _wait_for(lambda: _step_status(store_dir, "finetune") in ("running", "done"), child)
        here = cli("run", pipeline, "--store", store_dir, "-q", "--set", "steps.finetune.max_steps=60",
                   "--set", "steps.evaluate.batch_size=8")
        _, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert here.code == 0, here.text
    listed = cli("runs", "--json", "--store", store_dir).json()
    assert sorted(r["status"] for r in listed) == ["finished", "finished"]
    runs = [run_json(store_dir, r["id"]) for r in listed]
    for run in runs:
        assert set(statuses(run)) == set(ALL_STEPS)
        assert set(statuses(run).values()) <= {"done", "cached"}
        by_id = steps_by_id(run)
        assert {"accuracy", "f1", "mcc"} <= set(by_id["evaluate"]["metrics"])
        assert len(by_id["attention"]["head_scores"]) >= 7
        assert set(by_id["extract"]["layer_scores"]) >= {"norm_mean", "anisotropy"}
    assert keys(runs[0])["finetune"] == keys(runs[1])["finetune"]
    assert keys(runs[0])["evaluate"] != keys(runs[1])["evaluate"]
    again = run_ok(pipeline, store_dir, "--set", "steps.finetune.max_steps=60")  # the race left a valid entry
    assert statuses(again) == dict.fromkeys(ALL_STEPS, "cached")


@pytest.fixture
def one_step(tiny_model_dir, tmp_path) -> Path:
    steps = {"extract": {"kind": "extract", "dataset": "dev", "pooling": "first"}}
    return write_yaml(tmp_path / "one-step.yaml", recipe(tiny_model_dir("bert"), datasets={"dev": agreement(16, 2)}, steps=steps))


def test_workbench_db_names_the_database(one_step, tmp_path, store_dir, monkeypatch):
    database = tmp_path / "elsewhere" / "team.sqlite"
    monkeypatch.setenv("WORKBENCH_DB", f"sqlite:///{database}")
    run_ok(one_step, store_dir)
    assert database.is_file()
    assert not (store_dir / "workbench.sqlite").exists()
    assert list((store_dir / "cache").glob("??/*/manifest.json")), "the cache still lives in the store folder"
    assert len(cli("runs", "--json", "--store", tmp_path / "any").json()) == 1  # the URL wins over --store
    monkeypatch.delenv("WORKBENCH_DB")
    other = cli("runs", "--json", "--store", tmp_path / "other")  # no database there: none is created
    assert other.code == 2 and "no store at" in other.text and not (tmp_path / "other").exists()


def test_workbench_home_and_store_option_name_the_folder(one_step, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    result = cli("run", one_step, "-q")
    assert result.code == 0, result.text
    assert (home / "workbench.sqlite").is_file() and (home / "cache").is_dir()
    assert not (tmp_path / "store").exists()
    explicit = tmp_path / "explicit"
    assert cli("run", one_step, "-q", "--store", explicit).code == 0  # --store wins over WORKBENCH_HOME
    assert (explicit / "workbench.sqlite").is_file()
    assert len(cli("runs", "--json").json()) == 1


def test_failing_step_is_recorded_and_earlier_steps_stay_cached(tiny_model_dir, tmp_path, store_dir):
    steps = {
        "extract": {"kind": "extract", "dataset": "dev"},
        "evaluate": {"kind": "evaluate", "dataset": "judged"},
    }
    datasets = {"dev": agreement(16, 2), "judged": agreement(16, 3, label="verdict")}
    recipe_file = write_yaml(tmp_path / "fails.yaml", recipe(tiny_model_dir("bert"), datasets=datasets, steps=steps))

    result = cli("run", recipe_file, "--store", store_dir, "-q")
    assert result.code == 2
    assert "Traceback" not in result.text
    assert "step 'evaluate' (evaluate) failed" in result.text and "no column 'verdict'" in result.text
    assert "its columns are: sentence, label" in result.text
    failed = run_json(store_dir)
    assert failed["status"] == "failed" and "verdict" in failed["error"]
    assert statuses(failed) == {"extract": "done", "evaluate": "failed"}
    assert "no column 'verdict'" in steps_by_id(failed)["evaluate"]["error"]

    fixed = run_ok(recipe_file, store_dir, "--set", "datasets.judged.label=label")
    assert statuses(fixed) == {"extract": "cached", "evaluate": "done"}
    assert fixed["status"] == "finished"


def test_the_seed_makes_fresh_runs_identical(pipeline, tmp_path):
    first = run_ok(pipeline, tmp_path / "a")
    second = run_ok(pipeline, tmp_path / "b")
    assert results(second) == results(first)
    assert model_sha256(second) == model_sha256(first)
    other_seed = run_ok(pipeline, tmp_path / "c", "--set", "seed=4")
    assert model_sha256(other_seed) != model_sha256(first)


def test_a_fully_cached_run_never_imports_torch(pipeline, store_dir):
    """Re-running an unchanged recipe reads the cache as numpy: no torch, no transformers."""
    import subprocess
    import sys

    run_ok(pipeline, store_dir)
    script = (
        "import sys\n"
        "from workbench.cli import main\n"
        f"sys.argv = ['workbench', 'run', {str(pipeline)!r}, '--store', {str(store_dir)!r}, '-q']\n"
        "try:\n    main()\nexcept SystemExit as exit_:\n    assert not exit_.code, exit_.code\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert statuses(run_json(store_dir)) == dict.fromkeys(ALL_STEPS, "cached")
