"""`workbench browse`, driven headless with Textual's pilot (`App.run_test()`), as Textual's own tests do.

One recipe with a step of every kind the browser has a view for runs twice (run 2 trains with
another learning rate), and a two-step recipe whose steps are all cached runs once. The tests
open that store through the CLI's read API, press keys, and read what is on the screen: the text
of `export_screenshot()`'s SVG, laid back out on the terminal's grid. Tests that delete, export or
start a run work on a copy of the store.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("textual")

from tests.conftest import SHARED_DATA
from tests.helpers import REPO, agreement, cli, recipe, start_cli, subprocess_env, write_yaml
from workbench.browse import make_app, run_browser
from workbench.browse.actions import ACTIONS
from workbench.browse.formatting import exact, matches, rank_of, run_flags, sorted_runs
from workbench.browse.pages import GridPage, describe
from workbench.db.store import Store
from workbench.errors import StoreError, WorkbenchError
from workbench.store_location import locate_store

TREEBANK = SHARED_DATA / "ud_english_ewt" / "en_ewt-ud-dev.conllu"
FUNCTIONS = SHARED_DATA / "cpython_stdlib_functions" / "functions.jsonl"
PRUNED = {0: [1], 1: [2]}
STEPS = {
    "finetune": {"kind": "finetune", "dataset": "train", "max_steps": 3, "batch_size": 16},
    "evaluate": {"kind": "evaluate", "model": "finetune", "dataset": "dev", "batch_size": 32},
    "attention": {"kind": "attention", "model": "finetune", "dataset": "dev", "save_maps": 2},
    "importance": {"kind": "importance", "model": "finetune", "dataset": "train"},
    "mask_search": {"kind": "mask_search", "model": "finetune", "dataset": "dev", "amount": 0.25, "threshold": 0.5},
    "prune": {
        "kind": "prune", "model": "finetune", "dataset": "dev", "heads": PRUNED,
        "batch_sizes": [8], "timing_examples": 16, "timing_rounds": 2, "verify_examples": 8,
    },
    "attention_pruned": {"kind": "attention", "model": "prune", "dataset": "dev", "gradients": False},
    "syntax_heads": {"kind": "syntax_heads", "dataset": "tb", "min_count": 1, "js_sentences": 10},
    "extract_tb": {"kind": "extract", "dataset": "tb", "pooling": "first"},
    "probe": {"kind": "probe", "task": "upos", "train": "extract_tb", "dev": "extract_tb", "control": True, "epochs": 5, "batch_size": None},
    "cat": {"kind": "cat_probe", "dataset": "code", "per_head": True, "batch_size": 4},
}
DATASETS = {
    "train": agreement(64, 1),
    "dev": agreement(48, 2),
    "tb": {"path": "conllu", "data_files": str(TREEBANK), "limit": 20},
    "code": {"path": "python_code", "data_files": str(FUNCTIONS), "partition": "test", "limit": 6, "max_length": 128},
}
SMALL_STEPS = {key: STEPS[key] for key in ("finetune", "evaluate")}  # the same keys: all cached


@pytest.fixture(scope="module")
def browsed(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """Run 1 and 2: every kind (run 2: lr 0.001); run 3: finetune + evaluate, all from the cache."""
    folder = tmp_path_factory.mktemp("browse")
    store = folder / "store"
    model = tiny_model_dir("bert")
    every = write_yaml(folder / "every.yaml", recipe(model, name="every", datasets=DATASETS, steps=STEPS))
    small = write_yaml(folder / "small.yaml", recipe(model, name="small", datasets=DATASETS, steps=SMALL_STEPS))
    for recipe_file, options in ((every, ()), (every, ("--set", "steps.finetune.lr=0.001")), (small, ())):
        result = cli("run", recipe_file, "--store", store, "-q", *options)
        assert result.code == 0, result.text
    return store, every


@pytest.fixture
def store_copy(browsed, tmp_path) -> Path:
    shutil.copytree(browsed[0], tmp_path / "store")
    return tmp_path / "store"


# ---- driving the app --------------------------------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def screen_text(app) -> str:
    """What the terminal shows, from the screenshot SVG: each text run put back at its cell."""
    root = ET.fromstring(app.export_screenshot())
    rows: dict[int, dict[int, str]] = {}
    for element in root.iter(f"{SVG}text"):
        if element.get("textLength") is None:  # the window title
            continue
        row = rows.setdefault(round((float(element.get("y")) - 20) / 24.4), {})
        column = round(float(element.get("x")) / 12.2)
        for offset, char in enumerate("".join(element.itertext()).replace("\xa0", " ")):
            row[column + offset] = char
    return "\n".join(
        "".join(row.get(c, " ") for c in range(max(row, default=-1) + 1)).rstrip()
        for row in (rows.get(i, {}) for i in range(max(rows, default=-1) + 1))
    )


def browse(store: Path, scenario, *, size=(80, 24), poll_interval: float = 1.0):
    """Run `await scenario(app, pilot)` inside `app.run_test()`; returns the app."""
    app = make_app(locate_store(store), poll_interval=poll_interval)

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await scenario(app, pilot)

    asyncio.run(main())
    return app


async def until(pilot, condition, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)


def listed(text: str) -> list[str]:
    """The run ids in the runs table, top to bottom."""
    rows = [line.split() for line in text.splitlines() if "sorted by" not in line]  # not the status bar
    return [words[0] for words in rows if words[:1] and words[0].isdigit()]


async def wait_screen(pilot, name: str) -> None:
    await until(pilot, lambda: type(pilot.app.screen).__name__ == name, what=name)
    await pilot.pause()


async def open_run(pilot, run_id: int) -> None:
    """From the runs list (newest first), open a run."""
    app = pilot.app
    table = app.screen.query_one("#runs")
    table.move_to_key(str(run_id))
    await pilot.press("enter")
    await wait_screen(pilot, "RunScreen")


async def go_to_step(pilot, step_id: str) -> None:
    app = pilot.app
    table = app.screen.query_one("#steps")
    target = table.get_row_index(step_id)
    while table.cursor_row != target:  # with the keys, as a user would
        await pilot.press("down" if table.cursor_row < target else "k")
    await until(pilot, lambda: app.screen.query_one("#detail").step.step_id == step_id, what=step_id)
    await pilot.pause()


# ---- pure helpers ---------------------------------------------------------------------------------


def test_filter_sort_marks_and_readouts(browsed):
    store, _ = browsed
    with Store.open(store, create=False) as db:
        runs = db.list_runs()
    assert [run.id for run in sorted_runs(runs, "id", False)] == [1, 2, 3]
    assert [run.name for run in sorted_runs(runs, "recipe", False)] == ["every", "every", "small"]
    assert all(matches(run, "finished") for run in runs) and not any(matches(run, "status:running") for run in runs)
    assert [run.id for run in runs if matches(run, "recipe:sma")] == [3]
    assert [run.id for run in runs if matches(run, "every fin")] == [2, 1]
    if "imported_from" in type(runs[0]).__dataclass_fields__:
        imported = replace(runs[0], imported_from="bundle.zip (run 9)")
        assert run_flags(imported) == "i" and matches(imported, "imported") and run_flags(runs[0]) == ""
    grid = [[0.5, 0.25], [None, 1.0]]
    assert rank_of(grid, 0, 0) == (2, 3) and rank_of(grid, 1, 0) is None
    heads = GridPage("importance", "t", grid, pruned=frozenset({(1, 0)}))
    assert describe(heads, 0, 1) == "layer 0, head 1: importance = 0.25 · rank 3 of 3 (1 = highest)"
    assert describe(heads, 1, 0) == "layer 1, head 0: importance = - · pruned"
    tokens = ["[CLS]", "the", "key"]
    attention = GridPage("map 0", "t", [[0.1, 0.2, 0.7]] * 3, kind="map", row_names=tokens, column_names=tokens)
    assert describe(attention, 2, 1) == "from 'key' (2) → to 'the' (1): weight 0.2"
    delta = GridPage("s:x", "t", [[0.5]], kind="delta", a=[[1.0]], b=[[1.5]], a_label="run 1", b_label="run 2")
    assert describe(delta, 0, 0) == "layer 0, head 0: run 1 1 → run 2 1.5 · Δ +0.5"


def test_no_store_or_no_terminal_is_an_error(browsed, tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        make_app(locate_store(tmp_path / "nothing"))
    assert not (tmp_path / "nothing").exists()
    with pytest.raises(WorkbenchError, match="needs a terminal"):  # pytest captures stdout: not a terminal
        run_browser(locate_store(browsed[0]))


# ---- the screens ----------------------------------------------------------------------------------


def test_runs_list_filters_as_you_type_and_sorts(browsed):
    store, _ = browsed

    async def scenario(app, pilot):
        text = screen_text(app)
        assert "store: " in text and "3 runs, sorted by id ↓" in text
        assert listed(text) == ["3", "2", "1"], text
        top = next(line for line in text.splitlines() if line.split()[:1] == ["3"])
        assert "small" in top and "finished" in top and "all cached" in top
        await pilot.press("slash", *"sma")
        await until(pilot, lambda: "1 of 3 runs" in screen_text(app), what="the filter")
        assert " every " not in screen_text(app)
        await pilot.press("backspace", "backspace", "backspace", *"status:running")
        await until(pilot, lambda: "0 of 3 runs" in screen_text(app))
        await pilot.press("escape")  # clears the filter, back to the table
        await until(pilot, lambda: "3 runs, sorted" in screen_text(app))
        await pilot.press("s", "s", "s", "s", "s", "s", "s")  # once round every column: by id again
        await until(pilot, lambda: "sorted by id ↓" in screen_text(app))
        await pilot.press("s")  # sort by the next column: recipe
        await until(pilot, lambda: "sorted by recipe ↑" in screen_text(app))
        await pilot.press("S")
        text = screen_text(app)
        assert "sorted by recipe ↓" in text
        assert listed(text) == ["3", "2", "1"]
        await pilot.click("#runs", offset=(9, 0))  # the mouse: a click on the recipe header sorts by it
        await until(pilot, lambda: "sorted by recipe" in screen_text(app), what="a click on the header")
        await pilot.press("question_mark")
        await wait_screen(pilot, "HelpScreen")
        assert "filter as you type" in screen_text(app)
        await pilot.press("escape")
        await wait_screen(pilot, "RunsScreen")
        await pilot.press("q")

    app = browse(store, scenario)
    assert app.return_code == 0


def test_run_view_heatmap_cursor_shows_value_rank_and_pruned(browsed):
    store, _ = browsed
    with Store.open(store, create=False) as db:
        run = db.get_run(1)
    importance = next(grid for grid in run.step("importance").head_scores if grid.name == "importance").values

    async def scenario(app, pilot):
        await open_run(pilot, 1)
        text = screen_text(app)
        assert "run 1  every  finished  11/11 steps" in text
        for step_id in ("finetune", "evaluate", "attention", "importance"):
            assert step_id in text
        await go_to_step(pilot, "importance")
        await pilot.press("enter")  # into the heatmap
        await until(pilot, lambda: type(app.focused).__name__ == "HeatGrid")
        await pilot.press("right", "j")  # arrows and hjkl
        rank, count = rank_of(importance, 1, 1)
        expected = f"layer 1, head 1: importance = {exact(importance[1][1])} · rank {rank} of {count} (1 = highest)"
        assert app.focused.readout == expected
        text = screen_text(app)
        assert expected in text and "importance (layer x head)  1/4" in text
        await pilot.press("n")  # the next head score
        assert "importance_raw (layer x head)  2/4" in screen_text(app)
        assert app.focused.readout.startswith("layer 1, head 1: importance_raw = ")
        await pilot.click("#heads", offset=(2 + 3 * 6 + 2, 3))  # the mouse: row 0 (under title, readout, header), head 3
        assert app.focused.readout.startswith("layer 0, head 3: importance_raw = ")

        await pilot.press("escape")  # to the runs list; the steps of another step
        await wait_screen(pilot, "RunsScreen")
        await open_run(pilot, 1)
        await go_to_step(pilot, "attention_pruned")
        await pilot.press("enter", "right")  # head (0, 1) is pruned: no value
        readout = app.focused.readout
        assert readout.startswith("layer 0, head 1: entropy_smoothed = -") and readout.endswith("· pruned"), readout
        assert "· no value (pruned)" in screen_text(app)

    browse(store, scenario)


def test_every_step_kind_has_its_view(browsed):
    store, _ = browsed
    expected = {
        "finetune": ["Training loss", "optimizer step", "train_loss"],
        "evaluate": ["accuracy", "f1_macro"],
        "mask_search": ["Mask search (keep masking while accuracy >= 0.5 x", "heads masked", "mask (layer x head)"],
        "prune": ["Pruning: before / after", "parameters", "examples/s, batch 8", "IQR", "pruned (layer x head)"],
        "syntax_heads": ["Best head per relation vs fixed-offset baseline", "nsubj", "dep→head", "(layer x head)  1/"],
        "probe": ["upos probes by layer", "selectivity", "dev accuracy by layer"],
        "cat": ["CAT by attention layer", "cat (layer x head)"],
        "extract_tb": ["norm_mean by layer"],
    }

    async def scenario(app, pilot):
        await open_run(pilot, 1)
        for step_id, texts in expected.items():
            await go_to_step(pilot, step_id)
            text = screen_text(app)
            for wanted in texts:
                assert wanted in text, f"{step_id}: {wanted!r} not on screen:\n{text}"
        await go_to_step(pilot, "prune")
        await pilot.press("enter", "right")  # the prune step's own grid: (0, 1) is pruned
        assert app.focused.readout == "layer 0, head 1: pruned = 1 · pruned"
        # Saved attention maps: tokens on both axes; the cursor says which pair and the weight.
        await pilot.press("escape")
        await wait_screen(pilot, "RunsScreen")
        await open_run(pilot, 1)
        await go_to_step(pilot, "attention")
        grid = app.screen.query_one("#maps")
        grid.focus()
        await pilot.press("right", "right", "down")
        assert "attention of example 0, layer 0, mean over heads" in screen_text(app)
        assert grid.readout.startswith("from 'the' (1) → to ") and "weight 0." in grid.readout
        await pilot.press("N")  # the next layer
        assert "attention of example 0, layer 1, mean over heads" in screen_text(app)
        await pilot.press("n")
        assert "layer 1, head 0" in screen_text(app)
        assert grid.readout in screen_text(app)

    browse(store, scenario, size=(100, 120))


def test_compare_two_runs_with_changed_only(browsed):
    store, _ = browsed

    async def scenario(app, pilot):
        await pilot.press("down", "space", "space")  # mark runs 2 and 1: A is the older
        await pilot.press("c")
        await wait_screen(pilot, "CompareScreen")
        await pilot.pause()
        text = screen_text(app)
        assert "run 1 (every)  vs  run 2 (every)   changed only: off" in text
        assert "train_loss" in text and "trained_parameters" in text
        grid = app.screen.query_one("#delta")
        assert grid.page.title.endswith("run 2 - run 1")
        assert grid.readout.startswith("layer 0, head 0: run 1 ") and " → run 2 " in grid.readout and "· Δ " in grid.readout
        assert "run 1: " in text and "run 2: " in text  # both runs' own grids beside the difference
        await pilot.press("c")
        await until(pilot, lambda: "changed only: on" in screen_text(app))
        text = screen_text(app)
        assert "train_loss" in text and "trained_parameters" not in text

    browse(store, scenario, size=(160, 60))


def test_imported_runs_are_marked(store_copy):
    with Store.open(store_copy, create=False) as db:
        if not hasattr(db, "import_run"):
            pytest.skip("this store cannot import runs yet")
        run = db.get_run(1)
        db.import_run(run, recipe_hash=run.summary.recipe_hash, imported_from="every-1.zip (run 1)", host="elsewhere")

    async def scenario(app, pilot):
        text = screen_text(app)
        top = next(line for line in text.splitlines() if line.split()[:1] == ["i"])
        assert top.split()[1:4] == ["4", "every", "finished"], text
        assert "run 4 · every · finished · 11 steps · imported from every-1.zip (run 1)" in " ".join(text.split())
        await pilot.press("slash", *"imported")
        await until(pilot, lambda: "1 of 4 runs" in screen_text(app))
        await pilot.press("enter", "enter")  # to the table, open the run
        await wait_screen(pilot, "RunScreen")
        assert "imported from every-1.zip (run 1)" in screen_text(app)

    browse(store_copy, scenario)


def test_delete_asks_first(store_copy):
    async def scenario(app, pilot):
        await pilot.press("d")  # the run under the cursor: run 3
        await wait_screen(pilot, "ConfirmDialog")
        assert "Delete run 3 (small, finished)?" in screen_text(app)
        await pilot.press("n")
        await wait_screen(pilot, "RunsScreen")
        assert "3 runs" in screen_text(app)
        await pilot.press("d")
        await wait_screen(pilot, "ConfirmDialog")
        await pilot.press("y")
        await until(pilot, lambda: "2 runs" in screen_text(app), what="the deletion")
        assert any("removed 1 run (3)" in message for message in app.messages)

    browse(store_copy, scenario)
    with Store.open(store_copy, create=False) as db:
        assert [run.id for run in db.list_runs()] == [2, 1]


def test_actions_export_reproduce_report_figures(browsed, tmp_path):
    store, every = browsed
    zip_path, report_path, figures_path = tmp_path / "run-3.zip", tmp_path / "report.html", tmp_path / "figures"

    async def write(app, pilot, key: str, target: Path) -> None:
        await pilot.press(key)
        await wait_screen(pilot, "PathDialog")
        app.screen.query_one("#path").value = str(target)
        await pilot.press("enter")

    async def scenario(app, pilot):
        await write(app, pilot, "e", zip_path)  # run 3 is under the cursor
        await until(pilot, zip_path.exists, what="the export")
        await app.workers.wait_for_complete()
        await write(app, pilot, "e", zip_path)
        await wait_screen(pilot, "ConfirmDialog")
        assert "exists. Replace it?" in screen_text(app)
        await pilot.press("y")
        await app.workers.wait_for_complete()
        assert [m for m in app.messages if m.startswith("exported run 3 to")] and len(app.messages) >= 4

        await pilot.press("y")
        await wait_screen(pilot, "TextDialog")
        assert app.clipboard == f"workbench run {every.parent / 'small.yaml'}"
        assert app.clipboard in screen_text(app).replace("\n", "")
        await pilot.press("escape")
        await wait_screen(pilot, "RunsScreen")

        if ACTIONS["r"].available():
            await write(app, pilot, "r", report_path)
            await until(pilot, report_path.exists, timeout=60, what="the report")
            await app.workers.wait_for_complete()
        await write(app, pilot, "f", figures_path)
        await until(pilot, lambda: any(m.startswith("wrote ") and "figures" in m for m in app.messages), timeout=60)

    app = browse(store, scenario)
    with zipfile.ZipFile(zip_path) as bundle:
        assert "recipe.yaml" in bundle.namelist()
    assert sorted(path.suffix for path in figures_path.iterdir()) == [".png"]  # the loss curve of run 3
    if ACTIONS["r"].available():
        assert report_path.read_text().lstrip().lower().startswith("<!doctype html")
    assert not [m for m in app.messages if "failed" in m], app.messages


def test_live_refresh_shows_a_run_as_it_happens(browsed, store_copy):
    _, every = browsed
    seen: list[str] = []  # run 4's status in the runs the app polled
    on_screen: list[str] = []  # and on its run view, opened while it ran

    async def scenario(app, pilot):
        process = start_cli("run", every, "--store", store_copy, "-q", "--set", "steps.evaluate.timing_rounds=2")
        try:
            def run_4_status() -> str | None:
                run = next((run for run in app.source.runs if run.id == 4), None)
                if run and run.status not in seen[-1:]:
                    seen.append(run.status)
                return run.status if run else None

            await until(pilot, lambda: run_4_status() is not None, timeout=120, what="run 4 to appear")
            assert " 4 " in screen_text(app)
            await open_run(pilot, 4)

            def on_the_run_screen() -> str:
                run_4_status()
                shown = app.screen.run.summary.status
                if shown not in on_screen[-1:]:
                    on_screen.append(shown)
                return shown

            await until(pilot, lambda: on_the_run_screen() == "finished", timeout=120, what="run 4 to finish")
            await until(pilot, lambda: "run 4  every  finished  11/11 steps" in screen_text(app))
            text = screen_text(app)
            assert re.search(r"evaluate +evaluate +done", text) and re.search(r"finetune +finetune +cached", text), text
            await pilot.press("escape")
            await until(pilot, lambda: "4 runs" in screen_text(app))
            _, err = process.communicate(timeout=60)  # the run is recorded; let the process end by itself
            assert process.returncode == 0, err
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=60)

    app = browse(store_copy, scenario, poll_interval=0.2)
    assert seen[0] == "running" and seen[-1] == "finished", seen
    assert on_screen == ["running", "finished"], on_screen
    assert app.polls > 3


BROWSE_IN_A_FRESH_PROCESS = """
import asyncio, json, sys
from workbench.browse import make_app, run_browser
from workbench.store_location import locate_store

