"""extract on treebanks (word features) and the probe step, end to end through the executor."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from workbench.errors import StepError, WorkbenchError
from workbench.executor import run_recipe
from workbench.progress import SilentProgress
from workbench.recipe.loader import load_recipe

# A tiny grammar: DET (ADJ) NOUN VERB DET (ADJ) NOUN . -- the UPOS of a word follows from its form,
# and several forms split into more than one WordPiece ("unaffable" -> una ##ffa ##ble).
LEXICON = {
    "DET": ["the", "a", "every"],
    "ADJ": ["big", "unaffable", "green", "quizzical"],
    "NOUN": ["dog", "bookkeeper", "cat", "xylophone", "manager"],
    "VERB": ["sees", "chases", "bewilders", "likes"],
}


def sentence(rng: random.Random) -> list[tuple[str, str, int, str]]:
    """(form, upos, head, deprel) per word of one random sentence."""

    def noun_phrase(start: int, head: int, relation: str) -> list[tuple[str, str, int, str]]:
        words = [(rng.choice(LEXICON["DET"]), "DET", 0, "det")]
        if rng.random() < 0.5:
            words.append((rng.choice(LEXICON["ADJ"]), "ADJ", 0, "amod"))
        noun = start + len(words)  # 1-based id of the noun
        words = [(form, upos, noun, rel) for form, upos, _, rel in words]
        return words + [(rng.choice(LEXICON["NOUN"]), "NOUN", head, relation)]

    subject = noun_phrase(1, 0, "nsubj")
    verb = len(subject) + 1
    subject = [(f, u, verb if r == "nsubj" else h, r) for f, u, h, r in subject]
    words = subject + [(rng.choice(LEXICON["VERB"]), "VERB", 0, "root")]
    words += noun_phrase(len(words) + 1, verb, "obj:direct")
    return words + [(".", "PUNCT", verb, "punct")]


def write_treebank(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    blocks = []
    for number in range(count):
        words = sentence(rng)
        lines = [f"# sent_id = s{seed}-{number}", f"# text = {' '.join(w[0] for w in words)}"]
        for index, (form, upos, head, deprel) in enumerate(words, start=1):
            lines.append("\t".join([str(index), form, form, upos, upos.lower(), "_", str(head), deprel, "_", "_"]))
        blocks.append("\n".join(lines) + "\n")
    path.write_text("\n".join(blocks) + "\n")
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def treebank_recipe(tmp_path, tiny_model_dir, write_recipe):
    def make(steps: str, pooling: str = "first", max_length: int = 12) -> Path:
        files = {split: write_treebank(tmp_path / f"{split}.conllu", n, seed) for split, n, seed in
                 [("train", 60, 1), ("dev", 20, 2), ("test", 20, 3)]}
        datasets = "".join(
            f"  {split}: {{path: conllu, data_files: {path.name}, max_length: {max_length}}}\n" for split, path in files.items()
        )
        extracts = "".join(
            f"  extract_{split}: {{kind: extract, dataset: {split}, pooling: {pooling}, batch_size: 8, shard_size: 16}}\n"
            for split in files
        )
        text = (
            f"version: 1\nname: probe-test\nseed: 3\nmodel: {{id: {tiny_model_dir('bert', 'base')}, head: base}}\n"
            f"datasets:\n{datasets}steps:\n{extracts}{steps}"
        )
        return write_recipe(text)

    return make


def _run(path, store_dir):
    return run_recipe(load_recipe(path), store_dir, progress=SilentProgress())


PROBES = """\
  upos:
    kind: probe
    task: upos
    train: extract_train
    dev: extract_dev
    test: extract_test
    control: true
    cumulative: true
    epochs: 30
  edge:
    kind: probe
    task: edge
    train: extract_train
    dev: extract_dev
    test: extract_test
    control: true
    epochs: 20
