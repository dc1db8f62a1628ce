"""Broken data files and model folders: exit 2, no traceback, the place named, the data never quoted.

Every case is one mistake. The data files are in tests/data/bad_inputs/ (those that must be binary or
long are written by the test); the model folders are copies of the tiny models of tests/conftest.py,
damaged one way each. For each case `workbench run` exits 2 with a message that names the dataset and
the file (or the model folder) and a keyword, quotes no data (every text in these files contains the
word "secret"), and leaves nothing in the store's cache; where `workbench validate` can already see
the mistake (`validate=True`), it reports it too, at the recipe's file:line of the field to fix.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, CliResult, cli, cli_subprocess, plain, recipe, write_yaml

BAD_INPUTS = REPO / "tests" / "data" / "bad_inputs"
DATASET = "dev_data"
MARKER = "secret"  # in every text of every broken file: it must never reach a message


# --- the cases ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataCase:
    id: str
    file: str  # in tests/data/bad_inputs/, or written by WRITTEN_FILES
    keywords: tuple[str, ...]
    validate: bool  # `workbench validate` reports it already
    line: int | None = None  # the data file's line the message must name
    recipe_field: str | None = None  # the recipe field validate blames, below datasets.dev_data
    spec: dict[str, Any] = field(default_factory=dict)  # the dataset, minus data_files
    num_labels: int | None = 2


def text_dataset(path: str = "tsv", **extra: Any) -> dict[str, Any]:
    return {"path": path, "text": "sentence", "label": "label", **extra}


TSV, CSV, JSON = text_dataset("tsv"), text_dataset("csv"), text_dataset("json")
CONLLU = {"path": "conllu"}
CODE = {"path": "python_code"}

DATA_CASES = [
    DataCase("empty-tsv", "empty.tsv", ("empty",), True, recipe_field="data_files", spec=TSV),
    DataCase("header-only-tsv", "header_only.tsv", ("header", "no rows"), True, recipe_field="data_files", spec=TSV),
    DataCase("too-many-fields", "too_many_fields.tsv", ("3 tab-separated fields", "header has 2"), True, 3, "data_files", TSV),
    DataCase("too-few-fields", "too_few_fields.tsv", ("1 tab-separated field", "header has 2"), True, 3, "data_files", TSV),
    DataCase("no-text-column", "no_sentence_column.tsv", ("no column 'sentence'", "text, label"), True, recipe_field="text", spec=TSV),
    DataCase("empty-text", "empty_text.tsv", ("empty or missing text",), True, 3, "text", TSV),
    DataCase("whitespace-text", "whitespace_text.tsv", ("empty or missing text",), True, 3, "text", TSV),
    DataCase("na-text", "na_text.tsv", ("empty or missing text", "keep_default_na"), True, 3, "text", TSV),
    DataCase("latin1-tsv", "latin1.tsv", ("not utf-8", "byte"), True, 3, "data_files", TSV),
    DataCase("unclosed-quote-csv", "unclosed_quote.csv", ("unclosed quote",), True, 3, "data_files", CSV),
    DataCase("float-labels", "float_labels.csv", ("float label on a classification head",), True, 2, "label", CSV),
    DataCase("string-labels-regression", "string_labels.csv", ("regression head",), True, 2, "label", CSV, num_labels=1),
    DataCase("class-id-too-large", "class_id_too_large.csv", ("class id 7, outside 0..1",), True, 3, "label", CSV),
    DataCase("missing-label", "missing_label.csv", ("without a label",), True, 3, "label", CSV),
    DataCase("json-truncated-object", "truncated_object.jsonl", ("not valid JSON",), True, 2, "data_files", JSON),
    DataCase("json-array-line", "array_line.jsonl", ("JSON object", "array"), True, 2, "data_files", JSON),
    DataCase("json-null-text", "null_text.jsonl", ("empty or missing text",), True, 2, "text", JSON),
    DataCase("json-no-text-field", "no_sentence_field.jsonl", ("no column 'sentence'",), True, recipe_field="text", spec=JSON),
    DataCase("json-empty", "empty.jsonl", ("empty",), True, recipe_field="data_files", spec=JSON),
    DataCase("bad-row-after-the-first-rows", "late_bad_row.tsv", ("3 tab-separated fields",), False, 302, spec=TSV),
    DataCase("empty-text-after-the-first-rows", "late_empty_text.tsv", ("empty or missing text", "1 of 300"), False, 252, spec=TSV),
    DataCase("parquet-garbage", "garbage.parquet", ("could not read", "ArrowInvalid"), False,
             spec=text_dataset("parquet")),
    DataCase("missing-data-dir", "", ("folder not found", "no_such_folder"), True, recipe_field="data_dir",
             spec=text_dataset("csv", data_dir="no_such_folder")),
    DataCase("missing-local-dataset-folder", "", ("folder not found", "no_such_dataset"), True, recipe_field="path",
             spec=text_dataset("./no_such_dataset")),
    DataCase("conllu-comments-only", "comments_only.conllu", ("no sentence",), False, spec=CONLLU),
    DataCase("conllu-eight-columns", "eight_columns.conllu", ("expected 10 tab-separated columns, found 8",), False, 3, spec=CONLLU),
    DataCase("conllu-head-out-of-range", "head_out_of_range.conllu", ("head 9",), False, 2, spec=CONLLU),
    DataCase("conllu-head-not-a-number", "head_not_a_number.conllu", ("head field is not a valid word id",), False, 2, spec=CONLLU),
    DataCase("conllu-latin1", "latin1.conllu", ("not utf-8",), False, 3, spec=CONLLU),
    DataCase("code-nothing-parses", "unparsable_code.jsonl", ("no source could be read", "not valid Python"), False, spec=CODE),
    DataCase("code-no-code-field", "no_code_field.jsonl", ("no field 'code'",), False, 1, spec=CODE),
    DataCase("code-broken-json-line", "broken_json_line.jsonl", ("not valid JSON",), False, 2, spec=CODE),
]


def _rows(count: int) -> list[str]:
    return [f"the secret sentence number {i}\t{i % 2}" for i in range(count)]


WRITTEN_FILES: dict[str, Callable[[], bytes]] = {
    # Latin-1 bytes where UTF-8 is expected: line 3 holds an é written as the single byte 0xe9.
    "latin1.tsv": lambda: "sentence\tlabel\nthe first secret sentence\t1\nthe caf\xe9 secret sentence\t0\n".encode("latin-1"),
    "latin1.conllu": lambda: (
        "# sent_id = s1\n1\tthe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n2\tcaf\xe9secret\tx\tNOUN\tNN\t_\t0\troot\t_\t_\n"
    ).encode("latin-1"),
    # Beyond the 200 rows validate peeks at: only loading, which reads everything, sees these.
    "late_bad_row.tsv": lambda: "\n".join(["sentence\tlabel", *_rows(300), "the secret stray row\t1\textra", ""]).encode(),
    "late_empty_text.tsv": lambda: "\n".join(["sentence\tlabel", *_rows(250), "\t1", *_rows(49), ""]).encode(),
    "garbage.parquet": lambda: b"PAR1 this is no secret parquet file PAR1",
}


def data_file(name: str, folder: Path) -> Path:
    """The case's file, copied (or written) into `folder`, where the recipe names it by a relative path."""
    target = folder / "data" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if name in WRITTEN_FILES:
        target.write_bytes(WRITTEN_FILES[name]())
    else:
        shutil.copyfile(BAD_INPUTS / name, target)
    return target


