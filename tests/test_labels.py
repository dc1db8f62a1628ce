"""One label vocabulary per model (issue 7.1), token types only for models with segment embeddings
(7.2), and F1 chosen by the head, not by the data (7.3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import cli, recipe, run_json, steps_by_id, write_yaml

NLI_TRAIN = [  # sorted names: contradiction=0, entailment=1, neutral=2
    ("a man sleeps", "entailment"),
    ("a dog runs", "neutral"),
    ("the cat sits", "contradiction"),
    ("birds fly south", "entailment"),
    ("rain falls down", "neutral"),
    ("a child laughs", "contradiction"),
]
NLI_DEV = [("a man sleeps", "entailment"), ("a dog runs", "neutral"), ("rain falls down", "neutral")]


def write_tsv(path: Path, rows: list[tuple[object, ...]], header: tuple[str, ...] = ("sentence", "label")) -> str:
    path.write_text("\n".join("\t".join(map(str, row)) for row in [header, *rows]) + "\n")
    return str(path)


def tsv_dataset(path: str, **extra: object) -> dict:
    return {"path": "tsv", "data_files": path, "text": "sentence", "label": "label", **extra}


def nli_recipe(model_dir: Path, tmp_path: Path, *, train_limit: int | None = None, dev_rows=NLI_DEV, **model) -> Path:
    train = tsv_dataset(write_tsv(tmp_path / "train.tsv", NLI_TRAIN), **({"limit": train_limit} if train_limit else {}))
    dev = tsv_dataset(write_tsv(tmp_path / "dev.tsv", dev_rows))
    steps = {
        "finetune": {"kind": "finetune", "dataset": "train", "max_steps": 1, "batch_size": 4},
        "evaluate": {"kind": "evaluate", "model": "finetune", "dataset": "dev"},
    }
    document = recipe(model_dir, num_labels=None, datasets={"train": train, "dev": dev}, steps=steps)
    document["model"].update(model)
    return write_yaml(tmp_path / "nli.yaml", document)


def finetuned_config(store: Path, run: dict) -> dict:
    key = steps_by_id(run)["finetune"]["key"]
    return json.loads((store / "cache" / key[:2] / key[2:] / "files" / "model" / "config.json").read_text())


def predictions(store: Path, run: dict) -> np.ndarray:
    from safetensors.numpy import load_file

    key = steps_by_id(run)["evaluate"]["key"]
    return load_file(str(store / "cache" / key[:2] / key[2:] / "tensors.safetensors"))["tensors/predictions"]


def test_every_dataset_maps_through_the_models_one_vocabulary(tiny_model_dir, tmp_path, store_dir):
    """Train has three labels, dev two, and train's `limit` keeps only two: ids still come from all of train."""
    path = nli_recipe(tiny_model_dir("bert", num_labels=3), tmp_path, train_limit=2)
    result = cli("run", path, "--store", store_dir, "-q")
    assert result.code == 0, result.text
    run = run_json(store_dir)
    config = finetuned_config(store_dir, run)
    assert config["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}
    assert config["label2id"] == {"contradiction": 0, "entailment": 1, "neutral": 2}
    # The dev accuracy is the accuracy against the model's ids, not against ids renumbered for dev.
    gold = np.array([config["label2id"][label] for _, label in NLI_DEV])
    accuracy = steps_by_id(run)["evaluate"]["metrics"]["accuracy"]
    assert accuracy == pytest.approx(float((predictions(store_dir, run) == gold).mean()))


def test_the_vocabulary_is_saved_with_a_pruned_model_and_kept_by_a_second_finetune(tiny_model_dir, tmp_path, store_dir):
    path = nli_recipe(tiny_model_dir("bert", num_labels=3), tmp_path)
    document = __import__("yaml").safe_load(path.read_text())
    document["steps"].update(
        {
            "prune": {"kind": "prune", "model": "finetune", "dataset": "dev", "heads": {0: [1]}, "batch_sizes": [2],
                      "timing_examples": 2, "timing_rounds": 1},
            "refinetune": {"kind": "finetune", "model": "prune", "dataset": "train", "max_steps": 1, "batch_size": 4},
        }
    )
    write_yaml(path, document)
    result = cli("run", path, "--store", store_dir, "-q")
    assert result.code == 0, result.text
    run = run_json(store_dir)
    for step in ("prune", "refinetune"):
        key = steps_by_id(run)[step]["key"]
        config = json.loads((store_dir / "cache" / key[:2] / key[2:] / "files" / "model" / "config.json").read_text())
        assert config["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}, step


def test_named_labels_in_the_recipe_win(tiny_model_dir, tmp_path, store_dir):
    path = nli_recipe(tiny_model_dir("bert", num_labels=3), tmp_path, labels=["neutral", "entailment", "contradiction"])
    assert cli("run", path, "--store", store_dir, "-q").code == 0
    config = finetuned_config(store_dir, run_json(store_dir))
    assert config["id2label"] == {"0": "neutral", "1": "entailment", "2": "contradiction"}


@pytest.mark.parametrize(
    "dev_rows, message",
    [
        ([("a man sleeps", "maybe")], "dataset 'dev' has the label 'maybe', which the model does not know"),
        ([("a man sleeps", "1.5")], None),  # a float column on a classification head: see the next test
    ],
    ids=["unknown-name", "float-as-text"],
)
def test_a_label_the_model_does_not_know_is_an_error(tiny_model_dir, tmp_path, store_dir, dev_rows, message):
    path = nli_recipe(tiny_model_dir("bert", num_labels=3), tmp_path, dev_rows=dev_rows)
    result = cli("run", path, "--store", store_dir, "-q")
    assert result.code == 2, result.text
    assert "Traceback" not in result.text
    assert (message or "dataset 'dev'") in result.text


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, 1, 2], "class id 2, outside 0..1"),
        ([0, 1, -1], "class id -1, outside 0..1"),
        ([0.0, 1.0, 0.5], "float label on a classification head"),
        ([0, None, 1], "without a label"),
    ],
    ids=["too-large", "negative", "float", "null"],
)
def test_integer_float_and_missing_labels_are_checked(tiny_model_dir, tmp_path, store_dir, labels, message):
    rows = [{"sentence": f"sentence {i}", "label": label} for i, label in enumerate(labels)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows))
    dataset = {"path": "json", "data_files": str(data), "text": "sentence", "label": "label"}
    steps = {"evaluate": {"kind": "evaluate", "dataset": "dev"}}
    path = write_yaml(tmp_path / "r.yaml", recipe(tiny_model_dir("bert"), datasets={"dev": dataset}, steps=steps))
    result = cli("run", path, "--store", store_dir, "-q")
    assert result.code == 2, result.text
    assert message in result.text and "dataset 'dev'" in result.text
    assert "Traceback" not in result.text


