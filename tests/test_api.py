"""The Python API (issue 9, part 3): the README's example as a test, on a real store."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers import REPO, agreement, recipe, subprocess_env, write_yaml


@pytest.fixture
def api_recipe(tiny_model_dir, tmp_path):
    steps = {
        "finetune": {"kind": "finetune", "dataset": "train", "max_steps": 2, "batch_size": 16},
        "importance": {"kind": "importance", "model": "finetune", "dataset": "dev"},
        "extract": {"kind": "extract", "model": "finetune", "dataset": "dev", "shard_size": 10},
        "prune": {"kind": "prune", "model": "finetune", "dataset": "dev", "heads": {0: [1]}, "batch_sizes": [4],
                  "timing_examples": 8, "timing_rounds": 1},
    }
    document = recipe(tiny_model_dir("bert"), datasets={"train": agreement(32, 1), "dev": agreement(24, 2)}, steps=steps)
    return write_yaml(tmp_path / "api.yaml", document)


def test_the_readme_example(api_recipe, tmp_path):
    import workbench as wb

    store_dir = tmp_path / "store"
    run = wb.run_recipe(api_recipe, overrides=["datasets.dev.limit=20"], store=store_dir)
    assert run.status == "finished" and run.steps == ["finetune", "importance", "extract", "prune"]

    store = wb.open_store(store_dir)
    runs = store.runs()
    assert list(runs.columns[:6]) == ["id", "recipe", "status", "started", "duration_s", "device"]
    assert runs.iloc[0]["recipe"] == "tiny" and runs.iloc[0]["status"] == "finished"
    latest = store.run("latest")
    metrics = latest.metrics()
    assert list(metrics.columns) == ["step", "name", "value"]
    assert metrics.query("step == 'prune' and name == 'heads_pruned'")["value"].item() == 1

    importance = latest.head_scores("importance")
    assert importance.shape == (2, 4) and np.nanmax(importance) == 1.0
    pruned = latest.head_scores("pruned")
    assert pruned[0, 1] == 1 and pruned.sum() == 1
    with pytest.raises(wb.WorkbenchError, match="no head score 'importanc'"):
        latest.head_scores("importanc")

    layers = latest.layer_scores("extract")
    assert set(layers.columns) == {"layer", "name", "value"} and set(layers["layer"]) == {0, 1, 2}

    features = latest.features("extract")
    assert len(features.shards) == 2 and isinstance(features.shards[0]["layer_2"], np.memmap)
    assert features.layer(2).shape == (20, 32)

    loaded = latest.model("prune")
    assert loaded.model.config.id2label  # the model saves with its label vocabulary
    inputs = loaded.tokenizer(["the key to the cabinets is here"], return_tensors="pt")
    gates = torch.ones(loaded.layout.shape)
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with wb.head_gates(loaded, gates):
            gated = loaded.model(**inputs).logits
        gates[1, 2] = 0
        with wb.head_gates(loaded, gates):
            masked = loaded.model(**inputs).logits
    assert torch.equal(plain, gated) and not torch.allclose(plain, masked)
    seen = []
    with wb.observe_attention(loaded, lambda layer, heads, probs: seen.append((layer, heads.tolist(), tuple(probs.shape)))):
        loaded.model(**inputs)
    assert seen[0][1] == [0, 2, 3] and seen[1][1] == [0, 1, 2, 3]  # original ids: head 1 of layer 0 is pruned


READ_ONLY = """
import json, sys
import workbench as wb
store = wb.open_store(sys.argv[1])
run = store.run("latest")
summary = [len(store.runs()), len(run.metrics()), run.head_scores("importance").shape, run.features("extract").layer(0).shape]
print(json.dumps({"heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules), "summary": str(summary)}))
"""


def test_reading_a_store_imports_neither_torch_nor_transformers(api_recipe, tmp_path):
    import workbench as wb

    store_dir = tmp_path / "store"
    wb.run_recipe(api_recipe, store=store_dir)
    done = subprocess.run([sys.executable, "-c", READ_ONLY, str(store_dir)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], report


def test_a_missing_store_is_an_error_not_a_new_store(tmp_path):
    import workbench as wb

    with pytest.raises(wb.WorkbenchError, match="no store"):
        wb.open_store(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


class RecordingProgress:
    """A progress implementation of one's own (no workbench base class): it records every call."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __enter__(self):
        self.calls.append(("enter",))
        return self

    def __exit__(self, *exc):
        self.calls.append(("exit",))

    def track(self, items, total=None, description=""):
        self.calls.append(("track", description, total))
        yield from items

    @contextlib.contextmanager
    def bar(self, total, description=""):
        advanced = []
        yield lambda steps=1: advanced.append(steps)
        self.calls.append(("bar", description, total, sum(advanced)))

    def log(self, message, step=None):
        self.calls.append(("log", step, message))

    def warn(self, message):
        self.calls.append(("warn", message))


def test_a_progress_of_ones_own_receives_the_runs_calls(tiny_model_dir, tmp_path):
    import workbench as wb
    from workbench.cache import Cache
    from workbench.progress import Progress

    steps = {
        "importance": {"kind": "importance", "dataset": "dev", "batch_size": 8},
        "search": {"kind": "mask_search", "dataset": "dev", "threshold": 0.01, "amount": 0.5, "batch_size": 8},
        "extract": {"kind": "extract", "dataset": "dev", "batch_size": 8},
    }
    path = write_yaml(tmp_path / "r.yaml", recipe(tiny_model_dir("bert"), datasets={"dev": agreement(16, 2)}, steps=steps))
    progress = RecordingProgress()
    assert isinstance(progress, Progress)
    run = wb.run_recipe(path, store=tmp_path / "store", progress=progress)
    assert run.status == "finished"
    calls = progress.calls
    assert calls[0] == ("enter",) and calls[-1] == ("exit",) and calls.count(("enter",)) == 1
    tracks = [call for call in calls if call[0] == "track"]
    assert tracks and all(description.startswith("importance") or description.startswith("search") for _, description, _ in tracks)
    assert ("track", "importance: importance", 2) in tracks  # 16 examples in batches of 8
    assert ("bar", "extract: extract", 16, 16) in calls  # advanced by hand to its total
    logs = [call for call in calls if call[0] == "log"]
    assert logs and all(step == "search" and "heads masked" in message for _, step, message in logs)
    assert not [call for call in calls if call[0] == "warn"]

    # a damaged cache entry is recomputed, and the progress is told
    key = run.detail.step("extract").key
    (Cache(tmp_path / "store" / "cache").entry_dir(key) / "manifest.json").unlink()
    again = RecordingProgress()
    wb.run_recipe(path, store=tmp_path / "store", progress=again)
    assert [call for call in again.calls if call[0] == "warn"] == [("warn", f"cache entry {key[:12]} is incomplete (no manifest); recomputing")]
    assert [call[1] for call in again.calls if call[0] in ("track", "bar")] == ["extract: extract"]  # the rest came from the cache


QUIET_RUN = """
import json, sys
sys.modules["rich"] = None  # as if rich were not installed: `import rich` raises ImportError
import workbench as wb
run = wb.run_recipe(sys.argv[1], store=sys.argv[2])
print(json.dumps({"status": run.status, "rich": sys.modules["rich"] is not None}))
"""


def test_the_api_runs_quietly_without_rich(tiny_model_dir, tmp_path):
    """Its default progress (LoggingProgress) prints plain lines and needs no rich (only RichProgress does)."""
    steps = {"extract": {"kind": "extract", "dataset": "dev", "batch_size": 8}, "search": {"kind": "mask_search", "dataset": "dev", "threshold": 0.01, "amount": 0.5}}
    path = write_yaml(tmp_path / "r.yaml", recipe(tiny_model_dir("bert"), datasets={"dev": agreement(8, 2)}, steps=steps))
    done = subprocess.run([sys.executable, "-c", QUIET_RUN, str(path), str(tmp_path / "store")], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"status": "finished", "rich": False}
    logged = [line for line in done.stderr.splitlines() if line.startswith("search: ")]  # plain lines, no markup, no bars
    assert logged and all("heads masked" in line for line in logged), done.stderr
