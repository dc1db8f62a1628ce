"""Heads through the output projection (models that compute attention inline: the original GPT, DeBERTa-v2, ...).

The attention-interface path and the output-projection path must give the same numbers where both
apply (BERT, GPT-2), and the original GPT must run the head steps end to end.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import minilm_path
from workbench.analysis.attention_stats import HeadStatistics
from workbench.analysis.importance import head_importance
from workbench.analysis.tasks import TaskData
from workbench.data.agreement import generate_agreement
from workbench.data.batching import encode_texts
from workbench.errors import ModelError
from workbench.executor import run_recipe
from workbench.models.attention import head_hooks
from workbench.models.loading import load_model
from workbench.recipe.loader import load_recipe

TEXTS = ["the keys to the cabinet are here , he said .", "a dog runs .", "why ?"]


@pytest.fixture(scope="module")
def openai_gpt_dir(tmp_path_factory):
    import transformers

    torch.manual_seed(0)
    config = transformers.OpenAIGPTConfig(vocab_size=30522, n_embd=32, n_layer=2, n_head=4, n_positions=128, pad_token_id=0)
    model = transformers.OpenAIGPTForSequenceClassification(config)
    folder = tmp_path_factory.mktemp("openai-gpt")
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return folder


def _task(loaded, n=12):
    rows = generate_agreement(n, seed=3)
    encodings = encode_texts(loaded.tokenizer, [(row.sentence,) for row in rows], max_length=32, token_types=loaded.uses_token_types)
    return TaskData(encodings, torch.tensor([row.label for row in rows]), "classification")


def _both_paths(folder, head="sequence-classification"):
    interface = load_model(str(folder), head=head)
    projection = load_model(str(folder), head=head, heads_via="output projection")
    assert interface.heads_via == "attention interface"
    assert projection.heads_via == "output projection" and projection.heads_reachable
    assert projection.model.config._attn_implementation == "eager"
    return interface, projection


def _statistics(loaded, batches):
    tokenizer = loaded.tokenizer
    result = HeadStatistics(*loaded.layout.shape)
    for texts in batches:
        inputs = tokenizer(list(texts), padding=True, return_tensors="pt", return_token_type_ids=False)
        ids = inputs["input_ids"]
        punct = torch.isin(ids, torch.tensor(tokenizer.convert_tokens_to_ids([".", ","])))
        result.set_batch(inputs["attention_mask"], ids == tokenizer.sep_token_id, punct)
        with torch.no_grad(), head_hooks(observers=[result.observe]):
            loaded.model(input_ids=ids, attention_mask=inputs["attention_mask"])
    return result.result()


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_the_two_paths_give_the_same_importance_and_statistics(tiny_model_dir, family):
    interface, projection = _both_paths(tiny_model_dir(family))
    for granularity in ("batch", "token"):
        options = {"batch_size": 4, "granularity": granularity, "normalize_by_layer": False, "normalize_global": False}
        a = head_importance(interface, _task(interface), **options).importance
        b = head_importance(projection, _task(projection), **options).importance
        assert a.abs().max() > 0
        torch.testing.assert_close(b, a, atol=1e-6 * float(a.abs().max()), rtol=1e-5, msg=granularity)
    together_a, together_b = _statistics(interface, [TEXTS]), _statistics(projection, [TEXTS])
    alone_b = _statistics(projection, [[text] for text in TEXTS])
    for name, values in together_a.items():
        torch.testing.assert_close(together_b[name], values, atol=1e-6, rtol=1e-5, equal_nan=True, msg=name)
        torch.testing.assert_close(alone_b[name], values, atol=1e-6, rtol=1e-5, equal_nan=True, msg=f"{name} alone")


def test_projection_gates_per_example_and_per_token_match_the_interface(tiny_model_dir):
    interface, projection = _both_paths(tiny_model_dir("bert"))
    inputs = interface.tokenizer(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    batch, seq = inputs["input_ids"].shape
    generator = torch.Generator().manual_seed(0)
    for shape in [(2, 4), (batch, 2, 4), (batch, seq, 2, 4)]:
        gates = torch.rand(shape, generator=generator)
        with torch.no_grad(), head_hooks(gates=gates):
            a = interface.model(**inputs).logits
            b = projection.model(**inputs).logits
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5, msg=str(shape))
    with torch.no_grad(), head_hooks(gates=torch.ones(2, 4)):
        gated = projection.model(**inputs).logits
    with torch.no_grad():
        assert torch.equal(gated, projection.model(**inputs).logits), "gates of ones changed the outputs"


def test_observing_leaves_the_outputs_as_asked(tiny_model_dir):
    _, projection = _both_paths(tiny_model_dir("gpt2"))
    inputs = projection.tokenizer(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    seen = []
    with torch.no_grad(), head_hooks(observers=[lambda layer, heads, probs: seen.append(layer)]):
        plain = projection.model(**inputs)
        asked = projection.model(**inputs, output_attentions=True)
    assert seen == [0, 1, 0, 1]
    assert plain.attentions is None  # the probabilities were only for the observers
    assert len(asked.attentions) == 2


def test_an_unknown_heads_via_is_refused(tiny_model_dir):
    with pytest.raises(ModelError, match="unknown heads_via 'projection'"):
        load_model(str(tiny_model_dir("bert")), head="sequence-classification", heads_via="projection")


def test_the_original_gpt_runs_every_head_step_end_to_end(openai_gpt_dir, write_recipe, store_dir):
    recipe = write_recipe(
        f"""
        version: 1
        name: openai-gpt-heads
        seed: 1
        model: {{id: {openai_gpt_dir}, head: sequence-classification, num_labels: 2}}
        datasets:
          dev: {{path: agreement, size: 48, seed: 2, text: sentence, label: label}}
        steps:
          attention: {{kind: attention, dataset: dev, save_maps: 2}}
          importance: {{kind: importance, dataset: dev, batch_size: 16}}
          search: {{kind: mask_search, dataset: dev, threshold: 0.5, amount: 0.25, batch_size: 16}}
          prune: {{kind: prune, mask: search, dataset: dev, batch_sizes: [4], timing_examples: 8}}
          ablation: {{kind: head_ablation, dataset: dev}}
          evaluate_masked: {{kind: evaluate, mask: search, dataset: dev}}
          evaluate_pruned: {{kind: evaluate, model: prune, dataset: dev}}
        """
    )
    outcome = run_recipe(load_recipe(recipe), store_dir)
    result = {step.step_id: step.result for step in outcome.steps}
    assert result["importance"].head_scores["importance"].shape == (2, 4)
    assert result["attention"].head_scores["entropy_smoothed"].shape == (2, 4)
    prune = result["prune"]
    masked = int(result["search"].metrics["heads_masked"])
    assert masked > 0 and prune.metrics["heads_pruned"] == masked
    assert prune.metrics["max_abs_logit_difference"] <= 1e-4
    assert prune.metrics["parameters_after"] < prune.metrics["parameters_before"]
    assert result["evaluate_pruned"].metrics["accuracy"] == result["evaluate_masked"].metrics["accuracy"]
    assert result["ablation"].head_scores


@pytest.mark.parametrize("model", ["openai-community/openai-gpt", "openai-community/gpt2"])
def test_the_gpt_recipe_validates_for_both_checkpoints(model, tmp_path):
    from tests.helpers import REPO, cli

    text = (REPO / "recipes" / "gpt-heads.yaml").read_text()
    assert "id: openai-community/openai-gpt" in text
    recipe = tmp_path / "gpt.yaml"
    recipe.write_text(text.replace("openai-community/openai-gpt", model))
    result = cli("validate", recipe)
    assert result.code == 0, result.text
    assert "6 steps (finetune, attention, importance, mask_search, prune, evaluate)" in result.text


def test_the_original_gpt_runs_the_syntax_and_code_head_steps(openai_gpt_dir, write_recipe, store_dir, tmp_path):
    from tests.test_cat_step import write_functions
    from tests.test_syntax_heads_step import chain_treebank

    chain_treebank(tmp_path / "chain.conllu", 12, seed=5)
    write_functions(tmp_path / "functions.jsonl")
    recipe = write_recipe(
        f"""
        version: 1
        name: openai-gpt-syntax
        seed: 1
        model: {{id: {openai_gpt_dir}, head: sequence-classification, num_labels: 2}}
        datasets:
          tb: {{path: conllu, data_files: chain.conllu, max_length: 24}}
          code: {{path: python_code, data_files: functions.jsonl, partition: test, max_length: 64}}
          dev: {{path: agreement, size: 24, seed: 2, text: sentence, label: label}}
        steps:
          syntax: {{kind: syntax_heads, dataset: tb, batch_size: 4, min_count: 5, js_sentences: 4}}
          cat: {{kind: cat_probe, dataset: code, per_head: true, batch_size: 2}}
          curve: {{kind: prune_curve, dataset: dev, percents: [0, 50]}}
        """
    )
    outcome = run_recipe(load_recipe(recipe), store_dir)
    result = {step.step_id: step.result for step in outcome.steps}
    assert result["syntax"].head_scores and result["cat"].layer_scores
    assert [point["heads_masked"] for point in result["curve"].data["curve"]] == [0, 4]


def test_attention_gradients_agree_and_the_path_works_on_a_model_across_cpu_and_disk(tiny_model_dir):
    """dL/dA through the tap (Clark's attention gradients) and the statistics: interface path, projection
    path, and the projection path with a layer offloaded to disk (weights loaded at every forward)."""
    from tests.test_big_models import CPU_AND_DISK, _assert_same, _statistics
    from tests.test_big_models import _task as big_task

    interface, projection = _both_paths(tiny_model_dir("bert"))
    placed = load_model(str(tiny_model_dir("bert")), head="sequence-classification", device_map=CPU_AND_DISK, heads_via="output projection")
    assert placed.heads_via == "output projection" and placed.offloaded
    task = big_task(interface)
    expected = _statistics(interface, task)
    assert any(name.startswith("grad") or "gradient" in name for name in expected), sorted(expected)
    for loaded in (projection, placed):
        _assert_same(expected, _statistics(loaded, task))
        ours = head_importance(loaded, task, 4, granularity="example", compute_entropy=True)
        theirs = head_importance(interface, task, 4, granularity="example", compute_entropy=True)
        torch.testing.assert_close(ours.raw, theirs.raw, rtol=1e-5, atol=1e-7)