def data_recipe(case: DataCase, folder: Path, model_dir: Path) -> Path:
    dataset = dict(case.spec)
    if case.file:
        data_file(case.file, folder)
        dataset["data_files"] = f"data/{case.file}"
    if dataset["path"] in ("conllu", "python_code"):
        steps = {"extract": {"kind": "extract", "dataset": DATASET, "pooling": "mean"}}
        head = "base"
    else:
        steps = {"evaluate": {"kind": "evaluate", "dataset": DATASET}}
        head = "sequence-classification"
    document = recipe(model_dir, head=head, num_labels=case.num_labels if head != "base" else None,
                      datasets={DATASET: dataset}, steps=steps)
    return write_yaml(folder / "recipe.yaml", document)


@dataclass(frozen=True)
class ModelCase:
    id: str
    damage: Callable[[Path, Callable], None]  # (the copied folder, tiny_model_dir) -> None
    keywords: tuple[str, ...]
    validate: bool
    recipe_field: str = "model.id"  # the recipe field validate blames
    family: str = "bert"
    change_recipe: Callable[[dict], None] | None = None


def edit_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    for key in [key for key, value in changes.items() if value is None]:
        del config[key]
    (folder / "config.json").write_text(json.dumps(config))


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def to_bin(folder: Path, extra: dict | None = None) -> None:
    """Replace model.safetensors by a pytorch_model.bin of the same tensors (and `extra` objects)."""
    import torch
    from safetensors.torch import load_file

    state = dict(load_file(folder / "model.safetensors"))
    state.update(extra or {})
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")


