"""Browsing results: `workbench runs`, `show`, `compare`, `export`, and that browsing never loads torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO, cli, keys, plain, recipe, run_json, steps_by_id, subprocess_env, write_yaml
from workbench.cache import Cache


@pytest.fixture(scope="module")
def browsed(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A store with two finished runs of the tiny pipeline (run 2 trains with another learning rate)."""
    folder = tmp_path_factory.mktemp("browse")
    store = folder / "store"
    recipe_file = write_yaml(folder / "pipeline.yaml", recipe(tiny_model_dir("bert")))
    for options in ([], ["--set", "steps.finetune.lr=0.001"]):
        result = cli("run", recipe_file, "--store", store, *options)
        assert result.code == 0, result.text
    return store, recipe_file


def test_run_ends_with_a_summary(browsed):
    store, recipe_file = browsed
    summary = cli("run", recipe_file, "--store", store)  # all cached, prints the summary
    assert summary.code == 0
    text = plain(summary.out)
    assert "run 3" in text and "finished" in text
    assert "entropy_smoothed (layer x head)" in text and "accuracy" in text


def test_runs_lists_every_run(browsed):
    store, _ = browsed
    table = cli("runs", "--store", store)
    assert table.code == 0
    assert "tiny" in table.out and "finished" in table.out
    listed = cli("runs", "--json", "--store", store).json()
    assert [run["id"] for run in listed] == sorted((run["id"] for run in listed), reverse=True)  # newest first
    first = next(run for run in listed if run["id"] == 1)
    assert first == {**first, "recipe": "tiny", "status": "finished", "steps": 4, "cached": 0, "failed": 0}
    assert first["duration_s"] > 0


def test_show_prints_steps_metrics_and_every_score(browsed):
    store, _ = browsed
    shown = cli("show", "1", "--store", store)
    assert shown.code == 0
    text = plain(shown.out)
    detail = run_json(store, 1)
    for step in detail["steps"]:
        assert f"{step['id']} ({step['kind']})" in text
        assert step["key"][:12] in text
        for metric in step["metrics"]:
            assert metric in text
        for name in step["head_scores"]:
            assert f"{name} (layer x head)" in text
        for name in step["layer_scores"]:
            assert f"{name} by layer" in text
    only = plain(cli("show", "1", "--store", store, "--step", "attention", "--score", "self").out)
    assert "self (layer x head)" in only and "entropy_smoothed (layer x head)" not in only and "extract (extract)" not in only


def test_show_json_has_every_metric_and_score_of_the_cache(browsed):
    """The store's JSON view equals what the steps produced, read back from the cache entries."""
    store, _ = browsed
    shown = cli("show", "1", "--store", store, "--json")
    assert shown.code == 0
    detail = json.loads(shown.out)
    assert detail["id"] == 1 and detail["status"] == "finished" and detail["seed"] == 3
    assert detail["environment"]["packages"]["torch"] and detail["environment"]["device"] == "cpu"
    cache = Cache(store / "cache")
    for step in detail["steps"]:
        produced, _ = cache.load(step["key"])
        assert step["metrics"] == pytest.approx(produced.metrics, rel=1e-12), step["id"]
        assert step["head_scores"] == {name: _nan_to_none(t.tolist()) for name, t in produced.head_scores.items()}
        assert step["layer_scores"] == {name: _nan_to_none(t.tolist()) for name, t in produced.layer_scores.items()}
        assert step["artifacts"], f"{step['id']} recorded no artifacts"
    by_id = steps_by_id(detail)
    assert {"accuracy", "f1", "mcc", "examples_per_s"} <= set(by_id["evaluate"]["metrics"])
    assert len(by_id["attention"]["head_scores"]) >= 7 and by_id["extract"]["layer_scores"]
    assert run_json(store, "tiny")["id"] == run_json(store, "latest")["id"] >= 2