"""


def test_word_features_and_probes_end_to_end(treebank_recipe, store_dir, tiny_model_dir):
    outcome = _run(treebank_recipe(PROBES), store_dir)
    assert {step.status for step in outcome.steps} == {"done"}

    # extract: words cut by max_length=12 are dropped and counted, shards are in dataset order.
    extract = outcome.step("extract_train").result
    data = extract.data
    assert data["unit"] == "word" and data["layers"] == [0, 1, 2] and data["examples"] == 60
    assert data["words_truncated"] > 0 and data["sentences_truncated"] > 0
    assert data["words_kept"] + data["words_truncated"] + data["words_without_tokens"] == data["words"]
    assert len(data["shards"]) == 4  # 60 sentences in shards of 16
    assert {name: len(line) for name, line in extract.layer_scores.items()} == {
        "norm_mean": 3, "dim_std_mean": 3, "anisotropy": 3,
    }
    _check_features_match_a_fresh_forward_pass(extract, tmp_dir=tiny_model_dir("bert", "base"), path=store_dir.parent / "train.conllu")

    upos = outcome.step("upos").result
    scores = {name: line.tolist() for name, line in upos.layer_scores.items()}
    assert set(scores) == {
        "accuracy", "macro_f1", "control_accuracy", "selectivity", "mix_weight", "cumulative_score", "delta",
    }
    assert all(len(line) == 3 for line in scores.values())
    for real, fake, gap in zip(scores["accuracy"], scores["control_accuracy"], scores["selectivity"]):
        assert gap == pytest.approx(real - fake, abs=1e-6)
    metrics = upos.metrics
    # Every kept word is one example; the labels line up, so the embeddings alone give the tag.
    assert metrics["train_examples"] == data["words_kept"]
    assert upos.data["dropped"]["train"] == data["words"] - data["words_kept"]
    assert scores["accuracy"][0] > 0.9 > metrics["majority_accuracy"]
    assert metrics["best_accuracy"] == pytest.approx(scores["accuracy"][int(metrics["best_layer"])])
    assert sum(scores["mix_weight"]) == pytest.approx(1, abs=1e-5)
    assert metrics["center_of_gravity"] == pytest.approx(sum(l * w for l, w in enumerate(scores["mix_weight"])), abs=1e-5)
    assert math.isnan(scores["delta"][0])
    deltas = scores["delta"][1:]
    assert deltas == pytest.approx([b - a for a, b in zip(scores["cumulative_score"], scores["cumulative_score"][1:])], abs=1e-6)
    if sum(deltas) > 0:
        assert metrics["expected_layer"] == pytest.approx(sum(l * d for l, d in enumerate(deltas, 1)) / sum(deltas), abs=1e-5)
    assert metrics["mix_accuracy"] == pytest.approx(scores["cumulative_score"][-1])  # P(L) is the scalar mix
    assert upos.data["labels"][0] in {"NOUN", "DET"}  # ids by train frequency

    edge = outcome.step("edge").result
    assert edge.data["task"] == "edge"
    assert "obj" in edge.data["labels"] and "obj:direct" not in edge.data["labels"]  # subtypes stripped
    assert "root" not in edge.data["labels"]  # root arcs have no head word
    assert edge.metrics["train_examples"] + edge.data["dropped"]["train"] == data["words"] - 60  # one root each
    assert "mix_weight" in edge.layer_scores and "cumulative_score" not in edge.layer_scores
    assert "expected_layer" not in edge.metrics and "center_of_gravity" in edge.metrics


def _check_features_match_a_fresh_forward_pass(extract, tmp_dir, path):
    """Row r of the shards is word word_ids[r] of its sentence: compare with a one-sentence forward pass."""
    from workbench.data.alignment import encode_words, word_pooling_matrix
    from workbench.data.treebank import read_conllu
    from workbench.models.loading import load_model
    from workbench.feature_shards import read_features

    features = read_features(extract)
    sentences = read_conllu(path)
    loaded = load_model(str(tmp_dir), head="base")
    lookup = features.row_lookup()
    truncated_seen = False
    for index in range(12):
        words = sentences[index].words
        aligned = encode_words(loaded.tokenizer, [words], max_length=12)
        kept = int(aligned.num_words[0])
        truncated_seen |= kept < len(words)
        with torch.no_grad():
            hidden = loaded.model(**aligned.model_inputs(), output_hidden_states=True).hidden_states
        pooled = word_pooling_matrix(aligned.word_index, aligned.max_words, "first") @ hidden[2]  # [1, words, dim]
        assert [w for (s, w) in lookup if s == index] == list(range(kept))
        for word in range(kept):
            assert torch.allclose(features.features[2, lookup[(index, word)]], pooled[0, word], atol=1e-4)
    assert truncated_seen


def test_deprel_probe_on_mean_pooled_subset_of_layers(treebank_recipe, store_dir):
    steps = """\
  deprel:
    kind: probe
    task: deprel
    subtypes: true
    layers: [0, 2]
    train: extract_train
    dev: extract_dev
    probe: mlp
    hidden: 16
    epochs: 5
    scalar_mix: false
  mix:
    kind: probe
    task: upos
    layers: [0, 2]
    train: extract_train
    dev: extract_dev
    epochs: 5
    cumulative: true
