"""Michel et al.'s side experiments and definitions (issue 7): head_ablation, min_heads_per_layer,
ranking on another dataset, presets, fine-tuning a pruned model, and timings with spreads."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import cli, run_json, steps_by_id
from workbench.analysis.importance import mask_least_important
from workbench.executor import run_recipe
from workbench.analysis.head_selection import select_heads_to_prune
from workbench.progress import SilentProgress
from workbench.recipe.loader import load_recipe


def _run(recipe, store_dir, force=None):
    return run_recipe(load_recipe(recipe), store_dir, force=force, progress=SilentProgress())


@pytest.fixture
def classifier_recipe(tiny_model_dir, tmp_path):
    """classifier_recipe(steps_yaml) -> a recipe file: a tiny BERT classifier, agreement train and dev."""
    import textwrap

    import yaml

    from tests.helpers import agreement, recipe, write_yaml

    def make(steps: str) -> object:
        document = recipe(
            tiny_model_dir("bert"),
            name="michel",
            datasets={"train": agreement(48, 1), "dev": agreement(32, 2)},
            steps=yaml.safe_load(textwrap.dedent(steps)),
        )
        return write_yaml(tmp_path / "michel.yaml", document)

    return make


def test_head_ablation_equals_masking_each_head_by_hand(classifier_recipe, store_dir):
    from workbench.analysis.tasks import evaluate_task, prepare_task
    from workbench.models.loading import load_model
    from workbench.recipe.schema import DatasetSpec
    from workbench.data.sources import load_dataset_spec

    recipe = classifier_recipe(
        """
        finetune: {kind: finetune, dataset: train, max_steps: 4, batch_size: 16, lr: 1.0e-3}
        ablation: {kind: head_ablation, model: finetune, dataset: dev, metric: accuracy}
        """
    )
    outcome = _run(recipe, store_dir)
    result = outcome.step("ablation").result
    delta, only = result.head_scores["score_delta"], result.head_scores["score_delta_only"]
    assert delta.shape == only.shape == (2, 4)

    model_dir = outcome.step("finetune").result.files_dir / "model"
    loaded = load_model(str(model_dir), head="sequence-classification")
    dev = load_dataset_spec("dev", DatasetSpec(path="agreement", size=32, seed=2, text="sentence", label="label"), store_dir)
    task = prepare_task(loaded, dev)
    original = evaluate_task(loaded, task, 64).metrics["accuracy"]
    assert result.metrics["original_accuracy"] == pytest.approx(original)
    for layer, head in [(0, 0), (1, 3)]:
        gates = torch.ones(2, 4)
        gates[layer, head] = 0
        masked = evaluate_task(loaded, task, 64, gates=gates).metrics["accuracy"]
        assert delta[layer, head].item() == pytest.approx(masked - original)
        keep = torch.ones(2, 4)
        keep[layer] = 0
        keep[layer, head] = 1
        kept = evaluate_task(loaded, task, 64, gates=keep).metrics["accuracy"]
        assert only[layer, head].item() == pytest.approx(kept - original)
    table = result.data["keep_best_per_layer"]
    assert [row["layer"] for row in table] == [0, 1]
    for row in table:
        assert row["delta"] == pytest.approx(only[row["layer"]].max().item())


def test_min_heads_per_layer_protects_the_most_important_heads():
    importance = torch.tensor([[0.1, 0.2, 0.9, 0.8], [0.3, 0.4, 0.5, 0.6]])
    mask = mask_least_important(importance, torch.ones(2, 4), 6, min_per_layer=2)
    assert mask.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]  # 4 of 6: each layer keeps its best two
    chosen = select_heads_to_prune(importance, 6, min_per_layer=3)
    assert chosen == {0: [0], 1: [0]}


def test_mask_search_and_prune_respect_min_heads_per_layer(classifier_recipe, store_dir):
    recipe = classifier_recipe(
        """
        search: {kind: mask_search, dataset: dev, threshold: 0.01, amount: 0.25, min_heads_per_layer: 3}
        prune: {kind: prune, dataset: dev, fraction: 0.9, min_heads_per_layer: 3, batch_sizes: [4], timing_examples: 8, timing_rounds: 2}
        bad: {kind: prune, dataset: dev, heads: {0: [0, 1]}, min_heads_per_layer: 3, batch_sizes: [4], timing_examples: 8}
        """
    )
    result = cli("run", recipe, "--store", store_dir, "-q")
    assert result.code == 2 and "fewer than min_heads_per_layer=3" in result.text
    steps = steps_by_id(run_json(store_dir))
    mask = torch.tensor(steps["search"]["head_scores"]["mask"])
    assert (mask.sum(1) >= 3).all() and steps["search"]["metrics"]["heads_masked"] == 2
    assert steps["prune"]["metrics"]["heads_pruned"] == 2


def test_ranking_on_train_and_scoring_on_dev(classifier_recipe, store_dir):
    recipe = classifier_recipe(
        """
        importance: {kind: importance, dataset: train}
        on_train: {kind: mask_search, dataset: dev, importance_dataset: train, threshold: 0.5, amount: 0.25}
        on_dev: {kind: mask_search, dataset: dev, threshold: 0.5, amount: 0.25, reestimate: false}
        curve: {kind: prune_curve, dataset: dev, importance: importance, percents: [0, 50]}
        """
    )
    outcome = _run(recipe, store_dir)
    search = outcome.step("on_train").result
    assert search.data["ranked_on"] == "train" and search.data["scored_on"] == "dev"
    curve = outcome.step("curve").result
    assert curve.data["ranked_on"] == "train"
    # both searches score the unmasked model on dev, so they start from the same number
    assert search.data["iterations"][0]["score"] == outcome.step("on_dev").result.data["iterations"][0]["score"]


def test_a_preset_is_defaults_and_explicit_options_win(classifier_recipe):
    recipe = classifier_recipe(
        """
        paper: {kind: importance, dataset: dev, preset: paper}
        spelled: {kind: importance, dataset: dev, granularity: token, normalize_global: false}
        mixed: {kind: importance, dataset: dev, preset: paper, granularity: example}
        default: {kind: importance, dataset: dev}
        """
    )
    loaded = load_recipe(recipe)
    assert loaded.steps["paper"].granularity == "token" and loaded.steps["paper"].normalize_global is False
    assert loaded.steps["mixed"].granularity == "example" and loaded.steps["mixed"].normalize_global is False
    assert loaded.steps["default"].granularity == "example" and loaded.steps["default"].normalize_global is True
    from workbench.plan import build_plan

    keys = {step.step_id: step.key for step in build_plan(loaded).steps}
    assert keys["paper"] == keys["spelled"]  # the same definitions share one cache entry
    assert len({keys["paper"], keys["mixed"], keys["default"]}) == 3


def test_a_pruned_model_can_be_fine_tuned_evaluated_and_pruned_again(classifier_recipe, store_dir):
    recipe = classifier_recipe(
        """
        prune: {kind: prune, dataset: dev, heads: {0: [1], 1: [0, 2]}, batch_sizes: [4], timing_examples: 8, timing_rounds: 2}
        finetune: {kind: finetune, model: prune, dataset: train, max_steps: 2, batch_size: 16}
        evaluate: {kind: evaluate, model: finetune, dataset: dev}
        importance: {kind: importance, model: finetune, dataset: dev}
        again: {kind: prune, model: finetune, dataset: dev, fraction: 0.25, importance: importance, batch_sizes: [4], timing_examples: 8, timing_rounds: 2}
        """
    )
    outcome = _run(recipe, store_dir)
    importance = outcome.step("importance").result.head_scores["importance"]
    assert torch.isnan(importance[0, 1]) and torch.isnan(importance[1, 0]) and not torch.isnan(importance[0, 0])
    again = outcome.step("again").result
    assert again.metrics["heads_pruned"] == 2 and again.metrics["heads_remaining"] == 3
    assert again.metrics["max_abs_logit_difference"] <= 1e-4


def test_a_model_folder_that_cannot_be_loaded_is_exit_2(tiny_model_dir, tmp_path, write_recipe, store_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir("bert"), broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    recipe = write_recipe(
        f"""
        version: 1
        name: broken
        model: {{id: {broken}, head: sequence-classification, num_labels: 2}}
        datasets:
          dev: {{path: agreement, size: 8, text: sentence, label: label}}
        steps:
          evaluate: {{kind: evaluate, dataset: dev}}
        """
    )
    result = cli("run", recipe, "--store", store_dir, "-q")
    assert result.code == 2, result.text
    assert "cannot load model" in result.text and "Traceback" not in result.text


def test_prune_speeds_are_medians_of_interleaved_rounds(classifier_recipe, store_dir):
    recipe = classifier_recipe(
        """
        prune: {kind: prune, dataset: dev, heads: {0: [0, 1]}, batch_sizes: [4, 16], timing_examples: 16, timing_rounds: 5}
        evaluate: {kind: evaluate, model: prune, dataset: dev, timing_rounds: 3, timing_examples: 16}
        """
    )
    prune = _run(recipe, store_dir).step("prune").result
    for row in prune.data["speed"]:
        size = row["batch_size"]
        for name in ("before", "after", "speedup"):
            spread = row[name]
            assert len(spread["rounds"]) == 5 and spread["q1"] <= spread["median"] <= spread["q3"]
        ratios = [after / before for after, before in zip(row["after"]["rounds"], row["before"]["rounds"])]
        assert prune.metrics[f"speedup_bs{size}"] == pytest.approx(sorted(ratios)[2])  # the median round ratio
        assert prune.metrics[f"speedup_bs{size}_iqr"] == pytest.approx(row["speedup"]["iqr"])


def test_spread_warnings_name_unreliable_figures():
    from workbench.analysis.timing import Spread, spread_warning

    assert spread_warning("x", Spread((1.0, 1.01, 0.99, 1.0, 1.02))) is None
    warning = spread_warning("speedup at batch size 16", Spread((0.06, 1.2, 1.1, 0.9, 1.22)))
    assert warning is not None and "speedup at batch size 16" in warning and "do not trust" in warning
    assert math.isclose(Spread((1.0, 2.0, 3.0, 4.0, 5.0)).iqr, 2.0)


def test_show_draws_the_ablation_distribution_the_table_and_speeds_with_spread(classifier_recipe, store_dir):
    from tests.helpers import plain

    recipe = classifier_recipe(
        """
        ablation: {kind: head_ablation, dataset: dev}
        prune: {kind: prune, dataset: dev, heads: {1: [2]}, batch_sizes: [4], timing_examples: 8, timing_rounds: 3}
        """
    )
    assert cli("run", recipe, "--store", store_dir, "-q").code == 0
    shown = cli("show", "latest", "--store", store_dir)
    assert shown.code == 0, shown.text
    text = plain(shown.out)
    assert "Heads by accuracy change when masked alone" in text
    assert "Only one head left in a layer: the best one per layer (accuracy)" in text
    assert "score_delta (layer x head)" in text and "score_delta_only (layer x head)" in text
    assert "examples/s, batch 4" in text and " ± " in text and "IQR" in text


def test_prune_scores_on_the_dataset_its_mask_was_found_on(classifier_recipe):
    recipe = classifier_recipe(
        """
        search: {kind: mask_search, dataset: dev}
        importance: {kind: importance, dataset: train}
        by_mask: {kind: prune, mask: search}
        by_importance: {kind: prune, fraction: 0.25, importance: importance}
        explicit: {kind: prune, mask: search, dataset: train}
        """
    )
    steps = load_recipe(recipe).steps
    assert (steps["by_mask"].dataset, steps["by_importance"].dataset, steps["explicit"].dataset) == ("dev", "train", "train")
