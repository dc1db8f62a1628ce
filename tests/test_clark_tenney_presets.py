"""Clark's and Tenney's definitions as presets (issue 7): attention gradients, word pooling, the
'all' row over every word, the attention paper preset, and the probe's paper preset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers import agreement, recipe, write_yaml
from workbench.analysis.syntax import DependencyHeadScorer, word_level_attention
from workbench.executor import run_recipe
from workbench.progress import SilentProgress
from workbench.recipe.loader import load_recipe


def _run(path, store_dir):
    return run_recipe(load_recipe(path), store_dir, progress=SilentProgress())


def test_attention_gradients_equal_the_eager_models_own(tiny_model_dir, tmp_path, store_dir):
    """grad_sep etc. are mean |dL/dA| of the weights to [SEP]: compare with transformers' eager attentions."""
    import transformers

    from workbench.analysis.tasks import prepare_task
    from workbench.data.batching import collate
    from workbench.data.sources import load_dataset_spec
    from workbench.models.loading import load_model
    from workbench.recipe.schema import DatasetSpec

    model_dir = tiny_model_dir("bert")
    dev = agreement(12, 2)
    steps = {"attention": {"kind": "attention", "dataset": "dev", "batch_size": 5, "preset": "paper"}}
    path = write_yaml(tmp_path / "r.yaml", recipe(model_dir, datasets={"dev": dev}, steps=steps))
    result = _run(path, store_dir).step("attention").result
    assert result.data["denominators"] == "clark" and "not computed" not in result.data["gradients"]

    loaded = load_model(str(model_dir), head="sequence-classification", num_labels=2)
    dataset = load_dataset_spec("dev", DatasetSpec(**dev), tmp_path)
    task = prepare_task(loaded, dataset)
    batch = collate(task.encodings, list(range(len(task))))
    eager = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager")
    eager.eval()
    output = eager(**batch.model_inputs(), output_attentions=True)
    for attention in output.attentions:
        attention.retain_grad()
    torch.nn.functional.cross_entropy(output.logits, task.labels[batch.indices], reduction="sum").backward()
    real = batch.attention_mask.bool()
    sep = batch.input_ids == loaded.tokenizer.sep_token_id
    for layer, attention in enumerate(output.attentions):
        cells = real[:, None, :, None] & (sep & real)[:, None, None, :]  # [batch, 1, q, k]
        expected = (attention.grad.abs() * cells).sum() / (cells.sum() * attention.shape[1])
        assert result.layer_scores["grad_sep"][layer].item() == pytest.approx(expected.item(), rel=1e-4)


def test_attention_without_a_task_head_says_why_there_are_no_gradients(tiny_model_dir, tmp_path, store_dir):
    steps = {"attention": {"kind": "attention", "dataset": "dev"}}
    document = recipe(tiny_model_dir("bert", "base"), head="base", num_labels=None, datasets={"dev": agreement(8, 2)}, steps=steps)
    result = _run(write_yaml(tmp_path / "r.yaml", document), store_dir).step("attention").result
    assert result.data["gradients"] == "not computed: the model has no task head"
    assert "grad_sep" not in result.layer_scores
    assert set(result.layer_scores) == {"sep_to_sep", "other_to_sep", "entropy_smoothed", "entropy_uniform"}


def test_word_pooling_modes_follow_clarks_code():
    # 2 words; word 0 has sub-tokens 1, 2; token 0 and 3 are special ([CLS], [SEP]).
    attn = torch.tensor(
        [
            [0.1, 0.2, 0.3, 0.4],
            [0.0, 0.5, 0.3, 0.2],
            [0.2, 0.2, 0.2, 0.4],
            [0.3, 0.3, 0.3, 0.1],
        ]
    )
    index = [-1, 0, 0, 1]
    # NB: token 3 is word 1 here, so [SEP] does not exist; specials are only token 0.
    first = word_level_attention(attn, index, 2, "first")
    mean = word_level_attention(attn, index, 2, "mean")
    maxed = word_level_attention(attn, index, 2, "max")
    assert torch.allclose(first[0], torch.tensor([0.8, 0.2]))  # row of sub-token 1, TO word 0 = 0.5 + 0.3
    assert torch.allclose(mean[0], torch.tensor([0.6, 0.3]))  # mean of rows 1 and 2
    # max over rows 1, 2 of [to word 0, to word 1, to specials] = [0.8, 0.4, 0.2], renormalised by 1.4
    assert torch.allclose(maxed[0], torch.tensor([0.8, 0.4]) / 1.4)
    assert torch.allclose(first[1], mean[1]) and torch.allclose(first[1], torch.tensor([0.6, 0.1]))