def sharded_with_a_missing_shard(folder: Path) -> None:
    index = {"metadata": {}, "weight_map": {"bert.embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors",
                                            "classifier.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def header_not_json(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes((12).to_bytes(8, "little") + b"{not json!!}" + b"\0" * 64)


def weights_of(family: str, **options: Any) -> Callable[[Path, Callable], None]:
    def damage(folder: Path, tiny_model_dir: Callable) -> None:
        shutil.copyfile(tiny_model_dir(family, **options) / "model.safetensors", folder / "model.safetensors")

    return damage


def small_vocabulary(folder: Path, tiny_model_dir: Callable) -> None:
    """Consistent config and weights with 100 embedding rows, beside MiniLM's 30,522-token tokenizer."""
    import torch
    import transformers

    from tests.conftest import tiny_config

    torch.manual_seed(0)
    transformers.AutoModelForSequenceClassification.from_config(tiny_config("bert", vocab_size=100)).save_pretrained(folder)


def remove(*names: str) -> Callable[[Path, Callable], None]:
    return lambda folder, _: [(folder / name).unlink() for name in names]


def set_max_length(document: dict) -> None:
    document["datasets"]["dev"]["max_length"] = 512


def extract_layers(*layers: int, probe: list[int] | None = None) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        document["model"]["head"] = "base"
        document["model"].pop("num_labels", None)
        document["steps"] = {"features": {"kind": "extract", "dataset": "dev", "layers": list(layers)}}
        if probe is not None:
            document["steps"]["probe"] = {"kind": "probe", "task": "label", "train": "features", "dev": "features",
                                          "layers": probe}

    return change


MODEL_CASES = [
    ModelCase("no-weights", remove("model.safetensors"), ("no weights", "model.safetensors"), True),
    ModelCase("only-tensorflow-weights", lambda f, _: (f / "model.safetensors").rename(f / "tf_model.h5"),
              ("TensorFlow/Flax",), True),
    ModelCase("config-not-json", lambda f, _: (f / "config.json").write_text('{"model_type": "bert", "hidden_size": 32,'),
              ("config.json is not valid JSON",), True),
    ModelCase("config-not-an-object", lambda f, _: (f / "config.json").write_text('["bert"]'), ("not an object",), True),
    ModelCase("config-not-utf8", lambda f, _: (f / "config.json").write_bytes(b'{"model_type": "b\xe9rt"}'), ("not UTF-8",), True),
    ModelCase("config-no-model-type", lambda f, _: edit_config(f, model_type=None), ("names no model_type",), True),
    ModelCase("config-unknown-model-type", lambda f, _: edit_config(f, model_type="bertt"),
              ("model_type 'bertt'", "does not know", "did you mean 'bert'"), True),
    ModelCase("config-value-of-the-wrong-type", lambda f, _: edit_config(f, hidden_size="thirty-two"),
              ("hidden_size should be a non-negative integer", "string"), True),
    ModelCase("config-heads-do-not-divide", lambda f, _: edit_config(f, num_attention_heads=5), ("not a multiple",), True),
    ModelCase("truncated-safetensors", lambda f, _: truncate(f / "model.safetensors", 0.5), ("truncated",), True),
    ModelCase("empty-safetensors", lambda f, _: (f / "model.safetensors").write_bytes(b""), ("truncated",), True),
    ModelCase("garbage-safetensors", lambda f, _: (f / "model.safetensors").write_bytes(b"not safetensors at all"),
              ("cannot load model", "not a safetensors file"), True),
    ModelCase("safetensors-header-not-json", lambda f, _: header_not_json(f), ("header is not JSON",), True),
    ModelCase("missing-shard", lambda f, _: sharded_with_a_missing_shard(f), ("model-00002-of-00002.safetensors", "missing"), True),
    ModelCase("no-tokenizer", remove("tokenizer.json", "tokenizer_config.json"), ("no tokenizer files",), True),
    ModelCase("weights-of-other-shapes", lambda f, _: edit_config(f, hidden_size=64), ("do not fit", "another shape"), False),
    ModelCase("config-with-more-layers", lambda f, _: edit_config(f, num_hidden_layers=4),
              ("encoder.layer.2", "would be random"), False),
    ModelCase("weights-of-another-architecture", weights_of("gpt2"), ("backbone tensors", "would be random"), False),
    ModelCase("classifier-of-another-size", weights_of("bert", num_labels=3), ("classifier", "num_labels"), False),
    ModelCase("bin-with-a-pickled-object", lambda f, _: to_bin(f, {"extra": argparse.Namespace(x=1)}),
              ("refused to unpickle", "safetensors"), False),
    ModelCase("bin-garbage", lambda f, _: [remove("model.safetensors")(f, _), (f / "pytorch_model.bin").write_bytes(b"junk")],
              ("pytorch_model.bin is corrupt",), False),
    ModelCase("tokenizer-larger-than-embeddings", small_vocabulary, ("30522 tokens", "100 rows"), False),
    ModelCase("max-length-beyond-positions", lambda f, _: None, ("max_length is 512", "at most 128 tokens"), True,
              recipe_field="datasets.dev.max_length", family="gpt2", change_recipe=set_max_length),
    ModelCase("extract-layer-the-model-lacks", lambda f, _: None, ("layer 5 does not exist", "0..2"), True,
              recipe_field="steps.features.layers.1", change_recipe=extract_layers(0, 5)),
    ModelCase("probe-layer-not-extracted", lambda f, _: None, ("layer 1 is not among the layers 'features'", "0, 2"), True,
              recipe_field="steps.probe.layers.0", change_recipe=extract_layers(0, -1, probe=[1])),
]


# --- the checks ----------------------------------------------------------------------------------------


def check_reported(result: CliResult, keywords: tuple[str, ...], places: tuple[str, ...]) -> str:
    """Exit 2, no traceback, every place and keyword in the message, and not a word of the data."""
    text = result.text
    assert result.code == 2, text
    assert "Traceback" not in result.out + result.err, text
    for expected in (*places, *keywords):
        assert expected in text, f"{expected!r} not in: {text}"
    assert MARKER not in text.lower(), f"the message quotes the data: {text}"
    return text


def check_nothing_cached(store: Path) -> None:
    cache = store / "cache"
    written = [p for p in cache.rglob("*") if p.is_file()] if cache.is_dir() else []
    assert written == [], written


def check_data_not_quoted(text: str, data: Path | None) -> None:
    """No line of the file appears in the message (the column list of a header may)."""
    if data is None or not data.is_file():
        return
    for line in data.read_bytes().decode("utf-8", errors="replace").splitlines()[1:]:
        if len(line.strip()) >= 8:
            assert line.strip() not in text, f"{line!r} quoted in: {text}"


def test_the_corpus_holds_enough_broken_inputs():
    assert len(DATA_CASES) + len(MODEL_CASES) >= 25
    on_disk = {path.name for path in BAD_INPUTS.iterdir()}
    assert {case.file for case in DATA_CASES if case.file and case.file not in WRITTEN_FILES} <= on_disk


@pytest.mark.parametrize("case", DATA_CASES, ids=lambda case: case.id)
def test_a_broken_data_file_is_named_and_not_quoted(case, tmp_path, tiny_model_dir, monkeypatch):
    path = data_recipe(case, tmp_path, tiny_model_dir("bert", "base") if case.spec["path"] in ("conllu", "python_code")
                       else tiny_model_dir("bert"))
    monkeypatch.chdir(REPO)  # not the recipe's folder: relative paths must resolve against the recipe
    places = (DATASET,) + ((case.file if case.line is None else f"{case.file}:{case.line}",) if case.file else ())
    data = tmp_path / "data" / case.file if case.file else None

    if case.validate:
        text = check_reported(cli("validate", path), case.keywords, places)
        assert re.search(rf"recipe\.yaml:\d+ datasets\.{DATASET}\.{re.escape(case.recipe_field or '')}", text), text
        check_data_not_quoted(text, data)

    store = tmp_path / "store"
    text = check_reported(cli("run", path, "--store", store), case.keywords, places)
    check_data_not_quoted(text, data)
    check_nothing_cached(store)


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda case: case.id)
def test_a_broken_model_folder_is_named(case, tmp_path, tiny_model_dir):
    folder = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir(case.family), folder)
    case.damage(folder, tiny_model_dir)
    document = recipe(folder, datasets={"dev": {"path": "agreement", "size": 8, "text": "sentence", "label": "label"}},
                      steps={"evaluate": {"kind": "evaluate", "dataset": "dev"}})
    if case.change_recipe:
        case.change_recipe(document)
    path = write_yaml(tmp_path / "recipe.yaml", document)
    places = (str(folder),) if case.recipe_field == "model.id" else ()

    if case.validate:
        text = check_reported(cli("validate", path), case.keywords, places)
        assert re.search(rf"recipe\.yaml:\d+ {re.escape(case.recipe_field)}:", text), text

    store = tmp_path / "store"
    check_reported(cli("run", path, "--store", store), case.keywords, places)
    check_nothing_cached(store)


