"""attention, syntax_heads and cat_probe on a structurally pruned model (`model: prune`).

After pruning head 1 of layer 0, layer 0 hands its observers 3 maps with the original ids [0, 2, 3],
layer 1 still 4. Every per-head output must keep the ORIGINAL head ids: the pruned head is NaN (or a
zero map), and every other head equals that head of the unpruned model with head (0, 1) gated to zero
(which the prune step itself verifies to be the same network), computed here by hand.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.test_cat_step import FUNCTIONS, write_functions
from tests.test_syntax_heads_step import chain_treebank
from workbench.analysis.cat import CatAccumulator, cat_scores, layer_cat_scores, token_pair_attention
from workbench.analysis.syntax import DependencyHeadScorer, word_level_attention
from workbench.data.alignment import encode_words
from workbench.data.python_code import parse_code
from workbench.data.treebank import read_conllu
from workbench.executor import run_recipe
from workbench.models.attention import head_hooks
from workbench.models.loading import load_model
from workbench.progress import SilentProgress
from workbench.recipe.loader import load_recipe
from workbench.steps.attention import MAPS_FILE
from workbench.analysis.word_attention import AttentionCollector

LAYER, HEAD = 0, 1  # the pruned head
TREEBANK_MAX_LENGTH, CODE_MAX_LENGTH = 24, 64


@pytest.fixture(scope="module")
def pruned_run(tiny_model_dir, tmp_path_factory):
    """One recipe: prune head (0, 1), then the three attention analyses on the pruned model."""
    folder = tmp_path_factory.mktemp("pruned-analyses")
    chain_treebank(folder / "chain.conllu", 24, seed=5)
    write_functions(folder / "functions.jsonl")
    model_dir = tiny_model_dir("bert")
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: pruned-analyses
            seed: 1
            model: {{id: {model_dir}, head: sequence-classification, num_labels: 2}}
            datasets:
              text: {{path: agreement, size: 24, text: sentence, label: label}}
              tb: {{path: conllu, data_files: chain.conllu, max_length: {TREEBANK_MAX_LENGTH}}}
              code: {{path: python_code, data_files: functions.jsonl, partition: test, max_length: {CODE_MAX_LENGTH}}}
            steps:
              prune: {{kind: prune, dataset: text, heads: {{{LAYER}: [{HEAD}]}}, batch_sizes: [2], timing_examples: 4}}
              attention: {{kind: attention, model: prune, dataset: text, save_maps: 2, batch_size: 8}}
              heads: {{kind: syntax_heads, model: prune, dataset: tb, batch_size: 5, min_count: 10, js_sentences: 6}}
              cat: {{kind: cat_probe, model: prune, dataset: code, batch_size: 2, per_head: true}}
            """
        ).lstrip()
    )
    outcome = run_recipe(load_recipe(recipe), folder / "store", progress=SilentProgress())
    assert {step.step_id: step.status for step in outcome.steps} == dict.fromkeys(["prune", "attention", "heads", "cat"], "done")
    return outcome, folder, model_dir


@pytest.fixture(scope="module")
def gated_model(pruned_run):
    """The unpruned model and gates that switch the pruned head off: the reference for every head kept."""
    _, _, model_dir = pruned_run
    loaded = load_model(str(model_dir), head="sequence-classification", num_labels=2)
    gates = torch.ones(loaded.layout.shape)
    gates[LAYER, HEAD] = 0.0
    return loaded, gates


def _maps(loaded, gates, inputs: dict) -> torch.Tensor:
    """[batch, layers, heads, seq, seq] of the gated unpruned model (4 heads in every layer)."""
    collector = AttentionCollector(*loaded.layout.shape)
    with torch.no_grad(), head_hooks(gates=gates, observers=[collector.observe]):
        loaded.model(**inputs)
    return collector.take()


def _pruned_mask(shape=(2, 4)) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[LAYER, HEAD] = True
    return mask


