"""Publication figures (workbench.figures) of real runs of every step kind, on a tiny BERT.

One recipe holds every step kind (agreement sentences, a UD EWT slice, a few CPython functions);
it runs once per module, and a second run changes one step for `compare`. Every figure is written
as PNG and SVG and read back: PNGs decoded, SVGs parsed, their sizes, axes and text checked. A
child process draws and writes every figure to show that it imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from tests.helpers import agreement, cli, recipe, subprocess_env, write_yaml
from workbench.db.records import RunDetail, StepRecord
from workbench.figures import (
    FORMATS,
    NamedFigure,
    NothingToPlot,
    OutputError,
    UnknownScore,
    UnknownStep,
    compare_figures,
    run_figures,
    write_figures,
)
from workbench.figures.errors import FigureError
from workbench.figures.style import DIVERGING, HATCH, SEQUENTIAL

SVG = "{http://www.w3.org/2000/svg}"
TREEBANK = SHARED_DATA / "ud_english_ewt"
FUNCTIONS = SHARED_DATA / "cpython_stdlib_functions" / "functions.jsonl"
PRUNED = {0: [1], 1: [2]}  # heads the recipe prunes; `attention_pruned` runs the pruned model

STEPS = {
    "finetune": {"kind": "finetune", "dataset": "train", "max_steps": 4, "batch_size": 16},
    "evaluate": {"kind": "evaluate", "model": "finetune", "dataset": "dev", "timing_rounds": 1, "timing_examples": 16},
    "attention": {"kind": "attention", "model": "finetune", "dataset": "dev", "save_maps": 2},
    "extract": {"kind": "extract", "model": "finetune", "dataset": "dev", "pooling": "mean"},
    "importance": {"kind": "importance", "model": "finetune", "dataset": "train"},
    "mask_search": {"kind": "mask_search", "model": "finetune", "dataset": "dev", "amount": 0.25, "threshold": 0.5},
    "prune_curve": {"kind": "prune_curve", "model": "finetune", "dataset": "dev", "percents": [0, 25, 50], "importance": "importance"},
    "prune": {
        "kind": "prune",
        "model": "finetune",
        "dataset": "dev",
        "heads": PRUNED,
        "batch_sizes": [1, 8],
        "timing_examples": 16,
        "timing_rounds": 2,
        "verify_examples": 8,
    },
    "head_ablation": {"kind": "head_ablation", "model": "finetune", "dataset": "dev"},
    "attention_pruned": {"kind": "attention", "model": "prune", "dataset": "dev", "gradients": False},
    "syntax_heads": {"kind": "syntax_heads", "dataset": "tb_dev", "relations": ["nsubj", "det"], "min_count": 5, "js_sentences": 10},
    "extract_train": {"kind": "extract", "dataset": "tb_train", "pooling": "first"},
    "extract_dev": {"kind": "extract", "dataset": "tb_dev", "pooling": "first"},
    "probe": {
        "kind": "probe",
        "task": "upos",
        "train": "extract_train",
        "dev": "extract_dev",
        "control": True,
        "scalar_mix": True,
        "cumulative": True,
        "epochs": 10,
        "lr": 0.03,
        "batch_size": None,
    },
    "cat": {"kind": "cat_probe", "dataset": "code", "per_head": True, "batch_size": 4},
}

# A figure of each kind, by file name, and the text its SVG must hold.
EXPECTED = {
    "finetune__loss": ["optimizer step", "training loss"],
    "attention__map-ex0-layer0-mean": ["attention weight", "[CLS]", "from (attending token)"],
    "attention__map-ex0-layer1-mean": ["layer 1, mean over heads"],
    "attention__heads-entropy_smoothed": ["layer", "head", "entropy_smoothed"],
    "attention__layers-sep_to_sep": ["sep_to_sep", "0 = first attention layer"],
    "extract__layers-norm_mean": ["norm_mean", "0 = embeddings"],
    "importance__heads-importance": ["importance", "layer", "head"],
    "mask_search__search": ["% of heads masked", "mask search", "threshold"],
    "mask_search__heads-mask": ["kept", "masked"],
    "prune_curve__curve": ["pruning curve", "mask search", "threshold", "accuracy"],
    "prune__speed": ["batch size", "examples/s (median, IQR)", "before", "after"],
    "prune__heads-pruned": ["kept", "pruned", "2 of 8 heads pruned"],
    "head_ablation__histogram": ["accuracy change when the head is masked", "heads"],
    "head_ablation__keep_best": ["only the best head left per layer", "layer"],
    "head_ablation__heads-score_delta": ["score_delta", "layer", "head"],
    "attention_pruned__heads-entropy_smoothed": ["pruned head", "entropy_smoothed"],
    "syntax_heads__relations": ["all", "nsubj", "det", "accuracy", "best fixed offset (the offset is written in)"],
    "syntax_heads__mds": ["MDS dimension 1", "layer", "10 sentences"],
    "syntax_heads__heads-dep_to_head_nsubj": ["dep_to_head:nsubj", "layer", "head"],
    "probe__accuracy": ["upos probes by layer", "control task", "selectivity", "layer (0 = embeddings)"],
    "probe__layer_use": ["mix weight", "center of gravity", "expected layer"],
    "cat__by_layer": ["CAT by layer", "layer (0 = first attention layer)"],
    "cat__heads-cat": ["cat", "layer", "head"],
}
TORCH_FREE = """
import json, sys
from pathlib import Path
from workbench.db.store import Store
from workbench.figures import compare_figures, run_figures, write_figures
store, out = Path(sys.argv[1]), Path(sys.argv[2])
db = Store.open(store)
a, b = db.get_run(sys.argv[3]), db.get_run(sys.argv[4])
figures = run_figures(a, store / "cache") + compare_figures(a, b)
paths = write_figures(figures, out, "png", dpi=80)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") or m == "matplotlib.pyplot")
print(json.dumps({"written": [p.name for p in paths], "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def store(tiny_model_dir, tmp_path_factory) -> Path:
    """A store with two runs of the every-kind recipe: run 2 changes `attention` only."""
    folder = tmp_path_factory.mktemp("figures")
    datasets = {
        "train": agreement(64, 1),
        "dev": agreement(48, 2),
        "tb_train": {"path": "conllu", "data_files": str(TREEBANK / "en_ewt-ud-train.conllu"), "limit": 60},
        "tb_dev": {"path": "conllu", "data_files": str(TREEBANK / "en_ewt-ud-dev.conllu"), "limit": 30},
        "code": {"path": "python_code", "data_files": str(FUNCTIONS), "partition": "test", "limit": 6, "max_length": 128},
    }
    recipe_file = write_yaml(folder / "every-kind.yaml", recipe(tiny_model_dir("bert"), name="every-kind", datasets=datasets, steps=STEPS))
    store = folder / "store"
    for options in ((), ("--set", "steps.attention.denominators=clark")):
        result = cli("run", recipe_file, "--store", store, "-q", *options)
        assert result.code == 0, result.text
    return store


@pytest.fixture(scope="module")
def runs(store) -> tuple[RunDetail, RunDetail]:
    from workbench.db.store import Store

    db = Store.open(store)
    return db.get_run(1), db.get_run(2)


@pytest.fixture(scope="module")
def figures(runs, store) -> list[NamedFigure]:
    return run_figures(runs[0], store / "cache")


@pytest.fixture(scope="module")
def png_dir(store, tmp_path_factory) -> tuple[Path, dict]:
    """Every figure of run 1 and every difference of run 2 - run 1, written as PNG by a fresh process."""
    out = tmp_path_factory.mktemp("png")
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(store), str(out), "1", "2"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout.strip().splitlines()[-1])


# --- every figure, every kind ----------------------------------------------------------------------


def test_every_step_kind_has_its_figures(runs, figures):
    from workbench.steps.registry import STEP_TYPES

    assert {step.kind for step in runs[0].steps} == set(STEP_TYPES)  # the recipe covers every kind
    names = [item.name for item in figures]
    assert set(EXPECTED) <= set(names), sorted(set(EXPECTED) - set(names))
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", name) for name in names)
    drawn_steps = {item.step for item in figures}
    assert drawn_steps == {step.step_id for step in runs[0].steps} - {"evaluate"}  # evaluate: metrics only


def test_drawing_imports_neither_torch_nor_transformers(png_dir):
    _, report = png_dir
    assert report["heavy"] == []  # nor pyplot: no global figure state
    assert any(name.startswith("attention__diff-") for name in report["written"])


def test_every_png_decodes(png_dir, figures):
    folder, report = png_dir
    for item in figures:
        assert f"{item.name}.png" in report["written"]
        image = matplotlib.image.imread(folder / f"{item.name}.png")  # [height, width, channels]
        width, height = item.figure.get_size_inches() * 80
        assert image.shape[1] == pytest.approx(width, abs=2) and image.shape[0] == pytest.approx(height, abs=2)
        assert image.shape[2] in (3, 4) and float(image[..., :3].std()) > 0.01  # not a blank canvas


def test_every_svg_parses_with_text_kept_as_text(figures, tmp_path):
    paths = write_figures(figures, tmp_path, "svg")
    assert [path.name for path in paths] == [f"{item.name}.svg" for item in figures]
    for item, path in zip(figures, paths):
        raw = path.read_text()
        root = ET.fromstring(raw)
        assert root.tag == f"{SVG}svg"
        width_in, height_in = item.figure.get_size_inches()
        assert float(root.get("width").removesuffix("pt")) == pytest.approx(width_in * 72, abs=0.5)  # paper sizes, exactly
        assert float(root.get("height").removesuffix("pt")) == pytest.approx(height_in * 72, abs=0.5)
        assert root.find(f".//{SVG}g[@id='axes_1']") is not None, item.name
        text = " ".join("".join(element.itertext()) for element in root.iter(f"{SVG}text"))
        assert text.strip(), f"{item.name}: no <text>: glyphs were drawn as paths"
        assert "DejaVuSans-" not in raw  # no glyph outlines
        for expected in EXPECTED.get(item.name, []):
            assert expected in text, f"{item.name}: {expected!r} not in {text[:300]!r}"
        assert width_in in (pytest.approx(3.4), pytest.approx(7.0)), item.name  # a column or the text width


def test_pdf_embeds_truetype_fonts(figures, tmp_path):
    target = write_figures([figures[0]], tmp_path / "one.pdf")[0]
    data = target.read_bytes()
    assert data.startswith(b"%PDF") and b"/FontFile2" in data and b"/Type3" not in data


# --- what the figures show ------------------------------------------------------------------------


def by_name(figures: list[NamedFigure], name: str) -> NamedFigure:
    return next(item for item in figures if item.name == name)


def test_pruned_heads_are_hatched(figures):
    hatched = [p for p in by_name(figures, "attention_pruned__heads-entropy_smoothed").figure.axes[0].patches if p.get_hatch() == HATCH]
    cells = sorted((int(p.get_y() + 0.5), int(p.get_x() + 0.5)) for p in hatched)
    assert cells == sorted((layer, head) for layer, heads in PRUNED.items() for head in heads)
    unpruned = by_name(figures, "attention__heads-entropy_smoothed").figure.axes[0].patches
    assert not [p for p in unpruned if p.get_hatch()]


def test_signed_scores_diverge_around_zero(figures):
    signed = by_name(figures, "head_ablation__heads-score_delta").figure.axes[0].images[0]
    assert signed.cmap.name == DIVERGING and signed.norm.vmin == -signed.norm.vmax
    plain = by_name(figures, "importance__heads-importance").figure.axes[0].images[0]
    assert plain.cmap.name == SEQUENTIAL


def test_pruning_curve_shows_the_search_and_its_threshold(runs, figures):
    search = runs[0].step("mask_search")
    axes = by_name(figures, "prune_curve__curve").figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    iterations = search.data["iterations"]
    assert list(lines["mask search"].get_xdata()) == [row["percent_masked"] for row in iterations]
    threshold = lines[f"threshold: {search.data['rule']}"].get_ydata()[0]
    assert threshold == pytest.approx(0.5 * iterations[0]["score"])
    assert list(lines["pruning curve"].get_xdata()) == [0, 25, 50]


def test_lower_is_better_threshold_is_original_over_threshold():
    from workbench.figures.run import _search_overlay

    rows = [{"iteration": 0, "heads_masked": 0, "percent_masked": 0.0, "score": 2.0}, {"iteration": 1, "heads_masked": 2, "percent_masked": 25.0, "score": 2.1}]
    search = StepRecord("s", "mask_search", "k", "done", 1.0, None, {}, {"metric": "loss", "iterations": rows, "threshold": 0.8, "rule": "loss <= original / 0.8"}, {"heads_masked": 2})
    overlay = _search_overlay(search)
    assert overlay["threshold"] == pytest.approx(2.0 / 0.8)
    assert overlay["kept"] == (25.0, 2.1)


def test_speed_bars_are_medians_with_iqr_error_bars(runs, figures):
    from matplotlib.container import BarContainer, ErrorbarContainer

    axes = by_name(figures, "prune__speed").figure.axes[0]
    speed = runs[0].step("prune").data["speed"]
    bars = [c for c in axes.containers if isinstance(c, BarContainer)]  # before, after
    errors = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    for which, container, error in zip(("before", "after"), bars, errors):
        assert [bar.get_height() for bar in container] == pytest.approx([row[which]["median"] for row in speed])
        spans = [(segment[0][1], segment[1][1]) for segment in error.lines[2][0].get_segments()]  # q1 .. q3
        assert spans == [pytest.approx((row[which]["q1"], row[which]["q3"])) for row in speed]


def test_probe_marks_expected_layer_and_center_of_gravity(runs, figures):
    step = runs[0].step("probe")
    mix_axes, delta_axes = by_name(figures, "probe__layer_use").figure.axes
    labels = [line.get_label() for line in mix_axes.get_lines()] + [line.get_label() for line in delta_axes.get_lines()]
    assert f"center of gravity {step.metrics['center_of_gravity']:.2f}" in labels
    assert f"expected layer {step.data['cumulative']['expected_layer']:.2f}" in labels


def test_attention_maps_are_read_and_selected(runs, store):
    chosen = run_figures(runs[0], store / "cache", steps=["attention"], scores=None, maps=["1:2", "-1"])
    maps = [item for item in chosen if item.kind == "attention_map"]
    assert [item.name for item in maps] == ["attention__map-ex0-layer1-head2", "attention__map-ex0-layer1-mean"]
    tokens = runs[0].step("attention").data["maps"]["0"]
    labels = [label.get_text() for label in maps[0].figure.axes[0].get_xticklabels()]
    assert labels == tokens
    without_cache = run_figures(runs[0], None, steps=["attention"])
    assert not [item for item in without_cache if item.kind == "attention_map"]
    with pytest.raises(FigureError, match="layers 0..1"):
        run_figures(runs[0], store / "cache", steps=["attention"], maps=["5"])


# --- compare --------------------------------------------------------------------------------------


def test_compare_draws_differences_of_the_changed_step_only(runs):
    differences = compare_figures(*runs)
    assert differences and {item.step for item in differences} == {"attention"}
    assert all(item.name.startswith("attention__diff-") for item in differences)
    heatmap = next(item for item in differences if item.kind == "head_heatmap")
    image = heatmap.figure.axes[0].images[0]
    assert image.cmap.name == DIVERGING and image.norm.vmin == -image.norm.vmax
    with pytest.raises(NothingToPlot, match="no head or layer score differs") as error:
        compare_figures(runs[0], runs[0])
    assert "identical steps (one cache entry): finetune" in str(error.value)
    with pytest.raises(UnknownStep, match="step 'atention'"):
        compare_figures(*runs, steps=["atention"])


# --- selection, names, files ----------------------------------------------------------------------


def test_unknown_steps_and_scores_list_the_valid_ones(runs, store):
    with pytest.raises(UnknownStep) as error:
        run_figures(runs[0], store / "cache", steps=["atention"])
    assert "did you mean 'attention'?" in str(error.value) and "prune_curve" in str(error.value)
    with pytest.raises(UnknownScore) as error:
        run_figures(runs[0], store / "cache", steps=["importance"], scores=["entropy_smoothed"])
    assert "valid: entropy_per_token, importance, importance_raw, rank" in str(error.value)
    with pytest.raises(NothingToPlot):
        run_figures(runs[0], store / "cache", steps=["evaluate"])


def test_scores_pick_their_figures(runs, store):
    chosen = run_figures(runs[0], store / "cache", scores=["entropy_smoothed", "cat"])
    assert [item.name for item in chosen] == [
        "attention__heads-entropy_smoothed",
        "attention__layers-entropy_smoothed",
        "attention_pruned__heads-entropy_smoothed",
        "attention_pruned__layers-entropy_smoothed",
        "cat__heads-cat",
        "cat__layers-cat",
    ]


def test_write_figures_to_one_file_or_a_folder(figures, tmp_path):
    one = [by_name(figures, "finetune__loss")]
    for fmt in FORMATS:
        assert write_figures(one, tmp_path / f"loss.{fmt}") == [tmp_path / f"loss.{fmt}"]
    assert write_figures(one, tmp_path / "nested" / "folder", "svg") == [tmp_path / "nested" / "folder" / "finetune__loss.svg"]
    with pytest.raises(OutputError, match="give a directory"):
        write_figures(figures[:2], tmp_path / "two.png")
    with pytest.raises(OutputError, match="format 'jpg'"):
        write_figures(one, tmp_path, "jpg")
    with pytest.raises(OutputError, match="the file name says png"):
        write_figures(one, tmp_path / "x.png", "svg")
    with pytest.raises(OutputError, match="not jpeg"):
        write_figures(one, tmp_path / "x.jpeg")
    assert not list(tmp_path.glob(".*.tmp"))  # temporary files are renamed or removed
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "loss.png").stat().st_mode & 0o777 == 0o666 & ~umask  # as any file the user writes, not 0600
    again = write_figures(one, tmp_path / "again.svg")[0]
    assert again.read_bytes() == (tmp_path / "loss.svg").read_bytes()  # no dates, stable ids: reproducible files


def test_matplotlib_global_state_is_untouched(figures):
    assert matplotlib.rcParams["svg.fonttype"] == matplotlib.rcParamsDefault["svg.fonttype"]
    assert matplotlib.rcParams["font.size"] == matplotlib.rcParamsDefault["font.size"]
    assert "matplotlib.pyplot" not in sys.modules or not __import__("matplotlib.pyplot").pyplot.get_fignums()


def test_labels_from_data_are_never_mathtext(tmp_path):
    from workbench.figures.attention import attention_map
    from workbench.figures.heads import head_heatmap

    tokens = ["$", "a$b", "$x^2$", "[/red]"]
    grid = np.full((4, 4), 0.25)
    path = write_figures([NamedFigure("map", None, "attention_map", attention_map(grid, tokens, title="$ money"))], tmp_path, "svg")[0]
    text = " ".join("".join(e.itertext()) for e in ET.parse(path).getroot().iter(f"{SVG}text"))
    assert all(token in text for token in tokens) and "$ money" in text
    figure = head_heatmap([[None, 1.0], [math.nan, 2.0]], name="x", pruned=[[True, False], [False, False]])
    assert len([p for p in figure.axes[0].patches if p.get_hatch() == HATCH]) == 1  # None and NaN both missing; one pruned