# --- what the checks must let through ------------------------------------------------------------------


def test_bin_only_weights_load_through_the_weights_only_unpickler(tmp_path, tiny_model_dir, store_dir):
    folder = tmp_path / "bin-model"
    shutil.copytree(tiny_model_dir("bert"), folder)
    to_bin(folder)
    document = recipe(folder, datasets={"dev": {"path": "agreement", "size": 8, "text": "sentence", "label": "label"}},
                      steps={"evaluate": {"kind": "evaluate", "dataset": "dev"}})
    result = cli("run", write_yaml(tmp_path / "recipe.yaml", document), "--store", store_dir, "-q")
    assert result.code == 0, result.text


def test_a_local_dataset_folder_resolves_against_the_recipe_not_the_cwd(tmp_path, tiny_model_dir, store_dir, monkeypatch):
    folder = tmp_path / "project" / "local_ds"
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("sentence,label\n" + "".join(f"a short sentence {i},{i % 2}\n" for i in range(8)))
    document = recipe(tiny_model_dir("bert"), datasets={"dev": {"path": "./local_ds", "text": "sentence", "label": "label"}},
                      steps={"evaluate": {"kind": "evaluate", "dataset": "dev"}})
    path = write_yaml(tmp_path / "project" / "recipe.yaml", document)
    monkeypatch.chdir(tmp_path)  # where ./local_ds does not exist
    result = cli("run", path, "--store", store_dir, "-q")
    assert result.code == 0, result.text


