"""The cat_probe step end to end on a tiny BERT and a few generated functions; code leaves as words."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from workbench.analysis.cat import cat_scores, token_pair_attention
from workbench.data.alignment import encode_words
from workbench.data.python_code import parse_code
from workbench.executor import run_recipe
from workbench.progress import SilentProgress
from workbench.recipe.loader import load_recipe

FUNCTIONS = [
    'def add(a, b):\n    """Add two numbers.\n\n    Returns their sum."""\n    return a + b\n',
    "def scale(values, factor=2):\n    # a comment is not a leaf\n    return [v * factor for v in values]\n",
    "class Box:\n    def get(self, key):\n        if key in self.items:\n            return self.items[key]\n        return None\n",
    "def loop(n):\n    total = 0\n    for i in range(n):\n        total += i ** 2\n    return total\n",
    "def long_one(x):\n" + "".join(f"    x = x + {i} * (x - {i})\n" for i in range(30)) + "    return x\n",
]


def write_functions(path):
    rows = [{"func_name": f"f{i}", "code": code, "partition": "test"} for i, code in enumerate(FUNCTIONS)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def _recipe(write_recipe, tmp_path, model_dir, **options):
    write_functions(tmp_path / "functions.jsonl")
    extra = "".join(f"    {key}: {value}\n" for key, value in options.items())
    return write_recipe(
        f"""
version: 1
name: cat-test
model: {{id: {model_dir}, head: base}}
datasets:
  code: {{path: python_code, data_files: functions.jsonl, partition: test, max_length: 64}}
steps:
  cat:
    kind: cat_probe
    dataset: code
{extra}"""
    )


def _run(path, store_dir):
    return run_recipe(load_recipe(path), store_dir, progress=SilentProgress())


def test_cat_scores_by_layer_and_head(tiny_model_dir, write_recipe, tmp_path, store_dir):
    model_dir = tiny_model_dir("bert", "base")
    outcome = _run(_recipe(write_recipe, tmp_path, model_dir, per_head="true", batch_size=2), store_dir)
    result = outcome.step("cat").result
    per_layer = result.layer_scores["cat"]
    assert per_layer.shape == (2,) and bool(((per_layer >= 0) & (per_layer <= 1)).all())
    per_head = result.head_scores["cat"]
    assert per_head.shape == (2, 4) and bool(((per_head >= 0) & (per_head <= 1)).all())
    metrics = result.metrics
    assert metrics["cat_last_layer"] == pytest.approx(float(per_layer[-1]))
    assert metrics["cat_first_layer"] == pytest.approx(float(per_layer[0]))
    assert metrics["examples"] == metrics["examples_scored"] == len(FUNCTIONS)
    assert metrics["examples_too_short"] == 0  # every function keeps at least two leaves
    assert "pruned_heads" not in result.data
    assert metrics["examples_truncated"] >= 1 and metrics["leaves_dropped"] > 0  # long_one is cut at 64 pieces
    best = result.data["best_head"]
    assert best["cat"] == pytest.approx(float(per_head.max()))

    # The same numbers one function at a time, computed by hand from the observed attention: batching
    # and padding change nothing.
    expected = _cat_by_hand(model_dir, max_length=64)
    assert per_layer.tolist() == pytest.approx(expected, abs=1e-5)
    alone = _run(_recipe(write_recipe, tmp_path, model_dir, batch_size=1), tmp_path / "store1").step("cat").result
    assert alone.layer_scores["cat"].tolist() == pytest.approx(per_layer.tolist(), abs=1e-5)


def _cat_by_hand(model_dir, max_length):
    from workbench.models.attention import head_hooks
    from workbench.models.loading import load_model

    loaded = load_model(str(model_dir), head="base")
    scores = []
    for source in FUNCTIONS:
        example = parse_code(source)
        aligned = encode_words(loaded.tokenizer, [example.tokens], max_length)
        n = int(aligned.num_words[0])
        maps = {}
        with torch.no_grad(), head_hooks(observers=[lambda layer, _, probs: maps.__setitem__(layer, probs[0])]):
            loaded.model(**aligned.model_inputs())
        attention = torch.stack([maps[0], maps[1]])  # [layers, heads, seq, seq]
        pairs = token_pair_attention(attention, aligned.word_index[0], n)  # [layers, heads, n, n]
        scores.append(cat_scores(pairs.mean(1), example.distances[:n, :n]))
    return np.mean(scores, axis=0).tolist()


@pytest.fixture(scope="module")
def byte_level_bpe():
    """A RoBERTa-style byte-level BPE trained on the functions themselves."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(FUNCTIONS, trainer)
    backend.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.mark.parametrize("family", ["wordpiece", "byte_level_bpe"])
def test_code_leaves_align_to_sub_tokens(family, request, tiny_model_dir):
    """Every leaf (operators, a docstring with newlines, `**`) owns sub-tokens that decode back to it."""
    if family == "wordpiece":
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir("bert", "base"))
    else:
        tokenizer = request.getfixturevalue("byte_level_bpe")
    for source in FUNCTIONS[:4]:
        leaves = parse_code(source).tokens
        batch = encode_words(tokenizer, [leaves], max_length=512)
        assert int(batch.num_words[0]) == len(leaves)
        assert bool(batch.word_has_tokens[0].all())
        for index, leaf in enumerate(leaves):
            pieces = batch.input_ids[0][batch.word_index[0] == index].tolist()
            decoded = tokenizer.decode(pieces)
            if family == "wordpiece":  # lower-cased, spaces around punctuation
                assert decoded.replace(" ", "") == leaf.lower().replace(" ", "").replace("\n", "")
            else:
                assert decoded == " " + leaf


def test_cat_probe_needs_code(tiny_model_dir, write_recipe):
    from workbench.errors import WorkbenchError

    path = write_recipe(
        f"""
        version: 1
        name: cat-bad
        model: {{id: {tiny_model_dir('bert', 'base')}, head: base}}
        datasets:
          text: {{path: agreement, size: 10, text: sentence}}
        steps:
          cat: {{kind: cat_probe, dataset: text, attention_quantile: 0.5}}
        """
    )
    with pytest.raises(WorkbenchError, match="python_code"):
        load_recipe(path)


def test_quantile_thresholds_are_checked(tiny_model_dir, write_recipe, tmp_path):
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="distance_quantile"):
        load_recipe(_recipe(write_recipe, tmp_path, tiny_model_dir("bert", "base"), distance_quantile=1.5))


def test_leaf_features_and_a_leaf_probe(tiny_model_dir, write_recipe, tmp_path, store_dir):
    """extract reads code leaves as words; the probe predicts each leaf's tokenize type from them."""
    write_functions(tmp_path / "functions.jsonl")
    path = write_recipe(
        f"""
        version: 1
        name: leaf-probe
        model: {{id: {tiny_model_dir('bert', 'base')}, head: base}}
        datasets:
          code: {{path: python_code, data_files: functions.jsonl, max_length: 64}}
        steps:
          leaves: {{kind: extract, dataset: code, pooling: mean}}
          kinds: {{kind: probe, task: leaf_kind, train: leaves, dev: leaves, epochs: 5, control: true}}
        """
    )
    outcome = _run(path, store_dir)
    extract = outcome.step("leaves").result.data
    assert extract["unit"] == "word" and extract["dataset_kind"] == "code" and extract["words_truncated"] > 0
    probe = outcome.step("kinds").result
    assert {"NAME", "OP"} <= set(probe.data["labels"])
    assert probe.metrics["train_examples"] == extract["words_kept"]
    assert len(probe.layer_scores["selectivity"]) == 3
