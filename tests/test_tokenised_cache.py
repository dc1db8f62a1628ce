"""Tokenisations as shared Arrow files; split slicing and streaming (issue 10 §3).

Real files (GLUE SST-2 and MRPC from the shared data folder), the real MiniLM tokenizer, the real
`datasets` library: a tokenisation read back from its Arrow file must give the very ids the
in-memory path gives, a second step, run or process must read the file instead of tokenising
again, and processes that start at once must tokenise once between them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, SHARED_DATA
from tests.helpers import cli, recipe, write_yaml
from workbench.data import batching
from workbench.data.batching import Encodings, TokenRows, batch_order, collate, encode_dataset, encode_texts, tokenise_to_arrow
from workbench.data.columns import ArrowColumns
from workbench.data.loaded import LoadedDataset
from workbench.data.sources import check_dataset_spec, dataset_fingerprint, load_dataset_spec
from workbench.errors import RecipeError, RecipeErrors
from workbench.recipe.schema import DatasetSpec

SST2_DEV = SHARED_DATA / "glue_sst2" / "dev.tsv"
SST2_TRAIN = SHARED_DATA / "glue_sst2" / "train.tsv"
MRPC_DEV = SHARED_DATA / "glue_mrpc" / "dev.tsv"
PAIR = ["#1 String", "#2 String"]


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


def sst2(limit: int | None = None, **extra) -> LoadedDataset:
    spec = DatasetSpec(path="tsv", data_files=str(SST2_DEV), text="sentence", label="label", limit=limit, **extra)
    return load_dataset_spec("dev", spec, SHARED_DATA)


def mrpc(**extra) -> LoadedDataset:
    spec = DatasetSpec(path="tsv", data_files=str(MRPC_DEV), text=PAIR, label="Quality", **extra)
    return load_dataset_spec("dev", spec, SHARED_DATA)


def arrow_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.arrow"))


# ---- the same ids as the in-memory path -------------------------------------------------------------


@pytest.mark.parametrize(
    "make, max_length, token_types",
    [(sst2, 128, False), (sst2, 12, False), (mrpc, 128, True), (mrpc, 40, True), (mrpc, 40, False)],
    ids=["sst2", "sst2-truncated", "mrpc-types", "mrpc-types-truncated", "mrpc-no-types"],
)
def test_the_arrow_file_holds_the_ids_the_in_memory_path_makes(make, max_length, token_types, tokenizer, tmp_path):
    dataset = make(max_length=max_length)
    in_memory = encode_dataset(tokenizer, dataset, token_types=token_types)
    assert isinstance(in_memory.input_ids, list)  # no tokenised_dir: today's path

    shared = make(max_length=max_length)
    shared.tokenised_dir = tmp_path
    from_file = encode_dataset(tokenizer, shared, token_types=token_types)
    assert isinstance(from_file.input_ids, TokenRows) and from_file.path in arrow_files(tmp_path)

    assert len(from_file) == len(in_memory) == len(dataset)
    assert list(from_file.input_ids) == [list(ids) for ids in in_memory.input_ids]
    assert from_file.input_ids == in_memory.input_ids  # __eq__ against plain lists, too
    if token_types:
        assert in_memory.token_type_ids is not None and max(map(max, in_memory.token_type_ids)) == 1
        assert list(from_file.token_type_ids) == [list(types) for types in in_memory.token_type_ids]
    else:
        assert from_file.token_type_ids is None and in_memory.token_type_ids is None
    assert np.array_equal(from_file.lengths, in_memory.lengths)
    assert from_file.lengths.max() <= max_length
    if max_length < 20:
        assert from_file.lengths.max() == max_length  # truncation happened, at the same place
    assert from_file.num_tokens == in_memory.num_tokens and isinstance(from_file.num_tokens, int)
    assert from_file.pad_token_id == in_memory.pad_token_id == tokenizer.pad_token_id

    for indices in batch_order(in_memory.lengths, 32) + [[5, 0, 3], [len(dataset) - 1]]:
        a, b = collate(in_memory, indices), collate(from_file, indices)
        assert torch.equal(a.input_ids, b.input_ids) and a.input_ids.dtype == torch.long
        assert torch.equal(a.attention_mask, b.attention_mask) and torch.equal(a.indices, b.indices)
        assert (a.token_type_ids is None) == (b.token_type_ids is None) == (not token_types)
        if token_types:
            assert torch.equal(a.token_type_ids, b.token_type_ids)
    fixed = collate(from_file, [0, 1], pad_to=max_length)
    assert fixed.input_ids.shape == (2, max_length)
    assert torch.equal(fixed.input_ids, collate(in_memory, [0, 1], pad_to=max_length).input_ids)


def test_the_ids_are_those_of_a_direct_tokenizer_call(tokenizer, tmp_path):
    """Not only the two workbench paths agree: both are what the tokenizer itself gives."""
    dataset = mrpc(max_length=64)
    dataset.tokenised_dir = tmp_path
    encodings = encode_dataset(tokenizer, dataset, token_types=True)
    first, second = dataset.columns[PAIR[0]], dataset.columns[PAIR[1]]
    direct = tokenizer(first, second, truncation="longest_first", max_length=64)
    assert list(encodings.input_ids) == direct["input_ids"]
    assert list(encodings.token_type_ids) == direct["token_type_ids"]


def test_rows_are_read_from_the_memory_map_without_copies(tokenizer, tmp_path):
    encodings = tokenise_to_arrow(tokenizer, [sst2().columns["sentence"]], 128, False, tmp_path)
    rows = encodings.input_ids
    assert isinstance(rows, TokenRows) and len(rows) == 872
    view = rows.row(7)
    assert isinstance(view, np.ndarray) and view.dtype == np.int32 and not view.flags.writeable
    assert not view.flags.owndata  # a window into the mapped file
    assert rows[7] == view.tolist() and all(type(i) is int for i in rows[7])  # what callers index: lists of ints
    assert rows[-1] == rows[871] and rows[2:4] == [rows[2], rows[3]]
    with pytest.raises(IndexError):
        rows.row(872)
    assert isinstance(encodings.lengths, np.ndarray) and encodings.lengths.dtype == np.int64
    assert encodings.lengths is encodings.lengths  # computed once
    # several record batches in the file: rows across their boundaries come out whole and in order
    many = tokenise_to_arrow(tokenizer, [sst2().columns["sentence"] * 30], 128, False, tmp_path / "many")
    assert many.input_ids._column.num_chunks > 1
    assert many.input_ids[872 * 12 + 7] == rows[7] and many.input_ids[10_000] == rows[10_000 % 872]
    assert list(many.lengths[:872]) == list(encodings.lengths) and len(many) == 872 * 30


# ---- once, then read ---------------------------------------------------------------------------------


def test_a_second_step_and_a_second_run_read_the_file(tokenizer, tmp_path, monkeypatch):
    first = sst2()
    first.tokenised_dir = tmp_path
    made = encode_dataset(tokenizer, first, token_types=True)
    assert encode_dataset(tokenizer, first, token_types=True) is made  # a second step of the run: the same object
    files = arrow_files(tmp_path)
    assert files == [made.path]
    assert sorted(p.name for p in tmp_path.iterdir()) == [made.path.name]  # no lock, no temporary file left
    written = made.path.stat().st_mtime_ns

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(batching, "_tokenize", no_tokenising)
    again = sst2()  # another run: a fresh load, another tokenizer object
    again.tokenised_dir = tmp_path
    import transformers

    other_tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    reread = encode_dataset(other_tokenizer, again, token_types=True)
    assert reread.path == made.path and made.path.stat().st_mtime_ns == written
    assert reread.input_ids == made.input_ids


def test_the_file_is_named_by_texts_tokenizer_max_length_and_token_types(tokenizer, tmp_path, minilm_dir):
    texts = mrpc().columns
    pair = [texts[PAIR[0]], texts[PAIR[1]]]
    base = tokenise_to_arrow(tokenizer, pair, 64, True, tmp_path).path
    assert tokenise_to_arrow(tokenizer, pair, 64, True, tmp_path).path == base
    others = {
        tokenise_to_arrow(tokenizer, pair, 32, True, tmp_path).path,  # max_length
        tokenise_to_arrow(tokenizer, pair, 64, False, tmp_path).path,  # token types
        tokenise_to_arrow(tokenizer, pair[:1], 64, False, tmp_path).path,  # one column, not two
        tokenise_to_arrow(tokenizer, [pair[0][:-1], pair[1][:-1]], 64, True, tmp_path).path,  # other texts
        tokenise_to_arrow(tokenizer, [pair[0][:5] + ["x" + pair[0][5]] + pair[0][6:], pair[1]], 64, True, tmp_path).path,
    }
    import transformers

    left = transformers.AutoTokenizer.from_pretrained(minilm_dir, truncation_side="left")
    others.add(tokenise_to_arrow(left, pair, 64, True, tmp_path).path)  # a tokenizer that cuts the other end
    assert base not in others and len(others) == 6
    assert len(arrow_files(tmp_path)) == 7


def test_two_datasets_with_the_same_texts_share_a_file(tokenizer, tmp_path):
    """Another label column, another recipe: the texts are the same, so is the tokenisation."""
    a = sst2(limit=100)
    b = load_dataset_spec("other", DatasetSpec(path="tsv", data_files=str(SST2_DEV), text="sentence", split="train[:100]"), REPO)
    assert a.fingerprint != b.fingerprint
    a.tokenised_dir = b.tokenised_dir = tmp_path
    assert encode_dataset(tokenizer, a, token_types=False).path == encode_dataset(tokenizer, b, token_types=False).path
    assert len(arrow_files(tmp_path)) == 1


def test_a_damaged_file_is_tokenised_again(tokenizer, tmp_path):
    texts = [sst2().columns["sentence"]]
    good = tokenise_to_arrow(tokenizer, texts, 128, False, tmp_path)
    expected = list(good.input_ids)
    path = good.path
    del good
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a file cut short (not one datasets' rename would leave)
    assert list(tokenise_to_arrow(tokenizer, texts, 128, False, tmp_path).input_ids) == expected
    assert path.stat().st_size == len(data)
    path.write_bytes(b"not arrow at all")
    assert list(tokenise_to_arrow(tokenizer, texts, 128, False, tmp_path).input_ids) == expected


def test_a_lock_left_by_a_killed_process_is_broken(tokenizer, tmp_path):
    from workbench.processes import HOST

    texts = [sst2(limit=50).columns["sentence"]]
    key = batching.tokenised_key(texts, batching.tokenizer_fingerprint(tokenizer), 128, False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"{key}.lock").write_text(json.dumps({"host": HOST, "pid": int(dead.stdout), "started": 1.0, "since": time.time()}))
    started = time.monotonic()
    encodings = tokenise_to_arrow(tokenizer, texts, 128, False, tmp_path)
    assert time.monotonic() - started < 30 and len(encodings) == 50
    assert not (tmp_path / f"{key}.lock").exists()


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    import transformers
    from workbench.data import batching

    writes = []
    original = batching._write_tokenised
    def counted(*args, **kwargs):
        writes.append(1)
        return original(*args, **kwargs)
    batching._write_tokenised = counted

    tokenizer = transformers.AutoTokenizer.from_pretrained({tokenizer!r})
    sentences = [line.rstrip("\\n").rsplit("\\t", 1)[0] for line in open({data!r}, encoding="utf-8")][1:]
    folder, go = Path(sys.argv[1]), Path(sys.argv[2])
    (go.parent / f"ready-{{sys.argv[3]}}").touch()
    while not go.exists():
        time.sleep(0.005)
    encodings = batching.tokenise_to_arrow(tokenizer, [sentences], 64, False, folder)
    print(json.dumps({{"writes": len(writes), "path": str(encodings.path), "rows": len(encodings),
                      "sample": [encodings.input_ids[i] for i in (0, 1000, len(encodings) - 1)]}}))
    """
)