def test_the_content_of_a_local_dataset_folder_is_in_its_fingerprint(tmp_path):
    from workbench.data.sources import dataset_fingerprint
    from workbench.recipe.schema import DatasetSpec

    (tmp_path / "local_ds").mkdir()
    (tmp_path / "local_ds" / "train.csv").write_text("sentence\none\n")
    spec = DatasetSpec(path="./local_ds", text="sentence")
    before = dataset_fingerprint(spec, tmp_path)
    (tmp_path / "local_ds" / "train.csv").write_text("sentence\ntwo\n")
    assert dataset_fingerprint(spec, tmp_path) != before


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "glue_mrpc").is_dir(), reason="../shared/data is not beside the repo")
def test_the_shared_glue_files_pass_the_file_checks():
    """No false alarms on real data: SST-2 (quotes as text) and MRPC (a byte order mark, pairs)."""
    from workbench.data.files import layout_for, scan

    shared = REPO.parent / "shared" / "data"
    for path, builder, options in [
        (shared / "glue_sst2" / "dev.tsv", "tsv", {}),
        (shared / "glue_sst2" / "train.tsv", "tsv", {}),
        (shared / "glue_mrpc" / "dev.tsv", "csv", {"delimiter": "\t"}),
        (shared / "glue_mrpc" / "train.tsv", "csv", {"delimiter": "\t"}),
    ]:
        layout = layout_for(builder, options, path)
        assert layout is not None and scan(path, layout).row_lines, path