def test_the_all_row_over_every_word_counts_roots_and_punctuation():
    # 3 words: w0 <- w1 (nsubj), w1 = root, w2 = punct of w1. Every head attends to the previous word
    # (w0 to w2, arbitrarily).
    attention = torch.zeros(1, 1, 3, 3)
    attention[0, 0, 0, 2] = attention[0, 0, 1, 0] = attention[0, 0, 2, 1] = 1.0
    heads, deprels, upos = [2, 0, 2], ["nsubj", "root", "punct"], ["PRON", "VERB", "PUNCT"]
    scored = DependencyHeadScorer(1, 1, min_count=1)
    every = DependencyHeadScorer(1, 1, min_count=1, all_words=True)
    for scorer in (scored, every):
        scorer.add(attention, heads, deprels, upos)
    assert scored.result().overall.count == 1  # only nsubj is scored
    assert every.result().overall.count == 3
    # dep->head: w0 -> w2 (wrong), root w1 can never be right, w2 -> w1 (right): 1 of 3
    assert every.result().overall.dep_to_head[0, 0] == pytest.approx(1 / 3)
    # the offset -1 baseline: w0 -> before the sentence = root (wrong), w1 -> w0 (wrong), w2 -> w1 (right)
    # offset -2: w1 -> root (right), w2 -> w0 (wrong)
    assert every.result().overall.offset_accuracy[-2] == pytest.approx(1 / 3)
    assert every.result().relations["nsubj"].count == 1  # relation rows are unchanged


def test_the_probe_paper_preset_mixes_raw_layers_and_scores_delta_on_dev_micro_f1():
    from workbench.analysis.probing import ProbeConfig, Splits, control_labels, cumulative_probes, evaluate_probe, train_probe

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (90,), generator=generator)
    features = torch.randn(3, 90, 8, generator=generator) + 2.0 * torch.nn.functional.one_hot(labels, 8)[None] * torch.arange(3)[:, None, None]
    splits = Splits(torch.arange(60), torch.arange(60, 75), torch.arange(75, 90))
    config = ProbeConfig(objective="sigmoid", standardize_mix=False, max_epochs=30)
    result = cumulative_probes(features, labels, splits, config, metric="micro_f1", split="dev")
    assert result.metric == "micro_f1" and result.split == "dev" and len(result.scores) == 3
    assert result.mixes[-1].center_of_gravity > 1.0  # the informative layer is the last one
    # micro-F1 of a sigmoid probe is jiant's: all (example, class) decisions above 0.5
    probe = train_probe(features[2], labels, splits.train, splits.dev, config)
    chosen = torch.sigmoid(probe.module(features[2][splits.test])) > 0.5
    truth = torch.nn.functional.one_hot(labels[splits.test], 3).bool()
    tp, errors = (chosen & truth).sum().item(), (chosen ^ truth).sum().item()
    assert evaluate_probe(probe, features[2], labels, splits.test)["micro_f1"] == pytest.approx(2 * tp / (2 * tp + errors))

    # control labels come from the TRAINING distribution: here train is all class 0
    skewed = torch.cat([torch.zeros(60, dtype=torch.long), torch.full((30,), 2)])
    fake = control_labels([f"w{i}" for i in range(90)], skewed, seed=1, train=torch.arange(60))
    assert set(fake.tolist()) == {0}
    assert math.isfinite(result.expected_layer) or np.isnan(result.expected_layer)


def test_probe_presets_resolve():
    from workbench.steps.probe import ProbeParams

    paper = ProbeParams(kind="probe", train="a", dev="b", preset="paper")
    assert (paper.mix_standardize, paper.objective, paper.cumulative, paper.cumulative_split, paper.cumulative_metric) == (
        False, "sigmoid", True, "dev", "micro_f1"
    )
    default = ProbeParams(kind="probe", train="a", dev="b")
    assert (default.mix_standardize, default.objective, default.cumulative) == (True, "softmax", False)