"""
    path = treebank_recipe(steps.replace("extract_train", "extract_train"), pooling="mean", max_length=64)
    outcome = _run(path, store_dir)
    result = outcome.step("deprel").result
    assert "obj:direct" in result.data["labels"]
    accuracy = result.layer_scores["accuracy"].tolist()
    assert len(accuracy) == 3 and math.isnan(accuracy[1])  # layer 1 was not probed
    assert result.data["layers"] == [0, 2]
    assert "test_examples" not in result.metrics and result.data["scored_on"] == "dev"  # no test split: scored on dev
    assert "scored on the same dev data" in result.data["warnings"][0]
    assert outcome.step("extract_train").result.data["words_truncated"] == 0
    # Scalar mix and cumulative probes over hidden states 0 and 2: center of gravity and expected layer
    # are hidden-state indices, not slot numbers.
    mix = outcome.step("mix").result
    weights = mix.layer_scores["mix_weight"].tolist()
    assert math.isnan(weights[1]) and weights[0] + weights[2] == pytest.approx(1, abs=1e-5)
    assert mix.metrics["center_of_gravity"] == pytest.approx(2 * weights[2], abs=1e-5)
    assert mix.data["mix"]["center_of_gravity"] == mix.metrics["center_of_gravity"]
    delta = mix.data["cumulative"]["deltas"]
    assert len(delta) == 1
    if delta[0] > 0:  # a single Delta, at hidden state 2
        assert mix.metrics["expected_layer"] == pytest.approx(2.0)
    else:
        assert math.isnan(mix.metrics["expected_layer"])
    # Editing only the probe re-runs only the probe.
    again = _run(treebank_recipe(steps.replace("hidden: 16", "hidden: 8"), pooling="mean", max_length=64), store_dir)
    assert {s.step_id: s.status for s in again.steps}["extract_train"] == "cached"
    assert {s.step_id: s.status for s in again.steps}["deprel"] == "done"


def test_treebank_extract_refuses_token_pooling(treebank_recipe):
    with pytest.raises(WorkbenchError, match="first, mean or last"):
        load_recipe(treebank_recipe("", pooling="none"))


def test_last_piece_pooling():
    from workbench.data.words import piece_matrix

    word_index = torch.tensor([[-1, 0, 1, 1, 1, -1], [-1, 0, 0, 2, -1, -1]])
    features = torch.arange(6.0).expand(2, 6)[..., None]
    assert (piece_matrix(word_index, 3, "last") @ features)[..., 0].tolist() == [[1, 4, 0], [2, 0, 3]]


def test_probe_task_must_fit_the_dataset(treebank_recipe):
    steps = "  p: {kind: probe, task: leaf_kind, train: extract_train, dev: extract_dev}\n"
    with pytest.raises(WorkbenchError, match="needs a python_code dataset"):
        load_recipe(treebank_recipe(steps))


def test_sentence_label_probe_on_a_text_dataset(tiny_model_dir, write_recipe, store_dir):
    path = write_recipe(
        f"""
        version: 1
        name: label-probe
        model: {{id: {tiny_model_dir('bert', 'base')}, head: base}}
        datasets:
          train: {{path: agreement, size: 80, seed: 1, text: sentence, label: label}}
          dev: {{path: agreement, size: 30, seed: 2, text: sentence, label: label}}
        steps:
          f_train: {{kind: extract, dataset: train, pooling: mean}}
          f_dev: {{kind: extract, dataset: dev, pooling: mean}}
          probe: {{kind: probe, task: label, train: f_train, dev: f_dev, control: true, epochs: 5}}
        """
    )
    outcome = _run(path, store_dir)
    result = outcome.step("probe").result
    assert result.metrics["train_examples"] == 80 and result.metrics["classes"] == 2
    assert len(result.layer_scores["selectivity"]) == 3
    with pytest.raises(StepError, match="python_code|treebank|code"):
        from workbench.data.words import dataset_words

        dataset_words(type("D", (), {"kind": "text", "name": "train"})())