CHECK_IMPORTS = """
import json, sys
sys.argv = ["workbench", "validate", sys.argv[1]]
from workbench.cli import main
try:
    main()
    code = 0
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "heavy": sorted(n for n in ("torch", "transformers") if n in sys.modules)}))
"""


def test_validate_reads_files_and_model_configs_without_torch(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    from tests.helpers import subprocess_env

    data_file("float_labels.csv", tmp_path)
    document = recipe(tiny_model_dir("bert"), datasets={"dev": text_dataset("csv", data_files="data/float_labels.csv")},
                      steps={"evaluate": {"kind": "evaluate", "dataset": "dev"}})
    path = write_yaml(tmp_path / "recipe.yaml", document)
    done = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, str(path)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 2, "heavy": []}, done.stdout + done.stderr
    assert "float label on a classification head" in plain(done.stderr)


# --- the hub, without the hub ---------------------------------------------------------------------------


def closed_port() -> int:
    """A local port nobody listens on: connecting is refused at once, as with no network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


MINIMAL = REPO / "tests" / "data" / "good_recipes" / "minimal.yaml"


def test_an_unreachable_hub_is_one_attempt_and_says_how_to_work_without_it(tmp_path):
    started = time.monotonic()
    result = cli_subprocess(
        "run", MINIMAL, "--store", tmp_path / "store",
        HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None, HF_DATASETS_OFFLINE=None,
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HUB_CACHE=str(tmp_path / "hf"),
    )
    elapsed = time.monotonic() - started
    text = check_reported(result, ("cannot be reached", "HF_HUB_OFFLINE=1", "pkg:", "local folder"),
                          ("google/bert_uncased_L-2_H-128_A-2",))
    assert text.count("Retrying") == 0, text
    # huggingface_hub's five retries alone sleep 23 s; startup (torch) takes a few seconds on a busy machine.
    assert elapsed < 20, f"{elapsed:.1f} s"
    check_nothing_cached(tmp_path / "store")


def test_a_cached_model_behind_an_unreachable_hub_points_to_offline_mode(tmp_path):
    cache = tmp_path / "hf"
    snapshot = cache / "models--google--bert_uncased_L-2_H-128_A-2" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    result = cli_subprocess(
        "run", MINIMAL, "--store", tmp_path / "store",
        HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None, HF_DATASETS_OFFLINE=None,
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HUB_CACHE=str(cache),
    )
    check_reported(result, ("cannot be reached", "is in the local cache", "HF_HUB_OFFLINE=1"), ())


def test_offline_and_not_cached_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    store = tmp_path / "store"
    assert cli("validate", MINIMAL).code == 0  # validate never needs the hub
    text = check_reported(cli("run", MINIMAL, "--store", store), ("not in the local Hugging Face cache", "pkg:"), ())
    assert "HF_HUB_OFFLINE is set" in text
    check_nothing_cached(store)


def test_a_hub_dataset_behind_an_unreachable_hub_fails_at_once_and_keeps_its_token(tmp_path, tiny_model_dir):
    token = "hf_" + "x" * 34  # a made-up token in a pass-through option: it must reach no message
    document = recipe(tiny_model_dir("bert"), datasets={"dev": {"path": "someorg/some-data", "token": token,
                                                                "text": "sentence", "label": "label"}},
                      steps={"evaluate": {"kind": "evaluate", "dataset": "dev"}})
    started = time.monotonic()
    result = cli_subprocess(
        "run", write_yaml(tmp_path / "recipe.yaml", document), "--store", tmp_path / "store",
        HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None, HF_DATASETS_OFFLINE=None,
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HUB_CACHE=str(tmp_path / "hf"),
    )
    text = check_reported(result, ("cannot be reached", "HF_HUB_OFFLINE=1"), ("dataset 'dev'", "someorg/some-data"))
    assert token not in result.out + result.err and "Retrying" not in text
    assert time.monotonic() - started < 20
    check_nothing_cached(tmp_path / "store")


def test_secrets_are_redacted_from_messages():
    from workbench.hub import redact

    text = redact("GET https://alice:s3cr3t@hub.example/api with hf_abcdefghijklmnopqrstuvwxyz0123 failed")
    assert "s3cr3t" not in text and "hf_abcdefghij" not in text and "hub.example/api" in text
