"""The registry of dataset kinds (workbench/data/kinds/): one kind per recipe `path:`, capabilities
that drive what the steps accept, and the messages the steps gave when they compared path strings."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from workbench.context import RunResources, StepContext
from workbench.data import kinds
from workbench.data.kinds import CAPABILITIES, KINDS, OWN_PATHS, kind_description, kind_for, kinds_with, paths_with
from workbench.data.kinds.treebank import TreebankKind
from workbench.data.loaded import LoadedDataset
from workbench.data.sources import OWN_SOURCES, check_dataset_spec, load_dataset_spec
from workbench.errors import StepError, WorkbenchError
from workbench.recipe.schema import DatasetSpec, Recipe
from workbench.steps.cat_probe import CatProbeParams
from workbench.steps.extract import ExtractParams
from workbench.steps.probe import TASK_NEEDS, ProbeParams
from workbench.steps.syntax_heads import SyntaxHeadsParams

CONLLU = "1\tDogs\tdog\tNOUN\tNNS\t_\t2\tnsubj\t_\t_\n2\tbark\tbark\tVERB\tVBP\t_\t0\troot\t_\t_\n"
CODE = {"code": "def add(a, b):\n    return a + b\n", "func_name": "add"}


def test_every_own_path_is_read_by_exactly_one_kind():
    claimed = [path for kind in KINDS for path in kind.paths]
    assert len(claimed) == len(set(claimed))
    assert OWN_SOURCES == OWN_PATHS == ("tsv", "conllu", "python_code", "agreement")
    assert {path: kind_for(path).kind for path in OWN_PATHS} == {
        "tsv": "text",
        "conllu": "treebank",
        "python_code": "code",
        "agreement": "text",
    }
    for other in ("csv", "json", "parquet", "glue", "nyu-mll/glue", "./my_dataset"):  # datasets.load_dataset reads these
        assert kind_for(other) is kinds.TEXT


def test_capabilities_are_declared_and_typos_are_refused():
    assert {kind.kind: set(kind.capabilities) for kind in KINDS if kind.paths != ("agreement",)} == {
        "text": {"texts", "labels", "streaming"},
        "treebank": {"words", "dependency_trees"},
        "code": {"words", "code_trees"},
    }
    assert set(kind_for("agreement").capabilities) == {"texts", "labels"}  # generated: a text dataset that cannot stream
    assert all(kind.capabilities <= CAPABILITIES for kind in KINDS)
    with pytest.raises(ValueError, match="unknown dataset capability"):
        kind_for("conllu").supports("dependency_tree")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown capabilities"):
        type("Broken", (TreebankKind,), {"capabilities": frozenset({"trees"})})
    assert set(TASK_NEEDS.values()) <= CAPABILITIES


def test_messages_name_the_kinds_as_before():
    assert [kind_description(name) for name in ("text", "treebank", "code")] == [
        "text",
        "treebank (path: conllu)",
        "code (path: python_code)",
    ]
    assert kind_description(capability="texts") == "text"  # the text and the generated kind: named once
    assert paths_with("dependency_trees") == "conllu" and paths_with("code_trees") == "python_code"
    assert paths_with("words") == "conllu or python_code"
    assert [kind.kind for kind in kinds_with("words")] == ["treebank", "code"]


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, DatasetSpec]:
    (tmp_path / "tiny.conllu").write_text(CONLLU, encoding="utf-8")
    (tmp_path / "functions.jsonl").write_text(json.dumps(CODE) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n", encoding="utf-8")
    return {
        "tb": DatasetSpec(path="conllu", data_files="tiny.conllu"),
        "code": DatasetSpec(path="python_code", data_files="functions.jsonl"),
        "agree": DatasetSpec(path="agreement", size=10, text="sentence", label="label"),
        "dev": DatasetSpec(path="tsv", data_files="dev.tsv", text="sentence", label="label"),
    }


def test_each_kind_loads_what_it_declares(sources, tmp_path):
    for name, spec in sources.items():
        assert check_dataset_spec(spec, tmp_path) == []
        loaded = load_dataset_spec(name, spec, tmp_path)
        kind = kind_for(spec.path)
        assert loaded.kind == kind.kind and loaded.dataset_kind is kind
        assert len(loaded) == {"tb": 1, "code": 1, "agree": 10, "dev": 2}[name]
        if loaded.supports("words"):
            assert loaded.items() == (loaded.sentences if name == "tb" else loaded.examples)
            words = [list(kind.item_words(item)) for item in loaded.items()]
            assert words == ([["Dogs", "bark"]] if name == "tb" else [list(loaded.examples[0].tokens)])
        else:
            assert loaded.texts() and loaded.labels() is not None


def test_a_kind_checks_its_own_options():
    problems = dict(check_dataset_spec(DatasetSpec(path="conllu", partition="x", data_files="x.conllu"), Path(".")))
    assert problems["partition"].startswith("unknown option 'partition'")  # a python_code option, not a conllu one
    assert "partition" not in dict(check_dataset_spec(DatasetSpec(path="python_code", partition="x", data_files="x"), Path(".")))
    assert ("data_files", "a conllu dataset needs data_files") in check_dataset_spec(DatasetSpec(path="conllu"), Path("."))
    assert ("text", "name the text column (or two columns for sentence pairs)") in check_dataset_spec(
        DatasetSpec(path="tsv", data_files="x.tsv"), Path(".")
    )
    assert not [field for field, _ in check_dataset_spec(DatasetSpec(path="agreement"), Path("."))]  # generated: no text needed
    streaming = dict(check_dataset_spec(DatasetSpec(path="agreement", streaming=True), Path(".")))
    assert streaming["streaming"].startswith("a agreement dataset is read whole")


def _recipe(datasets: dict, steps: dict) -> Recipe:
    return Recipe(version=1, name="kinds", model={"id": "m"}, datasets=datasets, steps=steps)


def test_recipe_checks_ask_the_kind_for_a_capability():
    text = {"path": "agreement", "size": 10, "text": "sentence", "label": "label"}
    recipe = _recipe({"text": text, "tb": {"path": "conllu", "data_files": "x.conllu"}}, {"x": {"kind": "extract", "dataset": "text"}})
    assert SyntaxHeadsParams(kind="syntax_heads", dataset="text").check(recipe) == [
        ("dataset", "syntax_heads needs a conllu treebank; 'text' is agreement")
    ]
    assert SyntaxHeadsParams(kind="syntax_heads", dataset="tb").check(recipe) == []
    assert CatProbeParams(kind="cat_probe", dataset="tb").check(recipe) == [
        ("dataset", "cat_probe needs a python_code dataset; 'tb' is conllu")
    ]
    assert ExtractParams(kind="extract", dataset="tb", pooling="none").check(recipe) == [
        ("pooling", "conllu datasets give one vector per word: use first, mean or last sub-token")
    ]
    assert ExtractParams(kind="extract", dataset="text", pooling="none").check(recipe) == []
    probe = ProbeParams(kind="probe", task="upos", train="x", dev="x")
    assert probe.check(recipe) == [(field, "task 'upos' needs a conllu dataset; 'x' reads agreement") for field in ("train", "dev")]
    label = ProbeParams(kind="probe", task="label", train="x", dev="x")
    assert label.check(recipe) == []
    assert label.check(_recipe({"text": {**text, "label": None}}, recipe.steps))[0][1].startswith("task 'label' needs a text dataset")


def test_a_new_kind_with_a_capability_is_accepted_by_the_steps_that_need_it(monkeypatch):
    class OtherTreebank(TreebankKind):
        kind = "treebank"
        paths = ("other_treebank",)

    monkeypatch.setitem(kinds._BY_PATH, "other_treebank", OtherTreebank())
    recipe = _recipe({"tb": {"path": "other_treebank"}}, {"x": {"kind": "extract", "dataset": "tb"}})
    assert SyntaxHeadsParams(kind="syntax_heads", dataset="tb").check(recipe) == []
    assert ExtractParams(kind="extract", dataset="tb", pooling="none").check(recipe)[0][0] == "pooling"
    assert CatProbeParams(kind="cat_probe", dataset="tb").check(recipe) != []


def _context(step_kind: str, loaded: LoadedDataset, tmp_path: Path) -> StepContext:
    resources = RunResources.__new__(RunResources)  # only the loaded datasets are needed here
    resources.datasets = {loaded.name: loaded}
    return StepContext(resources, SimpleNamespace(kind=step_kind, step_id="s"), tmp_path)  # type: ignore[arg-type]


def test_a_text_dataset_given_to_syntax_heads_is_refused_with_the_old_message(sources, tmp_path):
    text = load_dataset_spec("text", sources["agree"], tmp_path)
    with pytest.raises(StepError) as refused:
        _context("syntax_heads", text, tmp_path).dataset("text", needs="dependency_trees")
    assert refused.value.message == "syntax_heads reads treebank (path: conllu) datasets; 'text' is a text dataset"
    code = load_dataset_spec("code", sources["code"], tmp_path)
    with pytest.raises(StepError) as refused:
        _context("attention", code, tmp_path).dataset("code", "text")  # by kind name, as attention asks
    assert refused.value.message == "attention reads text datasets; 'code' is a code (path: python_code) dataset"
    with pytest.raises(StepError) as refused_by_capability:
        _context("attention", code, tmp_path).dataset("code", needs="texts")  # as attention asks now
    assert refused_by_capability.value.message == refused.value.message
    assert _context("attention", text, tmp_path).dataset("text", needs="texts") is text  # generated: a text dataset
    with pytest.raises(StepError, match="cat_probe reads code \\(path: python_code\\) datasets; 'text' is a text dataset"):
        _context("cat_probe", text, tmp_path).dataset("text", needs="code_trees")
    assert _context("cat_probe", code, tmp_path).dataset("code", needs="code_trees") is code
    assert isinstance(refused.value, WorkbenchError)


def test_generated_kinds_say_so_to_the_provenance_and_bound_their_size(tmp_path, monkeypatch):
    from workbench.bundles.provenance import dataset_provenance
    from workbench.data.kinds.generated import AgreementKind
    from workbench.errors import RecipeError
    from workbench.recipe.loader import load_recipe

    assert [path for kind in KINDS if kind.generated for path in kind.paths] == ["agreement"]
    assert kind_for("agreement").size_bounds == (2, 1_000_000) and kind_for("tsv").size_bounds is None
    assert dataset_provenance(DatasetSpec(path="agreement", size=10), tmp_path)["generated"] is True
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\n", encoding="utf-8")
    assert "generated" not in dataset_provenance(DatasetSpec(path="tsv", data_files="dev.tsv", text="sentence"), tmp_path)

    class Sentences(AgreementKind):  # another generated kind, with its own bound: nothing else names it
        paths = ("sentences",)
        size_bounds = (2, 50)

    monkeypatch.setitem(kinds._BY_PATH, "sentences", Sentences())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "version: 1\nname: sizes\nmodel: {id: m}\ndatasets:\n  dev:\n    path: sentences\n    size: 51\n"
        "steps:\n  x: {kind: extract, dataset: dev}\n",
        encoding="utf-8",
    )
    with pytest.raises(RecipeError) as refused:
        load_recipe(recipe)
    assert (refused.value.line, refused.value.field) == (7, "datasets.dev.size")
    assert refused.value.detail == "expected an integer of at least 2 and at most 50, got 51"
    assert dataset_provenance(DatasetSpec(path="sentences", size=10), tmp_path)["generated"] is True
