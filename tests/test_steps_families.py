"""The four foundation steps on BERT, RoBERTa, GPT-2 and Llama (GQA) tiny models, checked against plain
Hugging Face computations; task heads (classification, regression, LM), sentence pairs and GLUE TSVs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import FAMILIES, SHARED_DATA
from tests.helpers import agreement, cli, entry_dir, pipeline_steps, recipe, run_json, statuses, steps_by_id, write_yaml
from workbench.data.sources import load_dataset_spec
from workbench.recipe.schema import DatasetSpec

needs_glue = pytest.mark.skipif(not (SHARED_DATA / "glue_mrpc").is_dir(), reason="../shared/data is not beside the repo")


def run_recipe_file(document: dict, folder: Path) -> dict:
    """Write the recipe into `folder`, run it there in this process, return `show latest --json`."""
    store = folder / "store"
    result = cli("run", write_yaml(folder / "recipe.yaml", document), "--store", store, "-q")
    assert result.code == 0, result.text
    return run_json(store)


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_runs_on_every_family(family, tiny_model_dir, tmp_path):
    run = run_recipe_file(recipe(tiny_model_dir(family), steps=pipeline_steps(finetune_steps=2)), tmp_path)
    assert set(statuses(run).values()) == {"done"}
    steps = steps_by_id(run)
    assert steps["finetune"]["metrics"]["steps"] == 2 and math.isfinite(steps["finetune"]["metrics"]["train_loss"])
    assert 0 <= steps["evaluate"]["metrics"]["accuracy"] <= 1 and steps["evaluate"]["metrics"]["examples"] == 64
    grids = steps["attention"]["head_scores"]
    for name, grid in grids.items():
        assert len(grid) == 2 and all(len(row) == 4 for row in grid), name  # Llama: 4 query heads over 2 K/V
        assert all(value is not None and math.isfinite(value) for row in grid for value in row), name
    assert all(0 < value < 1 for row in grids["self"] for value in row)
    assert {name: len(values) for name, values in steps["extract"]["layer_scores"].items()} == {
        "norm_mean": 3, "dim_std_mean": 3, "anisotropy": 3,  # embeddings + 2 layers
    }


@pytest.mark.parametrize("family, head", [("gpt2", "causal-lm"), ("llama", "causal-lm"), ("bert", "masked-lm")])
def test_language_model_heads_report_perplexity(family, head, tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir(family, head)
    steps = {
        "finetune": {"kind": "finetune", "dataset": "dev", "max_steps": 2, "batch_size": 8},
        "evaluate": {"kind": "evaluate", "dataset": "dev", "batch_size": 8},
        "evaluate_tuned": {"kind": "evaluate", "model": "finetune", "dataset": "dev"},
    }
    document = recipe(model_dir, head=head, num_labels=None, datasets={"dev": agreement(24, 5, label=None)}, steps=steps)
    run = run_recipe_file(document, tmp_path)
    metrics = steps_by_id(run)["evaluate"]["metrics"]
    assert "accuracy" not in metrics
    assert 1 < metrics["perplexity"] < 10 * 30522  # random weights over a 30k vocabulary
    assert math.isfinite(steps_by_id(run)["evaluate_tuned"]["metrics"]["perplexity"])
    if head == "causal-lm":
        assert metrics["perplexity"] == pytest.approx(_causal_perplexity(model_dir, tmp_path / "recipe.yaml"), rel=1e-4)


def _causal_perplexity(model_dir: Path, recipe_file: Path) -> float:
    """exp(mean next-token NLL over every real token), one unpadded example at a time with plain HF."""
    import transformers

    from workbench.recipe.loader import load_recipe

    loaded = load_recipe(recipe_file)
    texts = load_dataset_spec("dev", loaded.recipe.datasets["dev"], loaded.base_dir).texts()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for (text,) in texts:
            ids = tokenizer(text, truncation=True, max_length=128, return_tensors="pt")["input_ids"]
            loss = model(input_ids=ids, labels=ids).loss  # mean over the len-1 predicted tokens
            total_nll += float(loss) * (ids.shape[1] - 1)
            total_tokens += ids.shape[1] - 1
    return math.exp(total_nll / total_tokens)


def test_regression_head_reports_correlations(tiny_model_dir, tmp_path):
    rows = [("a short one .", 0.5)] + [
        (" ".join(["word"] * (i % 7 + 1)) + " .", (i % 7) / 6 + 0.1 * (i % 3)) for i in range(39)
    ]
    with open(tmp_path / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "score"])
        writer.writerows(rows)
    datasets = {"scores": {"path": "csv", "data_files": "scores.csv", "text": "text", "label": "score"}}
    steps = {
        "finetune": {"kind": "finetune", "dataset": "scores", "max_steps": 2, "batch_size": 8},
        "evaluate": {"kind": "evaluate", "model": "finetune", "dataset": "scores"},
    }
    run = run_recipe_file(recipe(tiny_model_dir("bert", num_labels=1), num_labels=1, datasets=datasets, steps=steps), tmp_path)
    metrics = steps_by_id(run)["evaluate"]["metrics"]
    assert metrics["examples"] == 40
    for name in ("pearson", "spearman"):
        assert -1 <= metrics[name] <= 1, metrics
    assert "accuracy" not in metrics


@needs_glue
def test_sentence_pairs_run_end_to_end(tiny_model_dir, tmp_path):
    mrpc = {
        "path": "tsv",
        "data_files": str(SHARED_DATA / "glue_mrpc" / "dev.tsv"),
        "text": ["#1 String", "#2 String"],
        "label": "Quality",
        "limit": 24,
    }
    steps = {
        "finetune": {"kind": "finetune", "dataset": "mrpc", "max_steps": 2, "batch_size": 8},
        "evaluate": {"kind": "evaluate", "model": "finetune", "dataset": "mrpc"},
        "attention": {"kind": "attention", "model": "finetune", "dataset": "mrpc"},
    }
    run = run_recipe_file(recipe(tiny_model_dir("bert"), datasets={"mrpc": mrpc}, steps=steps), tmp_path)
    assert steps_by_id(run)["evaluate"]["metrics"]["examples"] == 24

    from workbench.data.batching import encode_texts
    from transformers import AutoTokenizer

    pairs = load_dataset_spec("mrpc", DatasetSpec(**mrpc), tmp_path)
    assert all(len(texts) == 2 for texts in pairs.texts())
    encodings = encode_texts(AutoTokenizer.from_pretrained(tiny_model_dir("bert")), pairs.texts(), 128, token_types=True)
    assert encodings.token_type_ids is not None
    assert all(set(types) == {0, 1} for types in encodings.token_type_ids)  # both sentences are there


def _raw_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    """The file split by tabs and nothing else (GLUE's quotes are text)."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


@needs_glue
@pytest.mark.parametrize(
    "folder, spec, rows",
    [
        ("glue_sst2", {"path": "tsv", "text": "sentence", "label": "label"}, 872),
        ("glue_mrpc", {"path": "tsv", "text": ["#1 String", "#2 String"], "label": "Quality"}, 408),
        ("glue_mrpc", {"path": "csv", "delimiter": "\t", "text": ["#1 String", "#2 String"], "label": "Quality"}, 408),
    ],
    ids=["sst2-tsv", "mrpc-tsv", "mrpc-csv-tab"],
)
def test_glue_tsvs_load_exactly(folder, spec, rows):
    """Every row and column as in the file: the BOM is not part of a name and quotes are not quoting."""
    path = SHARED_DATA / folder / "dev.tsv"
    loaded = load_dataset_spec("dev", DatasetSpec(data_files=str(path), **spec), SHARED_DATA)
    header, raw = _raw_tsv(path)
    assert len(loaded) == rows == len(raw)
    assert list(loaded.columns) == header
    for index, column in enumerate(header):
        if column in loaded.spec.text_columns:
            assert loaded.columns[column] == [row[index] for row in raw], column
    assert loaded.labels() == [int(row[header.index(loaded.spec.label)]) for row in raw]
    if folder == "glue_mrpc":
        assert sum('"' in text for pair in loaded.texts() for text in pair) > 50


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_does_not_change_attention_statistics(family, tiny_model_dir, tmp_path):
    """One example per batch (no padding) and eight per batch (padded) give the same head statistics."""
    model_dir = tiny_model_dir(family)
    steps = {
        "alone": {"kind": "attention", "dataset": "dev", "batch_size": 1},
        "padded": {"kind": "attention", "dataset": "dev", "batch_size": 8},
    }
    run = run_recipe_file(recipe(model_dir, datasets={"dev": agreement(12, 6)}, steps=steps), tmp_path)
    from transformers import AutoTokenizer

    texts = load_dataset_spec("dev", DatasetSpec(**agreement(12, 6)), tmp_path).texts()
    lengths = {len(AutoTokenizer.from_pretrained(model_dir)(text)["input_ids"]) for (text,) in texts}
    assert len(lengths) > 2, "the examples must differ in length for padding to happen"
    alone, padded = (steps_by_id(run)[step]["head_scores"] for step in ("alone", "padded"))
    assert alone.keys() == padded.keys()
    for name in alone:
        assert torch.allclose(torch.tensor(padded[name]), torch.tensor(alone[name]), atol=1e-5), name


@pytest.mark.parametrize("family", FAMILIES)
def test_extract_matches_a_plain_forward_pass(family, tiny_model_dir, tmp_path):
    """Every pooling's shards hold, in dataset order, what AutoModel(output_hidden_states=True) computes."""
    import transformers
    from safetensors.torch import load_file

    model_dir = tiny_model_dir(family)
    layers = {"none": [0, -1], "mean": "all", "first": [1], "last": "all"}
    steps = {
        f"extract_{pooling}": {"kind": "extract", "dataset": "dev", "pooling": pooling, "layers": chosen, "shard_size": 7, "batch_size": 4}
        for pooling, chosen in layers.items()
    }
    run = run_recipe_file(recipe(model_dir, datasets={"dev": agreement(17, 8)}, steps=steps), tmp_path)

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    texts = load_dataset_spec("dev", DatasetSpec(**agreement(17, 8)), tmp_path).texts()
    with torch.no_grad():  # input ids only: GPT-2 would add token-type embeddings if given zeros
        expected = [model(tokenizer(text, return_tensors="pt")["input_ids"], output_hidden_states=True).hidden_states for (text,) in texts]

    for pooling in layers:
        step = steps_by_id(run)[f"extract_{pooling}"]
        resolved = step["data"]["layers"]
        assert resolved == ([0, 2] if pooling == "none" else [1] if pooling == "first" else [0, 1, 2])
        folder = entry_dir(tmp_path / "store", step["key"]) / "files" / "features"
        shards = [load_file(folder / name) for name in step["data"]["shards"]]
        assert len(shards) == 3  # 17 examples, 7 per shard
        for layer in resolved:
            got = _assemble(shards, f"layer_{layer}", pooling)
            want = [_pool(hidden[layer][0], pooling) for hidden in expected]
            assert len(got) == len(want) == 17
            for index, (g, w) in enumerate(zip(got, want)):
                assert g.shape == w.shape, (pooling, layer, index)
                assert torch.allclose(g, w, atol=1e-5), (pooling, layer, index)


def _assemble(shards: list[dict[str, torch.Tensor]], name: str, pooling: str) -> list[torch.Tensor]:
    """Per-example tensors from the shards: rows for pooled features, offset slices for tokens."""
    examples = []
    for shard in shards:
        if pooling == "none":
            offsets = shard["offsets"].tolist()
            examples += [shard[name][start:end] for start, end in zip(offsets, offsets[1:])]
        else:
            examples += list(shard[name])
    return examples


def _pool(hidden: torch.Tensor, pooling: str) -> torch.Tensor:
    """hidden: [seq, dim] of one unpadded example."""
    return {"none": hidden, "mean": hidden.mean(0), "first": hidden[0], "last": hidden[-1]}[pooling]
