"""importance -> mask_search / prune_curve -> prune -> evaluate, end to end through the executor."""

from __future__ import annotations

import math

import pytest

from tests.conftest import SHARED_DATA
from workbench.analysis.metrics import still_acceptable
from workbench.errors import RecipeError
from workbench.executor import run_recipe
from workbench.progress import SilentProgress
from workbench.recipe.loader import load_recipe

MRPC_DEV = SHARED_DATA / "glue_mrpc" / "dev.tsv"


def _run(recipe, store_dir):
    return run_recipe(load_recipe(recipe), store_dir, progress=SilentProgress())


@pytest.fixture
def pair_recipe(tiny_model_dir, write_recipe):
    if not MRPC_DEV.exists():
        pytest.skip("../shared/data is not beside the repository")
    return write_recipe(
        f"""
        version: 1
        name: heads-pairs
        model: {{id: {tiny_model_dir("bert")}, head: sequence-classification, num_labels: 2}}
        datasets:
          dev:
            path: tsv
            data_files: {MRPC_DEV}
            text: ["#1 String", "#2 String"]
            label: Quality
            limit: 48
            max_length: 64
        steps:
          finetune: {{kind: finetune, dataset: dev, max_steps: 3, lr: 1.0e-3, batch_size: 16}}
          importance: {{kind: importance, model: finetune, dataset: dev, batch_size: 16}}
          search: {{kind: mask_search, model: finetune, dataset: dev, threshold: 0.99, amount: 0.25, batch_size: 16}}
          curve: {{kind: prune_curve, model: finetune, dataset: dev, importance: importance, percents: [0, 25, 50, 75]}}
          prune: {{kind: prune, model: finetune, mask: search, dataset: dev, batch_sizes: [1, 8], timing_examples: 16}}
          evaluate_masked: {{kind: evaluate, model: finetune, mask: search, dataset: dev}}
          evaluate_pruned: {{kind: evaluate, model: prune, dataset: dev}}
          importance_pruned: {{kind: importance, model: prune, dataset: dev, batch_size: 16}}
        """
    )


def test_sentence_pairs_end_to_end(pair_recipe, store_dir):
    outcome = _run(pair_recipe, store_dir)
    result = {step.step_id: step.result for step in outcome.steps}

    importance = result["importance"].head_scores["importance"]
    assert importance.shape == (2, 4) and importance.min() == 0 and importance.max() == 1
    ranks = sorted(result["importance"].head_scores["rank"].flatten().tolist())
    assert ranks == list(range(1, 9))

    search = result["search"]
    mask = search.tensors["mask"]
    iterations = search.data["iterations"]
    assert iterations[0]["heads_masked"] == 0 and len(iterations) >= 2
    assert int((mask == 0).sum()) == search.metrics["heads_masked"]

    curve = result["curve"].data["curve"]
    assert [point["heads_masked"] for point in curve] == [0, 2, 4, 6]
    assert curve[0]["score"] == result["importance"].metrics["accuracy"]  # 0% masked = the plain model

    prune = result["prune"]
    assert search.metrics["heads_masked"] > 0
    assert prune.metrics["max_abs_logit_difference"] <= 1e-4
    assert prune.metrics["parameters_after"] < prune.metrics["parameters_before"]
    assert prune.metrics["heads_pruned"] == search.metrics["heads_masked"]
    # the pruned model scores exactly what the masked model scores
    assert result["evaluate_pruned"].metrics["accuracy"] == result["evaluate_masked"].metrics["accuracy"]
    assert prune.metrics["accuracy_pruned"] == prune.metrics["accuracy_masked"]
    # importance on the pruned model: pruned heads have no score, the others do
    pruned_importance = result["importance_pruned"].head_scores["importance_raw"]
    assert (pruned_importance.isnan() == (mask == 0)).all()