def test_attention_step_keeps_original_head_ids(pruned_run, gated_model):
    outcome, _, _ = pruned_run
    result = outcome.step("attention").result
    assert result.data["pruned_heads"] == {str(LAYER): [HEAD]}
    pruned = _pruned_mask()
    for name, grid in result.head_scores.items():
        assert grid.shape == (2, 4)
        assert bool(grid[pruned].isnan().all()), name
        assert bool(grid[~pruned].isfinite().all()), name

    saved = load_file(str(result.file(MAPS_FILE)))
    assert sorted(saved) == ["example_0", "example_1"]
    loaded, gates = gated_model
    for index in (0, 1):
        maps = saved[f"example_{index}"]  # [layers, heads, seq, seq]
        tokens = result.data["maps"][str(index)]
        assert maps.shape == (2, 4, len(tokens), len(tokens))
        assert bool((maps[LAYER, HEAD] == 0).all())
        ids = torch.tensor([loaded.tokenizer.convert_tokens_to_ids(tokens)])
        expected = _maps(loaded, gates, {"input_ids": ids})[0]  # [layers, heads, seq, seq]
        keep = ~pruned
        torch.testing.assert_close(maps[keep], expected[keep], atol=1e-5, rtol=1e-4)
        # Rows are distributions for every head the model has.
        torch.testing.assert_close(maps[keep].sum(-1), torch.ones(int(keep.sum()), len(tokens)), atol=1e-5, rtol=0)


def test_syntax_heads_on_a_pruned_model(pruned_run, gated_model):
    outcome, folder, _ = pruned_run
    result = outcome.step("heads").result
    assert result.data["pruned_heads"] == {str(LAYER): [HEAD]}
    pruned = _pruned_mask()

    # By hand: every sentence alone through the gated unpruned model, scored with the same scorer.
    loaded, gates = gated_model
    scorer = DependencyHeadScorer(2, 4, min_count=10)
    for sentence in read_conllu(folder / "chain.conllu"):
        aligned = encode_words(loaded.tokenizer, [sentence.words], TREEBANK_MAX_LENGTH)
        kept = int(aligned.num_words[0])
        if kept < len(sentence) or not bool(aligned.word_has_tokens[0, :kept].all()):
            continue
        maps = _maps(loaded, gates, aligned.model_inputs())[0]
        scorer.add(word_level_attention(maps, aligned.word_index[0], kept), sentence.heads, sentence.deprels, sentence.upos)
    expected = scorer.result()
    assert set(result.head_scores) == {f"{d}:{r}" for d in ("dep_to_head", "head_to_dep") for r in ("all", "nsubj", "obj")}
    for name, grid in result.head_scores.items():
        assert bool(grid[pruned].isnan().all()), name
        assert bool(grid[~pruned].isfinite().all()), name
        label, relation = name.split(":")
        score = expected.overall if relation == "all" else expected.relations[relation]
        reference = torch.tensor(score.dep_to_head if label == "dep_to_head" else score.head_to_dep, dtype=torch.float32)
        torch.testing.assert_close(grid[~pruned], reference[~pruned], atol=1e-6, rtol=0)

    for row in result.data["table"]:  # the pruned head is never the best one
        for key in ("dep_to_head", "head_to_dep", "best"):
            assert (row[key]["layer"], row[key]["head"]) != (LAYER, HEAD)
            assert math.isfinite(row[key]["accuracy"])
        for direction, label in (("dep_to_head", "dep_to_head"), ("head_to_dep", "head_to_dep")):
            grid = result.head_scores[f"{label}:{row['relation']}"]
            assert row[direction]["accuracy"] == pytest.approx(float(grid[~grid.isnan()].max()))

    js = result.tensors["js_divergence"]  # [8, 8], flattened layer-major
    flat = LAYER * 4 + HEAD
    assert bool(js[flat].isnan().all()) and bool(js[:, flat].isnan().all())
    others = [k for k in range(8) if k != flat]
    assert bool(js[others][:, others].isfinite().all())
    points = result.data["mds"]["points"]
    assert {(p["layer"], p["head"]) for p in points} == {(l, h) for l in range(2) for h in range(4)} - {(LAYER, HEAD)}
    assert np.isfinite(np.array([[p["x"], p["y"]] for p in points])).all()