def _nan_to_none(values):
    if isinstance(values, list):
        return [_nan_to_none(value) for value in values]
    return None if math.isnan(values) else pytest.approx(values, rel=1e-6)


def test_compare_shows_metric_deltas_and_head_score_differences(browsed):
    store, _ = browsed
    a, b = run_json(store, 1), run_json(store, 2)
    assert keys(a)["finetune"] != keys(b)["finetune"]
    compared = cli("compare", "1", "2", "--store", store)
    assert compared.code == 0
    text = plain(compared.out)
    assert "Metrics (b - a)" in text
    loss_a = steps_by_id(a)["finetune"]["metrics"]["train_loss"]
    loss_b = steps_by_id(b)["finetune"]["metrics"]["train_loss"]
    assert "finetune train_loss" in text and f"{loss_b - loss_a:+.4g}" in text
    for name in steps_by_id(a)["attention"]["head_scores"]:
        assert f"attention {name}: b - a" in text


def test_export_bundles_recipe_and_results(browsed, tmp_path):
    store, recipe_file = browsed
    exported = cli("export", "1", "-o", tmp_path / "run1", "--store", store)  # .zip is added
    assert exported.code == 0, exported.text
    with zipfile.ZipFile(tmp_path / "run1.zip") as bundle:
        assert set(bundle.namelist()) == {
            "recipe.yaml", "recipe.as_run.yaml", "results.json", "provenance.json", "README.txt", "manifest.json"
        }
        assert bundle.read("recipe.yaml").decode() == recipe_file.read_text()
        assert json.loads(bundle.read("results.json")) == run_json(store, 1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["show", "99"], "no run with id 99"),
        (["show", "no-such-recipe"], "no run with id or name 'no-such-recipe'"),
        (["show", "99", "--json"], "no run with id 99"),
        (["compare", "1", "99"], "no run with id 99"),
        (["export", "99", "-o", "x.zip"], "no run with id 99"),
    ],
)
def test_unknown_run_is_a_clear_error(browsed, args, message, tmp_path, monkeypatch):
    store, _ = browsed
    monkeypatch.chdir(tmp_path)
    result = cli(*args, "--store", store)
    assert result.code == 2
    assert message in result.text and "workbench runs" in result.text
    assert "Traceback" not in result.text and result.out == ""
    assert not (tmp_path / "x.zip").exists()


def test_browsing_never_creates_a_store(tmp_path):
    for command in (["show"], ["runs"], ["compare", "1", "2"], ["rm", "1"], ["gc"]):
        result = cli(*command, "--store", tmp_path / "empty")
        assert result.code == 2 and "no store at" in result.text and "run a recipe first or pass --store" in result.text
        assert f"store: {tmp_path / 'empty'} (from --store)" in result.text
    assert not (tmp_path / "empty").exists()


def test_show_on_an_empty_store(tmp_path):
    from workbench.db.store import Store

    Store.open(tmp_path / "empty")  # created, with no run
    result = cli("show", "--store", tmp_path / "empty")
    assert result.code == 2 and "no runs in the store yet" in result.text


BROWSE_WITHOUT_TORCH = """
import json, sys
store, zip_path = sys.argv[1], sys.argv[2]
import workbench.cli, workbench.ui.views, workbench.db.store
from workbench.cli import main
codes = []
for args in (["runs"], ["runs", "--json"], ["show", "1"], ["show", "latest", "--json"], ["compare", "1", "2"],
             ["export", "1", "-o", zip_path]):
    sys.argv = ["workbench", *args, "--store", store]
    try:
        main()
        codes.append(0)
    except SystemExit as exit_:
        codes.append(exit_.code)
heavy = sorted(name for name in ("torch", "transformers", "datasets") if name in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_browsing_never_imports_torch_or_transformers(browsed, tmp_path):
    store, _ = browsed
    done = subprocess.run(
        [sys.executable, "-c", BROWSE_WITHOUT_TORCH, str(store), str(tmp_path / "b.zip")],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"codes": [0] * 6, "heavy": []}
