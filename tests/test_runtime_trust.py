"""Half-precision fine-tuning with float32 master weights (issue 7.9) and runs whose process id was
reused (7.10)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import agreement, recipe, write_yaml
from workbench.db.store import Store
from workbench.executor import run_recipe
from workbench.progress import SilentProgress
from workbench.recipe.loader import load_recipe


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_finetune_keeps_float32_master_weights(tiny_model_dir, tmp_path, store_dir, dtype):
    """An update of lr 1e-6 is below fp16's resolution at the weights' scale: fp16 weights would not move."""
    from safetensors.torch import load_file

    model_dir = tiny_model_dir("bert")
    steps = {"finetune": {"kind": "finetune", "dataset": "train", "max_steps": 2, "batch_size": 8, "lr": 1e-6, "warmup_ratio": 0}}
    document = recipe(model_dir, datasets={"train": agreement(16, 1)}, steps=steps)
    document["model"]["dtype"] = dtype
    outcome = run_recipe(load_recipe(write_yaml(tmp_path / "r.yaml", document)), store_dir, progress=SilentProgress())
    result = outcome.step("finetune").result
    assert result.data["precision"] == f"{dtype} autocast, float32 master weights"
    assert ("final_loss_scale" in result.metrics) == (dtype == "float16")  # fp16 scales the loss
    trained = load_file(str(result.files_dir / "model" / "model.safetensors"))
    before = load_file(str(model_dir / "model.safetensors"))
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert trained[name].dtype == torch.float32
    moved = (trained[name] != before[name]).float().mean().item()
    assert moved > 0.9, f"only {moved:.0%} of the weights moved"


def _run_row(store: Store, pid: int, started: float | None) -> int:
    run_id = store.start_run(
        name="r", recipe_text="x", recipe_path=None, recipe_hash="h", seed=0, device="cpu", overrides=[], environment={}
    )
    from sqlalchemy import update

    from workbench.db.orm import SqlRun

    with store.session() as session:
        session.execute(update(SqlRun).where(SqlRun.id == run_id).values(pid=pid, pid_started=started))
    return run_id


def test_a_dead_run_whose_pid_was_reused_is_interrupted(tmp_path):
    """The run's process died and another process got its pid: the start time tells them apart."""
    from workbench.processes import process_start_time

    store = Store.open(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        started = process_start_time(sleeper.pid)
        assert started is not None
        reused = _run_row(store, sleeper.pid, started - 3600)  # recorded by a process of an hour ago
        alive = _run_row(store, sleeper.pid, started)  # recorded by this very process
        marked = store.mark_dead_runs()
        assert reused in marked and alive not in marked
        statuses = {run.id: run.status for run in store.list_runs()}
        assert statuses[reused] == "interrupted" and statuses[alive] == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert alive in store.mark_dead_runs()  # now it is gone


def test_a_store_of_the_previous_schema_gains_the_new_column(tmp_path):
    import sqlite3

    Store.open(tmp_path)
    database = tmp_path / "workbench.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("ALTER TABLE runs DROP COLUMN pid_started")
        columns = [row[1] for row in connection.execute("PRAGMA table_info(runs)")]
    assert "pid_started" not in columns
    store = Store.open(tmp_path)
    run_id = _run_row(store, 1, None)
    with sqlite3.connect(database) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(runs)")]
    assert "pid_started" in columns and store.get_run(run_id).summary.status == "running"