def test_processes_that_start_at_once_tokenise_once(tokenizer, tmp_path, minilm_dir):
    """Ranks of a distributed run: one takes the lock and tokenises, the others wait and read its file."""
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), tokenizer=str(minilm_dir), data=str(SST2_TRAIN)))
    folder, go = tmp_path / "tokenised", tmp_path / "go"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    children = [
        subprocess.Popen([sys.executable, str(script), str(folder), str(go), str(rank)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for rank in range(3)
    ]
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        assert all(child.poll() is None for child in children), [child.communicate() for child in children]
        time.sleep(0.02)
    go.touch()
    reports = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(report["writes"] for report in reports) == 1
    assert len({report["path"] for report in reports}) == 1
    assert all(report["rows"] == 67_349 for report in reports)
    assert all(report["sample"] == reports[0]["sample"] for report in reports)
    assert [p.name for p in folder.iterdir()] == [Path(reports[0]["path"]).name]
    sentences = [line.rstrip("\n").rsplit("\t", 1)[0] for line in open(SST2_TRAIN, encoding="utf-8")][1:]
    expected = encode_texts(tokenizer, [(sentences[i],) for i in (0, 1000, len(sentences) - 1)], 64, token_types=False)
    assert reports[0]["sample"] == expected.input_ids


def test_runs_of_a_recipe_share_the_store_s_tokenisation(tiny_model_dir, tmp_path):
    from workbench.executor import run_recipe
    from workbench.progress import SilentProgress
    from workbench.recipe.loader import load_recipe

    dev = {"path": "tsv", "data_files": str(SST2_DEV), "text": "sentence", "label": "label", "limit": 96}
    steps = {
        "evaluate": {"kind": "evaluate", "dataset": "dev", "batch_size": 32},
        "extract": {"kind": "extract", "dataset": "dev", "pooling": "mean", "batch_size": 16},
    }
    path = write_yaml(tmp_path / "recipe.yaml", recipe(tiny_model_dir("bert"), datasets={"dev": dev}, steps=steps))
    store = tmp_path / "store"
    run_recipe(load_recipe(path, []), store, progress=SilentProgress())
    files = arrow_files(store / "cache" / "tokenised")
    assert len(files) == 1  # two steps, one tokenisation
    written = files[0].stat().st_mtime_ns
    # another run whose steps run again (a new batch size): they read the same file
    run_recipe(load_recipe(path, ["steps.extract.batch_size=8", "steps.evaluate.batch_size=16"]), store, progress=SilentProgress())
    assert arrow_files(store / "cache" / "tokenised") == files and files[0].stat().st_mtime_ns == written
    assert cli("verify", "--store", store).code == 0  # the store's own checks do not mind the folder


def test_outside_a_run_nothing_is_written(tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = sst2(limit=20)
    assert dataset.tokenised_dir is None
    encodings = encode_dataset(tokenizer, dataset, token_types=False)
    assert isinstance(encodings, Encodings) and isinstance(encodings.input_ids, list) and encodings.path is None
    assert list(tmp_path.iterdir()) == []


# ---- columns stay Arrow until read ---------------------------------------------------------------------


def test_columns_no_step_reads_are_not_converted(tmp_path):
    rows = [{"id": f"row-{i}", "text": f"sentence number {i}", "label": i % 2, "meta": {"n": i}} for i in range(30)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    loaded = load_dataset_spec("d", DatasetSpec(path="json", data_files=str(data), text="text", label="label", limit=25), tmp_path)
    assert isinstance(loaded.columns, ArrowColumns) and len(loaded) == 25
    assert list(loaded.columns) == ["id", "text", "label", "meta"]
    assert loaded.columns.converted() == ["text"]  # read (and checked) at load; the rest when a step asks
    assert loaded.texts() == [(row["text"],) for row in rows[:25]] and loaded.labels() == [row["label"] for row in rows[:25]]
    assert loaded.columns.converted() == ["text", "label"]
    assert loaded.columns["meta"] == [row["meta"] for row in rows[:25]]  # converted as to_dict() would
    assert "id" in loaded.columns and "nope" not in loaded.columns and loaded.columns.get("nope") is None


# ---- split slicing ------------------------------------------------------------------------------------


def test_a_sliced_split_reads_those_examples():
    whole = sst2()
    assert sst2(split="train[:50]").texts() == whole.texts()[:50]
    assert sst2(split="train[100:130]").texts() == whole.texts()[100:130]
    assert sst2(split="train[100:130]", limit=5).texts() == whole.texts()[100:105]  # limit: the first N of the slice
    assert sst2(split="train[-10:]").texts() == whole.texts()[-10:]
    assert len(sst2(split="train[:10%]")) == 87  # datasets' rounding


def test_a_slice_changes_the_fingerprint():
    spec = DatasetSpec(path="tsv", data_files=str(SST2_DEV), text="sentence")
    sliced = DatasetSpec(path="tsv", data_files=str(SST2_DEV), text="sentence", split="train[:50]")
    streamed = DatasetSpec(path="tsv", data_files=str(SST2_DEV), text="sentence", limit=5, streaming=True)
    limited = DatasetSpec(path="tsv", data_files=str(SST2_DEV), text="sentence", limit=5)
    prints = {dataset_fingerprint(s, SHARED_DATA) for s in (spec, sliced, streamed, limited)}
    assert len(prints) == 4


def _dataset_recipe(tmp_path: Path, tiny_model_dir, **dev) -> Path:
    dev = {"path": "tsv", "data_files": str(SST2_DEV), "text": "sentence", "label": "label", **dev}
    steps = {"evaluate": {"kind": "evaluate", "dataset": "dev"}}
    return write_yaml(tmp_path / "recipe.yaml", recipe(tiny_model_dir("bert"), datasets={"dev": dev}, steps=steps))


@pytest.mark.parametrize(
    "dev, field, words",
    [
        ({"split": "train[:2000"}, "split", "is not a split or a slice"),
        ({"split": "train[10%:2000]"}, "split", "percentages, or neither"),
        ({"split": "train[50:10]"}, "split", "selects no examples"),
        ({"split": "train[:150%]"}, "split", "between -100% and 100%"),
        ({"split": "train[:5](nearest)"}, "split", "rounding"),
        ({"streaming": True}, "streaming", "set limit"),
        ({"streaming": True, "split": "train[:10%]", "limit": 10}, "split", "percent"),
        ({"streaming": True, "split": "train[-100:]"}, "split", "from its end"),
        ({"streaming": True, "split": "train[:10]+train[20:30]"}, "split", "one split"),
        ({"streaming": "yes", "limit": 10}, "streaming", "valid boolean"),
    ],
    ids=["unclosed", "mixed-units", "empty", "percent-range", "rounding", "stream-no-limit", "stream-percent",
         "stream-from-end", "stream-two-splits", "stream-not-bool"],
)
def test_bad_splits_and_streams_are_recipe_errors_at_their_field(dev, field, words, tmp_path, tiny_model_dir):
    from workbench.recipe.loader import load_recipe

    path = _dataset_recipe(tmp_path, tiny_model_dir, **dev)
    with pytest.raises((RecipeError, RecipeErrors)) as caught:
        load_recipe(path, [])
    (error,) = getattr(caught.value, "errors", [caught.value])
    assert error.field == f"datasets.dev.{field}" and error.line is not None, str(error)
    assert words in str(error)
    result = cli("validate", path)
    assert result.code == 2 and f"datasets.dev.{field}" in result.text and words in " ".join(result.text.split())


def test_good_splits_and_streams_validate(tmp_path, tiny_model_dir):
    for dev in ({"split": "train[:2000]"}, {"split": "train[10%:20%]"}, {"streaming": True, "limit": 10}, {"streaming": True, "split": "train[5:15]"}):
        path = _dataset_recipe(tmp_path, tiny_model_dir, **dev)
        result = cli("validate", path)
        assert result.code == 0, (dev, result.text)


def test_own_sources_do_not_stream(tmp_path):
    treebank = SHARED_DATA / "ud_english_ewt" / "en_ewt-ud-dev.conllu"
    problems = check_dataset_spec(DatasetSpec(path="conllu", data_files=str(treebank), streaming=True, limit=5), tmp_path)
    assert [field for field, _ in problems] == ["streaming"]
    problems = check_dataset_spec(DatasetSpec(path="agreement", text="sentence", streaming=True, limit=5), tmp_path)
    assert [field for field, _ in problems] == ["streaming"]


# ---- streaming (local files: the hub cannot be reached here) ------------------------------------------


def test_a_stream_gives_the_examples_a_whole_load_gives(tmp_path):
    for extra in ({"limit": 40}, {"split": "train[100:160]", "limit": 25}, {"split": "train[:30]"}):
        streamed, whole = sst2(streaming=True, **extra), sst2(**extra)
        assert isinstance(streamed.columns, dict) and len(streamed) == len(whole) == extra.get("limit", 30)
        assert streamed.texts() == whole.texts() and streamed.labels() == whole.labels()
        assert list(streamed.columns) == list(whole.columns)
    pairs = mrpc(streaming=True, limit=12)
    assert pairs.texts() == mrpc(limit=12).texts() and pairs.labels() == mrpc(limit=12).labels()


def test_a_json_lines_stream(tmp_path, tokenizer):
    rows = [{"text": f"example {i} " + "word " * (i % 7), "label": ["neg", "pos"][i % 2]} for i in range(50)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = DatasetSpec(path="json", data_files=str(data), text="text", label="label", limit=20, streaming=True)
    assert check_dataset_spec(spec, tmp_path) == []
    loaded = load_dataset_spec("d", spec, tmp_path)
    assert loaded.texts() == [(row["text"],) for row in rows[:20]] and loaded.labels() == [row["label"] for row in rows[:20]]
    loaded.tokenised_dir = tmp_path / "tokenised"
    assert encode_dataset(tokenizer, loaded, token_types=False).input_ids == tokenizer([r["text"] for r in rows[:20]], truncation=True, max_length=128)["input_ids"]


def test_a_stream_that_cannot_be_read_is_a_data_error(tmp_path):
    from workbench.errors import DataError

    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "fine", "label": 0}\n' * 3)
    spec = DatasetSpec(path="json", data_files=str(data), text="missing", limit=2, streaming=True)
    with pytest.raises(DataError, match="has no column 'missing'"):
        load_dataset_spec("d", spec, tmp_path)


def test_an_empty_text_in_a_slice_is_named_by_its_line(tmp_path):
    from workbench.errors import DataError

    rows = [f"sentence {i}\t{i % 2}" for i in range(200)]
    rows[150] = "\t1"  # an empty text: row 150, line 152 (the header is line 1)
    data = tmp_path / "data.tsv"
    data.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    for split in ("train[100:200]", "train[-60:]"):
        spec = DatasetSpec(path="tsv", data_files=str(data), text="sentence", label="label", split=split)
        with pytest.raises(DataError, match=r"the first: .*data\.tsv:152\)") as caught:
            load_dataset_spec("d", spec, tmp_path)
        assert "1 of" in str(caught.value), split
    spec = DatasetSpec(path="tsv", data_files=str(data), text="sentence", label="label", split="train[:50%]")
    assert len(load_dataset_spec("d", spec, tmp_path)) == 100  # the empty text lies beyond the slice


def test_a_folder_that_cannot_be_written_falls_back_to_memory(tokenizer, tmp_path, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    dataset = sst2(limit=30)
    dataset.tokenised_dir = blocked / "tokenised"
    with caplog.at_level("WARNING", logger="workbench.data.batching"):
        encodings = encode_dataset(tokenizer, dataset, token_types=False)
    assert isinstance(encodings.input_ids, list) and encodings.path is None
    assert encodings.input_ids == encode_texts(tokenizer, dataset.texts(), 128, token_types=False).input_ids
    assert "tokenised in memory" in caplog.text