def test_num_labels_must_match_the_training_labels(tiny_model_dir, tmp_path, store_dir):
    path = nli_recipe(tiny_model_dir("bert", num_labels=3), tmp_path, num_labels=2)
    result = cli("run", path, "--store", store_dir, "-q")
    assert result.code == 2
    assert "model.num_labels is 2, but 3 labels come from dataset 'train'" in result.text


# --- 7.2 token types ------------------------------------------------------------------------------


def load(model_dir: Path):
    from workbench.models.loading import load_model

    return load_model(str(model_dir), head="sequence-classification", num_labels=2)


PAIRS = [("the cat sat on the mat", "a cat is sitting"), ("dogs bark", "the sky is blue today")]


def pair_task(loaded):
    from workbench.analysis.tasks import prepare_task
    from workbench.data.kinds import kind_for
    from workbench.data.loaded import LoadedDataset
    from workbench.recipe.schema import DatasetSpec

    spec = DatasetSpec(path="tsv", text=["a", "b"], label="label")
    columns = {"a": [p[0] for p in PAIRS], "b": [p[1] for p in PAIRS], "label": [0, 1]}
    return prepare_task(loaded, LoadedDataset("pairs", spec, kind_for("tsv"), "x", columns=columns))


def test_gpt2_sentence_pairs_get_no_token_types_and_the_plain_logits(tiny_model_dir):
    """GPT-2 looks token types up in its word embeddings: given them, the second sentence shifts."""
    from workbench.data.batching import collate

    loaded = load(tiny_model_dir("gpt2"))
    assert not loaded.uses_token_types
    task = pair_task(loaded)
    assert task.encodings.token_type_ids is None
    batch = collate(task.encodings, [0, 1])
    with torch.no_grad():
        ours = loaded.model(**batch.model_inputs()).logits
        plain = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        segments = torch.zeros_like(batch.input_ids)
        segments[:, 5:] = 1  # what a BERT tokenizer's pair types would have added
        shifted = loaded.model(**batch.model_inputs(), token_type_ids=segments).logits
    assert torch.equal(ours, plain)
    assert not torch.allclose(shifted, plain)


def test_bert_sentence_pairs_keep_their_segments(tiny_model_dir):
    loaded = load(tiny_model_dir("bert"))
    assert loaded.uses_token_types
    task = pair_task(loaded)
    assert all(set(types) == {0, 1} for types in task.encodings.token_type_ids)


def test_roberta_has_no_segment_embeddings_to_feed():
    import transformers

    from workbench.models.loading import uses_token_types

    single = transformers.RobertaModel(transformers.RobertaConfig(hidden_size=8, num_hidden_layers=1,
                                                                  num_attention_heads=2, intermediate_size=8,
                                                                  vocab_size=50, type_vocab_size=1))
    assert not uses_token_types(single)


# --- 7.3 F1 ---------------------------------------------------------------------------------------


def test_f1_follows_the_number_of_classes_not_the_labels_present():
    from workbench.analysis.metrics import classification_metrics

    labels, predictions = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    three = classification_metrics(labels, predictions, num_labels=3)
    assert "f1" not in three  # GLUE's binary F1 means nothing for a 3-class head
    assert three["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert three["f1_micro"] == pytest.approx(0.75)
    two = classification_metrics(labels, predictions, num_labels=2)
    assert two["f1"] == pytest.approx(2 / 3)  # class 1: precision 1, recall 1/2
    only_negatives = classification_metrics(np.array([0, 0]), np.array([0, 0]), num_labels=2)
    assert only_negatives["f1"] == 0.0 and only_negatives["f1_macro"] == 1.0


def test_a_dataset_is_tokenised_once_per_tokenizer(tiny_model_dir):
    """Two loads of the same model (two tokenizer objects) share one tokenisation of a dataset."""
    first, second = load(tiny_model_dir("bert")), load(tiny_model_dir("bert"))
    from workbench.analysis.tasks import prepare_task
    from workbench.data.kinds import kind_for
    from workbench.data.loaded import LoadedDataset
    from workbench.recipe.schema import DatasetSpec

    dataset = LoadedDataset("d", DatasetSpec(path="tsv", text="s", label="l"), kind_for("tsv"), "x", columns={"s": ["a b", "c"], "l": [0, 1]})
    assert prepare_task(first, dataset).encodings is prepare_task(second, dataset).encodings
    assert len(dataset.encoded) == 1
    gpt2 = load(tiny_model_dir("gpt2"))  # same tokenizer files, but no token types: another entry only if they differ
    prepare_task(gpt2, dataset)
    assert len(dataset.encoded) == 1  # single sentences carry no token types either way
