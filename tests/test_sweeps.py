"""`workbench run RECIPE --sweep KEY=V1,V2 ... [--jobs K]`: a grid of runs on one store (workbench/sweeps.py).

One store holds a plain run and a 2 x 2 sweep run two points at a time; other tests sweep a value that
makes a step fail, sweep a typo (nothing runs), run one point in-process (`--point`, as a Slurm array
task would), and interrupt a sweep with SIGINT.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.helpers import agreement, cli, plain, recipe, start_cli, write_yaml
from workbench.db.store import Store
from workbench.errors import RecipeError, StoreError
from workbench.sweeps import _point_names, build_grid, parse_axis, sweep_of

EVALUATE = {"evaluate": {"kind": "evaluate", "dataset": "dev", "batch_size": 8}}


def grid_recipe(model: Path, folder: Path, **extra) -> Path:
    document = recipe(model, name="grid", datasets={"dev": agreement(8, 2)}, steps=EVALUATE, **extra)
    return write_yaml(folder / "grid.yaml", document)


def runs_of(store: Path) -> list:
    with Store.open(store, create=False) as db:
        return sorted(db.list_runs(), key=lambda run: run.id)


# ---- axes and names (no runs) -----------------------------------------------------------------------


def test_axis_values_split_on_top_level_commas_only():
    assert parse_axis("seed=1,2, 3").values == ("1", "2", "3")
    assert parse_axis("steps.x.layers=[0,1],[2,3]").values == ("[0,1]", "[2,3]")
    assert parse_axis("description='a, b',c").values == ("'a, b'", "c")
    assert parse_axis("description=it's,c").values == ("it's", "c")  # a quote inside a word quotes nothing
    assert parse_axis("steps.x.heads={0: [1, 2]},{1: [0]}").values == ("{0: [1, 2]}", "{1: [0]}")
    for bad, words in [
        ("seed", "expected KEY=VALUE"),
        ("seed=", "no values"),
        ("seed=1,,2", "value 2 is empty"),
        ("seed=1,1", "1 is listed twice"),
        ("steps.x.layers=[0,1", "unclosed ["),
        ("a..b=1", "is not a dotted field path"),
    ]:
        with pytest.raises(RecipeError) as caught:
            parse_axis(bad)
        assert caught.value.file == "--sweep" and words in str(caught.value), (bad, str(caught.value))


def test_point_names_are_readable_unique_and_fit_the_schema():
    axes = [parse_axis("model.id=org/bert-tiny,other/bert-mini"), parse_axis("seed=1,2")]
    combos = [("org/bert-tiny", "1"), ("other/bert-mini", "2")]
    assert _point_names(["r", "r"], axes, combos) == ["r--id_bert-tiny--seed_1", "r--id_bert-mini--seed_2"]
    same_tail = [parse_axis("model.id=a/bert,b/bert")]  # last parts collide: the whole value
    assert _point_names(["r", "r"], same_tail, [("a/bert",), ("b/bert",)]) == ["r--id_a_bert", "r--id_b_bert"]
    two_lrs = [parse_axis("steps.a.lr=0.1,0.2"), parse_axis("steps.b.lr=1e-4")]  # same last key: full paths
    assert _point_names(["r"], two_lrs, [("0.1", "1e-4")]) == ["r--steps_a_lr_0_1--steps_b_lr_1e-4"]
    long = [parse_axis("description=" + ",".join(["x" * 120, "y" * 120]))]
    names = _point_names(["r", "r"], long, [("x" * 120,), ("y" * 120,)])
    assert all(len(name) <= 100 and sweep_of(name)[0] == "r" for name in names) and len(set(names)) == 2
    assert sweep_of("grid--seed_1") == ("grid", "seed_1") and sweep_of("grid") is None and sweep_of("--x") is None


def test_every_point_is_validated_first(tiny_model_dir, tmp_path):
    recipe_file = grid_recipe(tiny_model_dir("bert"), tmp_path)
    grid = build_grid(recipe_file, ["datasets.dev.limit=4"], ["seed=1,2", "datasets.dev.size=8,12"])
    assert [point.label for point in grid.points] == [
        "seed=1 datasets.dev.size=8", "seed=1 datasets.dev.size=12", "seed=2 datasets.dev.size=8", "seed=2 datasets.dev.size=12",
    ]
    assert grid.points[1].overrides == ["datasets.dev.limit=4", "seed=1", "datasets.dev.size=12", "name=grid--seed_1--size_12"]
    with pytest.raises(RecipeError) as caught:
        build_grid(recipe_file, ["seed=3"], ["seed=1,2"])
    assert "also set by --set seed=3" in str(caught.value)


def test_a_bad_sweep_is_exit_2_before_anything_runs(tiny_model_dir, tmp_path):
    recipe_file = grid_recipe(tiny_model_dir("bert"), tmp_path)
    store = tmp_path / "store"
    typo = cli("run", recipe_file, "--store", store, "--sweep", "sed=1,2")
    assert typo.code == 2, typo.text
    assert "--sweep sed=1,2: no field 'sed'" in typo.text and "did you mean 'seed'" in typo.text, typo.text
    value = cli("run", recipe_file, "--store", store, "--sweep", "seed=1,two", "--sweep", "datasets.dev.size=8,12")
    assert value.code == 2 and "--sweep seed=1,two: value two:" in value.text, value.text
    step = cli("run", recipe_file, "--store", store, "--sweep", "steps.evaluate.batch_sise=4,8")
    assert step.code == 2 and "--sweep steps.evaluate.batch_sise=4,8" in step.text and "batch_size" in step.text, step.text
    alone = cli("run", recipe_file, "--store", store, "--jobs", "2")
    assert alone.code == 2 and "--jobs needs --sweep" in alone.text
    assert not store.exists()  # nothing ran, not even the store was made


# ---- a grid that runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tiny_model_dir, tmp_path_factory):
    """Run 1: the plain recipe; runs 2-5: --sweep seed=1,2 --sweep datasets.dev.size=8,12 --jobs 2."""
    folder = tmp_path_factory.mktemp("sweep")
    store = folder / "store"
    recipe_file = grid_recipe(tiny_model_dir("bert"), folder)
    assert cli("run", recipe_file, "--store", store, "-q").code == 0
    result = cli("run", recipe_file, "--store", store, "--sweep", "seed=1,2", "--sweep", "datasets.dev.size=8,12", "--jobs", "2")
    return store, recipe_file, result


def test_a_2x2_grid_makes_four_runs_with_their_overrides(swept):
    store, _, result = swept
    assert result.code == 0, result.text
    runs = runs_of(store)
    assert len(runs) == 5 and all(run.status == "finished" for run in runs)
    names = {run.name for run in runs[1:]}
    assert names == {"grid--seed_1--size_8", "grid--seed_1--size_12", "grid--seed_2--size_8", "grid--seed_2--size_12"}
    with Store.open(store, create=False) as db:
        for run in runs[1:]:
            detail = db.get_run(run.id)
            seed, size = (part.split("_")[1] for part in sweep_of(run.name)[1].split("--"))
            assert detail.overrides == [f"seed={seed}", f"datasets.dev.size={size}", f"name={run.name}"]
            assert detail.seed == int(seed)
    text = plain(result.out)
    assert "Sweep: 4 points (2 x 2): 4 finished" in text
    assert "seed=2 datasets.dev.size=12 finished" in text and "grid--seed_2--size_12" in text
    assert "[3] finished run" in result.err  # one line per point when stderr is not a terminal
    logs = sorted((store / "sweeps").glob("grid-*/*.log"))
    assert len(logs) == 4 and "--set name=grid--seed_1--size_8" in logs[0].read_text()


def test_runs_and_compare_group_the_points(swept):
    store, _, _ = swept
    listed = cli("runs", "--store", store, "--json").json()
    by_name = {run["recipe"]: run for run in listed}
    assert by_name["grid"]["sweep"] is None and by_name["grid--seed_1--size_8"]["sweep"] == "grid"
    assert by_name["grid--seed_2--size_12"]["point"] == "seed_2--size_12"
    table = plain(cli("runs", "--store", store).out)
    assert table.count(" sweep") == 4
    compared = cli("compare", "grid--seed_1--size_8", "grid--seed_2--size_8", "--store", store)
    assert compared.code == 0 and "(grid--seed_1--size_8) vs run" in plain(compared.out), compared.text
    shown = plain(cli("show", "grid--seed_2--size_12", "--store", store).out)
    assert "grid--seed_2--size_12 finished" in shown and "--set seed=2 --set datasets.dev.size=12" in shown


def test_dry_run_lists_the_points_and_point_runs_one_in_process(swept, tmp_path):
    store, recipe_file, _ = swept
    sweep = ("--sweep", "seed=1,2", "--sweep", "datasets.dev.size=8,12")
    listed = cli("run", recipe_file, "--store", store, *sweep, "--dry-run")
    assert listed.code == 0 and "2 seed=1 datasets.dev.size=12 grid--seed_2--size_8" not in plain(listed.out)
    assert "2 seed=2 datasets.dev.size=8 grid--seed_2--size_8" in plain(listed.out), listed.text
    copy = tmp_path / "store"
    one = cli("run", recipe_file, "--store", copy, *sweep, "--point", "3", "-q")
    assert one.code == 0, one.text
    (run,) = runs_of(copy)
    assert run.name == "grid--seed_2--size_12" and run.status == "finished"
    assert "numbered 0 to 3" in cli("run", recipe_file, "--store", copy, *sweep, "--point", "4").text


def test_browse_marks_swept_runs(swept):
    pytest.importorskip("textual")
    from tests.test_browse import browse, screen_text, until

    store, _, _ = swept

    async def scenario(app, pilot):
        text = screen_text(app)
        rows = [line.split() for line in text.splitlines()]
        marked = [words for words in rows if words[:1] == ["s"]]
        assert len(marked) == 4 and all("--seed_" in words[2] for words in marked), text
        assert "…--seed_2--size_12" in text  # too long for the column: the recipe name gives way
        plain_row = next(words for words in rows if words[:2] == ["1", "grid"])
        assert plain_row[2] == "finished", text
        await pilot.press("slash", *"sweep")
        await until(pilot, lambda: "4 of 5 runs" in screen_text(app))
        assert "sweep grid: seed_2--size_12" in " ".join(screen_text(app).split())

    browse(store, scenario, size=(100, 24))


def test_a_failed_point_does_not_stop_the_others(tiny_model_dir, tmp_path):
    recipe_file = grid_recipe(tiny_model_dir("bert"), tmp_path)
    store = tmp_path / "store"
    result = cli("run", recipe_file, "--store", store, "--sweep", "datasets.dev.label=verdict,label")
    assert result.code == 1, result.text
    failed, finished = runs_of(store)
    assert (failed.name, failed.status) == ("grid--label_verdict", "failed")
    assert (finished.name, finished.status) == ("grid--label_label", "finished")  # ran after the failure
    assert "1 failed, 1 finished" in plain(result.out) or "1 finished, 1 failed" in plain(result.out)
    err = plain(result.err)
    assert "point 0 (datasets.dev.label=verdict) failed: log" in err and "no column 'verdict'" in err, result.err


def test_ctrl_c_interrupts_every_running_point(tiny_model_dir, tmp_path):
    long = {"train": {"kind": "finetune", "dataset": "dev", "max_steps": 1_000_000, "batch_size": 4}}
    document = recipe(tiny_model_dir("bert"), name="long", datasets={"dev": agreement(16, 2)}, steps=long)
    recipe_file = write_yaml(tmp_path / "long.yaml", document)
    store = tmp_path / "store"
    sweep = start_cli("run", recipe_file, "--store", store, "--sweep", "seed=1,2,3", "--jobs", "2")
    try:
        deadline = time.monotonic() + 300  # two fresh interpreters import torch on a busy machine
        while True:
            try:
                running = [run for run in runs_of(store) if run.status == "running"]
            except StoreError:  # not made yet, or being made by the sweep
                running = []
            if len(running) == 2 and all(run.steps_total for run in running):
                break
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
            time.sleep(0.5)
        time.sleep(1.0)
        sweep.send_signal(signal.SIGINT)  # the parent only, as a terminal's Ctrl-C reaches it
        out, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:  # the test failed: stop the sweep (it stops its points)
            sweep.terminate()
            sweep.communicate(timeout=120)
    assert sweep.returncode == 130, out + err
    runs = runs_of(store)
    assert [run.status for run in runs] == ["interrupted", "interrupted"], (out, err)  # point 3 never started
    assert "not started" in out and "sweep interrupted" in err
    for log in (store / "sweeps").glob("long-*/[01].log"):
        assert "run interrupted" in log.read_text()  # each point recorded it itself, not killed