async def main():
    app = make_app(locate_store(sys.argv[1]))
    async with app.run_test() as pilot:
        app.screen.query_one("#runs").move_to_key("1")
        await pilot.press("enter")
        await pilot.pause()
        for _ in range(2):  # to `attention`: its head scores, then its saved maps (safetensors, numpy)
            await pilot.press("down")
            await pilot.pause()
        await pilot.press("enter", "right", "tab", "right", "n")
        assert app.focused.id == "maps", app.focused
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("space", "k", "space", "c")  # runs 1 and 2
        for _ in range(50):
            await pilot.pause(0.1)
            if type(app.screen).__name__ == "CompareScreen":
                break
        return type(app.screen).__name__

screen = asyncio.run(main())
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers", "datasets", "matplotlib"))
print(json.dumps({"screen": screen, "heavy": heavy}))
"""


def test_browsing_never_imports_torch_or_transformers(browsed):
    store, _ = browsed
    done = subprocess.run(
        [sys.executable, "-c", BROWSE_IN_A_FRESH_PROCESS, str(store)],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"screen": "CompareScreen", "heavy": []}


def test_screenshots_at_80x24_with_and_without_colour(browsed, tmp_path, monkeypatch):
    store, _ = browsed
    fills: dict[str, set[str]] = {}

    async def scenario(app, pilot):
        await open_run(pilot, 1)
        await go_to_step(pilot, "importance")
        await pilot.press("enter", "right")
        path = app.save_screenshot("run.svg", str(tmp_path))
        svg = Path(path).read_text()
        for wanted in ("importance&#160;(layer&#160;x&#160;head)", "layer&#160;0,&#160;head&#160;1:&#160;importance&#160;=", "esc"):
            assert wanted in svg
        colours = set(re.findall(r"fill: (#[0-9a-fA-F]{6})", svg)) - {"#c5c8c6"}  # the classes' colours, less rich's SVG default
        fills["NO_COLOR" if app.no_color else "colour"] = colours

    browse(store, scenario)
    monkeypatch.setenv("NO_COLOR", "1")
    browse(store, scenario)
    grey = lambda colour: colour[1:3] == colour[3:5] == colour[5:7]  # noqa: E731
    assert not all(grey(colour) for colour in fills["colour"])
    assert all(grey(colour) for colour in fills["NO_COLOR"]), fills["NO_COLOR"]
