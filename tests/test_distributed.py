"""Data-parallel runs for real: 2 gloo processes on CPU give what 1 process gives.

Every data-parallel step kind runs in one recipe, once as one process and once as `--processes 2`
(torch's elastic launcher, as torchrun), in separate stores; the results must agree: metrics
exactly (timings aside), scores within float tolerance, features bit for bit, and the cache keys
are the same (the world size is provenance, not input). A rank killed mid-run fails the run
without leaving a half-written cache entry, and the next run resumes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import SHARED_DATA, minilm_path, tiny_config
from tests.helpers import (
    REPO,
    agreement,
    cli,
    cli_subprocess,
    entry_dir,
    keys,
    recipe,
    results,
    run_json,
    statuses,
    steps_by_id,
    subprocess_env,
    write_yaml,
)

TREEBANK = SHARED_DATA / "ud_english_ewt" / "en_ewt-ud-dev.conllu"
FUNCTIONS = SHARED_DATA / "cpython_stdlib_functions" / "functions.jsonl"
DATASETS = {
    "dev": agreement(45, 2),  # odd sizes: ranks get unequal shares
    "tb": {"path": "conllu", "data_files": str(TREEBANK), "limit": 23},
    "code": {"path": "python_code", "data_files": str(FUNCTIONS), "partition": "test", "limit": 7, "max_length": 96},
}
STEPS = {
    "extract": {"kind": "extract", "dataset": "dev", "pooling": "mean", "shard_size": 20, "batch_size": 4},
    "extract_tokens": {"kind": "extract", "dataset": "dev", "pooling": "none", "shard_size": 16, "batch_size": 4},
    "extract_tb": {"kind": "extract", "dataset": "tb", "pooling": "first", "shard_size": 10, "batch_size": 4},
    "importance": {"kind": "importance", "dataset": "dev", "batch_size": 8, "entropy": True},
    "importance_groups": {"kind": "importance", "dataset": "dev", "granularity": "batch", "batch_size": 16, "micro_batch_size": 4},
    "evaluate": {"kind": "evaluate", "dataset": "dev", "batch_size": 8},
    "attention": {"kind": "attention", "dataset": "dev", "batch_size": 8, "save_maps": 3},
    "mask_search": {"kind": "mask_search", "dataset": "dev", "amount": 0.25, "threshold": 0.5, "batch_size": 8},
    "prune_curve": {"kind": "prune_curve", "dataset": "dev", "percents": [0, 25, 50], "batch_size": 8},
    "head_ablation": {"kind": "head_ablation", "dataset": "dev", "batch_size": 8},
    "syntax_heads": {"kind": "syntax_heads", "dataset": "tb", "min_count": 1, "js_sentences": 6, "batch_size": 4},
    "cat": {"kind": "cat_probe", "dataset": "code", "per_head": True, "batch_size": 2},
    "probe": {"kind": "probe", "task": "upos", "train": "extract_tb", "dev": "extract_tb", "epochs": 3, "batch_size": None},
}
EXACT_METRICS = ("accuracy", "f1", "f1_macro", "f1_micro", "mcc", "examples", "sentences", "words", "heads")


def _run(recipe_file: Path, store: Path, *extra: str) -> None:
    done = cli_subprocess("run", recipe_file, "--store", store, "-q", *extra, timeout=600)
    assert done.code == 0, done.text


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    recipe_file = write_yaml(folder / "every.yaml", recipe(tiny_model_dir("bert"), name="every", datasets=DATASETS, steps=STEPS))
    one, two = folder / "one", folder / "two"
    _run(recipe_file, one)
    _run(recipe_file, two, "--processes", "2")
    return recipe_file, one, two


def test_two_processes_give_the_results_of_one(two_runs):
    _, one, two = two_runs
    first, second = run_json(one), run_json(two)
    assert statuses(second) == {step: "done" for step in STEPS}
    assert keys(first) == keys(second)  # the world size is not in any cache key
    expected, got = results(first), results(second)
    for step in STEPS:
        for name, value in expected[step]["metrics"].items():
            if name.startswith(EXACT_METRICS):
                assert got[step]["metrics"][name] == value, (step, name)
            elif "seconds" not in name and not name.endswith("_s"):
                assert got[step]["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), (step, name)
        for kind in ("head_scores", "layer_scores"):
            assert set(got[step][kind]) == set(expected[step][kind]), (step, kind)
            for name, values in expected[step][kind].items():
                np.testing.assert_allclose(
                    np.asarray(got[step][kind][name], dtype=float), np.asarray(values, dtype=float),
                    rtol=1e-6, atol=1e-6, err_msg=f"{step}.{name}",
                )


def test_normalised_importance_within_one_in_a_million(two_runs):
    _, one, two = two_runs
    for step in ("importance", "importance_groups"):
        a = np.asarray(steps_by_id(run_json(one))[step]["head_scores"]["importance"], dtype=float)
        b = np.asarray(steps_by_id(run_json(two))[step]["head_scores"]["importance"], dtype=float)
        assert np.nanmax(np.abs(a - b)) <= 1e-6
        assert np.nanmax(a) == 1.0 and np.nanmin(a) == 0.0  # really the normalised scores


def test_features_are_bit_identical_and_in_dataset_order(two_runs):
    _, one, two = two_runs
    first, second = steps_by_id(run_json(one)), steps_by_id(run_json(two))
    for step in ("extract", "extract_tokens", "extract_tb"):
        key = first[step]["key"]
        folder_one, folder_two = entry_dir(one, key) / "files" / "features", entry_dir(two, key) / "files" / "features"
        names = sorted(path.name for path in folder_one.iterdir())
        assert names == sorted(path.name for path in folder_two.iterdir())  # no rank parts left behind
        assert all(".part" not in name for name in names) and len(names) > 1
        for name in names:
            a, b = load_file(str(folder_one / name)), load_file(str(folder_two / name))
            assert a.keys() == b.keys()
            for tensor in a:
                assert torch.equal(a[tensor], b[tensor]), (step, name, tensor)


def test_the_run_records_its_world_size(two_runs):
    _, one, two = two_runs
    import workbench as wb

    def world_size(store: Path) -> int:
        from workbench.db.store import Store

        db = Store.open(store)
        return db.get_run(db.list_runs(1)[0].id).environment["world_size"]

    assert world_size(one) == 1 and world_size(two) == 2
    assert len(wb.open_store(two).runs()) == 1  # rank 1 records nothing of its own


def test_a_cached_rerun_with_two_processes_loads_everything(two_runs):
    recipe_file, _, two = two_runs
    _run(recipe_file, two, "--processes", "2")
    assert set(statuses(run_json(two)).values()) == {"cached"}


def test_finetune_with_ddp_matches_one_process(tmp_path):
    """No dropout, so one process and two DDP ranks take the same optimizer steps on the same batches.

    Two batches (of 15: the ranks' shares are unequal) per optimizer step: gradients are held back
    with accelerate's no_sync until the group's last batch, weighted by examples."""
    import transformers

    config = tiny_config("bert")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(model_dir)
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(model_dir)
    steps = {
        "finetune": {"kind": "finetune", "dataset": "train", "max_steps": 3, "batch_size": 15, "accumulate": 2, "lr": 1e-3},
        "evaluate": {"kind": "evaluate", "model": "finetune", "dataset": "dev", "batch_size": 16},
    }
    recipe_file = write_yaml(tmp_path / "ft.yaml", recipe(model_dir, name="ft", datasets={"train": agreement(61, 1), "dev": agreement(40, 2)}, steps=steps))
    _run(recipe_file, tmp_path / "one")
    # Launched the way torchrun users do it: the module entry point, not --processes.
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "workbench", "run", str(recipe_file), "--store", str(tmp_path / "two"), "-q"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    one, two = steps_by_id(run_json(tmp_path / "one")), steps_by_id(run_json(tmp_path / "two"))
    assert one["finetune"]["metrics"]["steps"] == two["finetune"]["metrics"]["steps"] == 3
    assert one["finetune"]["metrics"]["epochs"] == 1.0  # 61 examples: 5 batches, in groups of 2, 2 and the last 1
    assert two["finetune"]["metrics"]["train_loss"] == pytest.approx(one["finetune"]["metrics"]["train_loss"], rel=1e-4)
    for name in ("accuracy", "mcc", "f1_macro"):
        assert two["evaluate"]["metrics"][name] == one["evaluate"]["metrics"][name], name
    weights_one = load_file(str(entry_dir(tmp_path / "one", one["finetune"]["key"]) / "files" / "model" / "model.safetensors"))
    weights_two = load_file(str(entry_dir(tmp_path / "two", two["finetune"]["key"]) / "files" / "model" / "model.safetensors"))
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def _rank_process(launcher: psutil.Process, rank: str) -> psutil.Process | None:
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get("RANK") == rank and "workbench" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def test_a_rank_that_dies_fails_the_run_cleanly_and_the_next_run_resumes(tiny_model_dir, tmp_path):
    steps = {
        "evaluate": {"kind": "evaluate", "dataset": "dev", "batch_size": 8},
        "importance": {"kind": "importance", "dataset": "big", "batch_size": 2, "granularity": "token"},
    }
    datasets = {"dev": agreement(24, 2), "big": agreement(3000, 3)}
    recipe_file = write_yaml(tmp_path / "r.yaml", recipe(tiny_model_dir("bert"), name="dies", datasets=datasets, steps=steps))
    store = tmp_path / "store"
    env = subprocess_env()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", str(recipe_file), "--store", str(store), "-q", "--processes", "2"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        parent = psutil.Process(launcher.pid)
        deadline = time.monotonic() + 120
        victim = None
        while time.monotonic() < deadline and launcher.poll() is None:
            victim = _rank_process(parent, "1")
            if victim is not None and _importance_started(store):
                break
            time.sleep(0.2)
        assert victim is not None, "rank 1 never started"
        time.sleep(1.0)  # well inside the importance step
        victim.send_signal(signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode not in (0, None)
    assert "Traceback" not in stderr, stderr[-2000:]
    run = run_json(store)
    assert run["status"] == "failed", run["status"]
    assert "another process of this run failed" in (run.get("error") or "")
    by_id = steps_by_id(run)
    assert by_id["evaluate"]["status"] == "done"
    assert by_id["importance"]["status"] == "failed"
    assert not (entry_dir(store, by_id["importance"]["key"]) / "manifest.json").exists()
    # The next run (one process, smaller: the same evaluate key) resumes from the cache.
    resumed = cli("run", recipe_file, "--store", store, "-q", "--set", "datasets.big.limit=40")
    assert resumed.code == 0, resumed.text
    assert statuses(run_json(store))["evaluate"] == "cached"


def _importance_started(store: Path) -> bool:
    """Whether the run has reached the importance step (its row exists in the store)."""
    import sqlite3

    database = store / "workbench.sqlite"
    if not database.exists():
        return False
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            rows = connection.execute("select count(*) from steps where step_id = 'importance'").fetchone()
    except sqlite3.Error:
        return False
    return bool(rows and rows[0])


def test_bad_process_counts_are_usage_errors(tiny_model_dir, tmp_path):
    recipe_file = write_yaml(tmp_path / "r.yaml", recipe(tiny_model_dir("bert")))
    for value in ("0", "two", "-1", "100000"):
        result = cli("run", recipe_file, "--store", tmp_path / "s", "--processes", value)
        assert result.code == 2, (value, result.text)
        assert "--processes" in result.text and "Traceback" not in result.text
    assert not (tmp_path / "s").exists()  # refused before a store was made