@pytest.mark.parametrize(
    ("family", "head", "policy"),
    [("gpt2", "causal-lm", "groups"), ("llama", "causal-lm", "groups"), ("llama", "causal-lm", "per_group"), ("bert", "masked-lm", "groups")],
)
def test_language_models_prune_by_fraction(tiny_model_dir, write_recipe, store_dir, family, head, policy):
    recipe = write_recipe(
        f"""
        version: 1
        name: heads-lm
        model: {{id: {tiny_model_dir(family, head)}, head: {head}}}
        datasets:
          text: {{path: agreement, size: 24, seed: 3, text: sentence}}
        steps:
          importance: {{kind: importance, dataset: text, batch_size: 8}}
          search: {{kind: mask_search, dataset: text, threshold: 0.8, amount: 0.25, batch_size: 8}}
          prune: {{kind: prune, dataset: text, fraction: 0.5, importance: importance, gqa_policy: {policy}, batch_sizes: [4], timing_examples: 8}}
          evaluate: {{kind: evaluate, model: prune, dataset: text}}
        """
    )
    outcome = _run(recipe, store_dir)
    search = outcome.step("search").result
    assert search.data["metric"] == "loss"  # run_prune_gpt's rule: score = 1 / loss
    assert search.data["rule"] == "loss <= original / 0.8"
    scores = [row["score"] for row in search.data["iterations"]]
    kept = search.metrics["heads_masked"]
    # loss: lower is better, so every kept iteration stays below original / threshold
    assert all(score <= scores[0] / 0.8 for row, score in zip(search.data["iterations"], scores) if row["heads_masked"] <= kept)
    prune = outcome.step("prune").result
    assert prune.metrics["heads_pruned"] == 4
    assert prune.metrics["max_abs_logit_difference"] <= 1e-4
    assert math.isclose(outcome.step("evaluate").result.metrics["perplexity"], prune.metrics["perplexity_pruned"], rel_tol=1e-6)
    if family == "llama" and policy == "groups":  # whole K/V groups: 2 heads each
        assert all(len(heads) % 2 == 0 for heads in prune.data["pruned_heads"].values())


def test_prune_an_explicit_map_including_a_whole_layer(tiny_model_dir, write_recipe, store_dir):
    recipe = write_recipe(
        f"""
        version: 1
        name: heads-map
        model: {{id: {tiny_model_dir("bert")}, head: sequence-classification, num_labels: 2}}
        datasets:
          dev: {{path: agreement, size: 24, text: sentence, label: label}}
        steps:
          prune: {{kind: prune, dataset: dev, heads: {{0: [0, 1, 2, 3], 1: [2]}}, batch_sizes: [2], timing_examples: 4}}
          evaluate: {{kind: evaluate, model: prune, dataset: dev}}
        """
    )
    outcome = _run(recipe, store_dir)
    prune = outcome.step("prune").result
    assert prune.data["pruned_heads"] == {"0": [0, 1, 2, 3], "1": [2]}
    assert prune.metrics["heads_remaining"] == 3
    assert prune.metrics["max_abs_logit_difference"] <= 1e-4
    assert outcome.step("evaluate").result.metrics["accuracy"] == prune.metrics["accuracy_pruned"]


def test_prune_needs_exactly_one_source(tiny_model_dir, write_recipe):
    recipe = write_recipe(
        f"""
        version: 1
        name: heads-bad
        model: {{id: {tiny_model_dir("bert")}, head: sequence-classification, num_labels: 2}}
        datasets:
          dev: {{path: agreement, size: 24, text: sentence, label: label}}
        steps:
          prune: {{kind: prune, dataset: dev, heads: {{0: [1]}}, fraction: 0.5}}
        """
    )
    with pytest.raises(RecipeError, match="exactly one of mask, heads or fraction"):
        load_recipe(recipe)


def test_acceptability_respects_the_metric_direction():
    assert still_acceptable(0.9, 1.0, 0.9, "accuracy") and not still_acceptable(0.89, 1.0, 0.9, "accuracy")
    assert still_acceptable(11.0, 10.0, 0.9, "perplexity") and not still_acceptable(11.2, 10.0, 0.9, "perplexity")


@pytest.mark.parametrize("reestimate", [True, False])
def test_head_searches_on_a_pruned_model_count_only_the_heads_it_has(tiny_model_dir, write_recipe, store_dir, reestimate):
    """Pruned heads are neither masked again nor counted; the search stops with one head left."""
    recipe = write_recipe(
        f"""
        version: 1
        name: heads-pruned-search
        model: {{id: {tiny_model_dir("bert")}, head: sequence-classification, num_labels: 2}}
        datasets:
          dev: {{path: agreement, size: 16, text: sentence, label: label}}
        steps:
          prune: {{kind: prune, dataset: dev, heads: {{0: [0, 1, 2]}}, batch_sizes: [4], timing_examples: 4}}
          search: {{kind: mask_search, model: prune, dataset: dev, threshold: 0.01, amount: 0.25, reestimate: {str(reestimate).lower()}}}
          curve: {{kind: prune_curve, model: prune, dataset: dev, percents: [0, 40, 80]}}
        """
    )
    outcome = _run(recipe, store_dir)
    search = outcome.step("search").result
    mask = search.tensors["mask"]
    assert mask[0, :3].tolist() == [0, 0, 0]  # pruned heads stay masked and are not counted
    assert search.metrics["heads_masked"] == 4  # 5 heads exist; steps of 1, the last one stays
    assert int(mask.sum()) == 1
    assert [row["heads_masked"] for row in search.data["iterations"]] == [0, 1, 2, 3, 4]
    curve = outcome.step("curve").result.data["curve"]
    assert [point["heads_masked"] for point in curve] == [0, 2, 4]