def test_cat_probe_on_a_pruned_model(pruned_run, gated_model):
    outcome, _, _ = pruned_run
    result = outcome.step("cat").result
    assert result.data["pruned_heads"] == {str(LAYER): [HEAD]}
    assert result.metrics["examples_too_short"] == 0
    pruned = _pruned_mask()
    per_head = result.head_scores["cat"]
    assert bool(per_head[pruned].isnan().all()) and bool(per_head[~pruned].isfinite().all())
    assert (result.data["best_head"]["layer"], result.data["best_head"]["head"]) != (LAYER, HEAD)
    assert result.data["best_head"]["cat"] == pytest.approx(float(per_head[~pruned].max()))

    # By hand, one function at a time: per layer the heads the model has are averaged, per head alone.
    loaded, gates = gated_model
    layers, heads = [], []
    for source in FUNCTIONS:
        example = parse_code(source)
        aligned = encode_words(loaded.tokenizer, [example.tokens], CODE_MAX_LENGTH)
        n = int(aligned.num_words[0])
        maps = _maps(loaded, gates, aligned.model_inputs())[0]  # [layers, heads, seq, seq]
        pairs = token_pair_attention(maps, aligned.word_index[0], n)  # [layers, heads, n, n]
        distances = example.distances[:n, :n]
        kept_mean = torch.stack([pairs[LAYER, [h for h in range(4) if h != HEAD]].mean(0), pairs[1].mean(0)])
        layers.append(cat_scores(kept_mean, distances))
        heads.append(cat_scores(pairs, distances))
    assert result.layer_scores["cat"].tolist() == pytest.approx(np.mean(layers, axis=0).tolist(), abs=1e-5)
    expected_heads = torch.tensor(np.mean(heads, axis=0), dtype=torch.float32)
    torch.testing.assert_close(per_head[~pruned], expected_heads[~pruned], atol=1e-5, rtol=0)


def test_attention_collector_places_maps_at_their_original_ids():
    collector = AttentionCollector(2, 4)
    first = torch.rand(3, 3, 5, 5)  # [batch, heads present, q, k]
    second = torch.rand(3, 4, 5, 5)
    collector.observe(0, torch.tensor([0, 2, 3]), first)
    collector.observe(1, torch.arange(4), second)
    attention = collector.take()  # [batch, layers, heads, q, k]
    assert attention.shape == (3, 2, 4, 5, 5)
    torch.testing.assert_close(attention[:, 0, [0, 2, 3]], first)
    assert bool((attention[:, 0, 1] == 0).all())
    torch.testing.assert_close(attention[:, 1], second)
    collector.observe(0, torch.tensor([], dtype=torch.long), torch.rand(3, 0, 5, 5))  # a layer with no head left
    collector.observe(1, torch.arange(4), second)
    assert bool((collector.take()[:, 0] == 0).all())
    with pytest.raises(RuntimeError, match="every layer"):
        collector.take()


def test_cat_averages_only_the_heads_a_layer_has():
    """A head that is absent does not enter the layer's mean, whatever its map; a layer without heads is NaN."""
    distances = np.abs(np.subtract.outer(np.arange(4), np.arange(4))).astype(float)  # a path of 4 leaves
    near = torch.full((4, 4), 0.1) + 0.6 * torch.eye(4)  # attends to the leaf itself: CAT 1
    far = torch.eye(4).flip(1)  # attends to the mirrored leaf: CAT 0
    attn = torch.stack([torch.stack([near, far]), torch.stack([far, near])])  # [layers=2, heads=2, 3, 3]
    present = np.array([[True, False], [False, False]])
    scores = layer_cat_scores(attn, distances, present)
    assert scores[0] == pytest.approx(cat_scores(near, distances)) == 1.0 and math.isnan(scores[1])
    assert layer_cat_scores(attn, distances).tolist() == [0.0, 0.0]  # the mean over both heads differs

    accumulator = CatAccumulator(2, 2, per_head=True, present=present)
    accumulator.add(attn, distances)
    result = accumulator.result()
    assert result.per_layer[0] == pytest.approx(scores[0]) and math.isnan(result.per_layer[1])
    assert result.per_head[0, 0] == pytest.approx(cat_scores(near, distances))
    assert np.isnan(result.per_head[~present]).all()
    assert result.num_scored.tolist() == [1, 0]
