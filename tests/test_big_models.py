"""Big-model loading: model.device_map / max_memory through accelerate, dtype: auto, attn_implementation.

A tiny BERT is dispatched across "cpu" and "disk" (accelerate loads disk-offloaded weights for each
forward and drops them after it); every number the head analyses compute must be the same as on
the undispatched model. No GPU is needed: with only cpu and disk, accelerate's hooks and offload
run exactly as they do beside GPUs.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import agreement, cli, recipe, run_json, steps_by_id, write_yaml
from workbench.analysis.attention_stats import AttentionGradients, HeadStatistics
from workbench.analysis.importance import frozen_parameters, head_importance
from workbench.analysis.tasks import TaskData, batch_loss
from workbench.data.agreement import generate_agreement
from workbench.data.batching import collate, encode_texts
from workbench.errors import ModelError, RecipeError, WorkbenchError
from workbench.models.attention import head_hooks
from workbench.models.loading import checkpoint_dtype, load_model, save_model

# cpu and disk, disk in the middle of the encoder: each layer's weights come and go per forward
CPU_AND_DISK = {"embeddings": "cpu", "encoder.layer.0": "cpu", "encoder.layer.1": "disk", "pooler": "disk", "classifier": "cpu"}


def _task(loaded, n=12):
    rows = generate_agreement(n, seed=3)
    encodings = encode_texts(loaded.tokenizer, [(row.sentence,) for row in rows], max_length=32, token_types=loaded.uses_token_types)
    return TaskData(encodings, torch.tensor([row.label for row in rows]), "classification")


def _statistics(loaded, task, batch_size=4):
    """The attention step's statistics and Clark's dL/dA, as the step computes them (observers + tap)."""
    statistics = HeadStatistics(*loaded.layout.shape, device=loaded.device)
    gradients = AttentionGradients(loaded.layout.num_layers, device=loaded.device)
    separators = torch.tensor([loaded.tokenizer.sep_token_id])
    for start in range(0, len(task), batch_size):
        batch = collate(task.encodings, list(range(start, min(start + batch_size, len(task)))), loaded.device)
        is_sep = torch.isin(batch.input_ids, separators.to(batch.input_ids.device))
        statistics.set_batch(batch.attention_mask, is_sep, torch.zeros_like(is_sep))
        with frozen_parameters(loaded.model), torch.enable_grad(), head_hooks(observers=[statistics.observe], tap=True) as hooks:
            loss = batch_loss(loaded, batch, task).losses.sum()
            grads = torch.autograd.grad(loss, [probs for _, _, probs in hooks.tapped])
        real = batch.attention_mask.bool()
        for (layer, _, _), gradient in zip(hooks.tapped, grads):
            gradients.add(layer, gradient, real, is_sep & real, torch.zeros_like(real))
    return {**statistics.result(), **gradients.result()}


def _assert_same(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.allclose(expected[name], actual[name], rtol=1e-6, atol=1e-9, equal_nan=True), name


@pytest.fixture(scope="module")
def bert_dir(tiny_model_dir):
    return str(tiny_model_dir("bert"))


@pytest.fixture(scope="module")
def reference(bert_dir):
    return load_model(bert_dir, head="sequence-classification")


def test_a_model_across_cpu_and_disk_gives_the_same_importance_and_attention_statistics(bert_dir, reference):
    placed = load_model(bert_dir, head="sequence-classification", device_map=CPU_AND_DISK)

    assert placed.device_map == {
        "bert.embeddings": "cpu", "bert.encoder.layer.0": "cpu", "bert.encoder.layer.1": "disk",
        "bert.pooler": "disk", "classifier": "cpu",
    }  # keys without the base model's prefix are accepted
    assert placed.offloaded == ("bert.encoder.layer.1", "bert.pooler")
    assert placed.model.bert.encoder.layer[1].attention.self.query.weight.device.type == "meta"  # really offloaded
    assert placed.device == torch.device("cpu") and placed.heads_reachable and len(placed.attention_modules) == 2
    task = _task(reference)

    for granularity in ("example", "batch", "token"):
        expected = head_importance(reference, task, 4, granularity=granularity, compute_entropy=True)
        actual = head_importance(placed, task, 4, granularity=granularity, compute_entropy=True)
        _assert_same(
            {"raw": expected.raw, "importance": expected.importance, "entropy": expected.entropy},
            {"raw": actual.raw, "importance": actual.importance, "entropy": actual.entropy},
        )
        assert actual.metrics == expected.metrics
    _assert_same(_statistics(reference, task), _statistics(placed, task))


def test_gates_work_on_a_placed_model(bert_dir, reference):
    placed = load_model(bert_dir, head="sequence-classification", device_map=CPU_AND_DISK)
    batch = collate(_task(reference).encodings, list(range(6)), placed.device)
    with torch.no_grad():
        plain = placed.model(**batch.model_inputs()).logits
        with head_hooks(gates=torch.ones(2, 4)):
            ones = placed.model(**batch.model_inputs()).logits
        mask = torch.ones(2, 4)
        mask[1, 2] = 0.0  # a head of the disk-offloaded layer
        with head_hooks(gates=mask):
            masked = placed.model(**batch.model_inputs()).logits
            expected = reference.model(**batch.model_inputs()).logits
        assert torch.equal(plain, ones)
        assert torch.allclose(masked, expected, rtol=1e-6, atol=1e-7) and not torch.allclose(masked, plain)


def test_layers_on_another_device_than_the_inputs_hand_home_what_callers_hold(bert_dir, reference):
    """Across GPUs a layer's probabilities are moved to the input device (`wb_home`) for observers,
    and the tapped ones are that copy, in the graph. Without a second device, 'cpu:0' stands in: it
    differs from 'cpu' to the comparison, so every move happens (and `.to` makes real copies)."""
    placed = load_model(bert_dir, head="sequence-classification", device_map=CPU_AND_DISK)
    for module in placed.attention_modules:
        module.wb_home = torch.device("cpu", 0)
    task = _task(reference)
    _assert_same(_statistics(reference, task), _statistics(placed, task))
    expected, actual = head_importance(reference, task, 4, compute_entropy=True), head_importance(placed, task, 4, compute_entropy=True)
    assert torch.allclose(actual.raw, expected.raw, rtol=1e-6, atol=1e-9)
    assert torch.allclose(actual.entropy, expected.entropy, rtol=1e-6, atol=1e-9)


def test_a_catch_all_and_nested_keys_place_layers_whose_names_share_a_prefix(tmp_path, minilm_dir):
    """{'': cpu, 'encoder.layer.1': disk} on 11 layers: Transformers' regex matching alone would also
    send layer 10 to disk while accelerate keeps it on cpu, and the load fails; the partition does not."""
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=11, num_attention_heads=4, intermediate_size=37)
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "bert11")
    transformers.AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(tmp_path / "bert11")
    source = str(tmp_path / "bert11")
    unplaced = load_model(source, head="sequence-classification")
    task = _task(unplaced, n=6)
    expected = head_importance(unplaced, task, 6)
    for device_map in ({"": "cpu", "encoder.layer.1": "disk"}, {"": "cpu", "bert.encoder": "disk", "bert.encoder.layer.10": "cpu"}):
        placed = load_model(source, head="sequence-classification", device_map=device_map)
        assert "disk" in placed.device_map.values() and "bert.encoder.layer.10" in placed.device_map
        assert torch.allclose(head_importance(placed, task, 6).raw, expected.raw, rtol=1e-6, atol=1e-9)
    assert placed.device_map["bert.encoder.layer.1"] == "disk" and placed.device_map["bert.encoder.layer.10"] == "cpu"


def test_a_new_task_head_placed_on_disk_stays_on_cpu_with_the_same_random_values(tiny_model_dir):
    """A base checkpoint under a classification head: the head's tensors are drawn at load time, so
    they are in no file that disk offload could read them from (accelerate: KeyError 'classifier.weight')."""
    source = str(tiny_model_dir("bert", head="base"))
    torch.manual_seed(7)
    unplaced = load_model(source, head="sequence-classification", num_labels=2)
    task = _task(unplaced)
    expected = head_importance(unplaced, task, 4)
    for device_map in ({"": "disk"}, {"": "cpu", "encoder.layer.1": "disk", "classifier": "disk"}):
        torch.manual_seed(7)
        placed = load_model(source, head="sequence-classification", num_labels=2, device_map=device_map)
        assert placed.device_map.get("classifier") == "cpu" and "disk" in placed.device_map.values(), placed.device_map
        assert torch.equal(placed.model.classifier.weight, unplaced.model.classifier.weight)
        assert torch.allclose(head_importance(placed, task, 4).raw, expected.raw, rtol=1e-6, atol=1e-9)


def test_a_new_task_head_drawn_off_the_cpu_gets_the_cpu_values(tiny_model_dir, monkeypatch):
    """On a GPU, Transformers draws a missing head from the CUDA generator; the loader draws it again on
    the CPU. Without a GPU, the head is treated as drawn elsewhere and first scrambled: the redraw must
    give exactly the unplaced load's values."""
    import workbench.models.loading as loading

    source = str(tiny_model_dir("bert", head="base"))
    torch.manual_seed(11)
    unplaced = load_model(source, head="sequence-classification", num_labels=2)
    monkeypatch.setattr(loading, "_drawn_off_cpu", lambda place: place == "cpu")
    original = loading._draw_new_tensors_on_cpu

    def scrambled_then_redrawn(model, *args):
        with torch.no_grad():
            model.classifier.weight.normal_(), model.classifier.bias.normal_()  # as if drawn by another generator
        original(model, *args)

    monkeypatch.setattr(loading, "_draw_new_tensors_on_cpu", scrambled_then_redrawn)
    torch.manual_seed(11)
    placed = load_model(source, head="sequence-classification", num_labels=2, device_map={"": "cpu", "encoder.layer.0": "disk"})
    assert placed.offloaded == ("bert.encoder.layer.0",)
    assert torch.equal(placed.model.classifier.weight, unplaced.model.classifier.weight)
    assert torch.equal(placed.model.classifier.bias, unplaced.model.classifier.bias)


def test_a_strategy_with_max_memory_spills_to_disk(bert_dir, reference):
    placed = load_model(bert_dir, head="sequence-classification", device_map="auto", max_memory={"cpu": "600KB"})
    assert "disk" in placed.device_map.values()
    task = _task(reference)
    assert torch.allclose(head_importance(placed, task, 4).raw, head_importance(reference, task, 4).raw, rtol=1e-6, atol=1e-9)
    on_cpu = load_model(bert_dir, head="sequence-classification", device_map="balanced")  # device cpu: the CPU only
    assert set(on_cpu.device_map.values()) == {"cpu"} and on_cpu.offloaded == ()


def test_a_pruned_model_is_placed_too(bert_dir, reference, tmp_path):
    from workbench.models.pruning import pruned_heads, prune_heads

    pruned = load_model(bert_dir, head="sequence-classification")
    prune_heads(pruned, {0: [1], 1: [0, 3]})
    save_model(pruned, tmp_path / "pruned", extra={"pruned_heads": pruned_heads(pruned)})
    placed = load_model(str(tmp_path / "pruned"), head="sequence-classification", device_map={"": "cpu", "encoder.layer.0": "disk"})
    assert placed.offloaded == ("bert.encoder.layer.0",) and pruned_heads(placed) == {0: [1], 1: [0, 3]}
    task = _task(reference)
    expected, actual = head_importance(pruned, task, 4), head_importance(placed, task, 4)
    assert torch.allclose(actual.raw, expected.raw, rtol=1e-6, atol=1e-9, equal_nan=True)
    assert torch.isnan(actual.raw[1, 0]) and torch.isnan(actual.raw[0, 1])


@pytest.mark.parametrize(
    "device_map, field, words",
    [
        ({"encoder.layr.0": "cpu", "": "cpu"}, "model.device_map.encoder.layr.0", ["no module 'encoder.layr.0'", "did you mean 'encoder.layer.0'"]),
        ({"encoder": "cpu"}, "model.device_map", ["no device for bert.embeddings, bert.pooler, classifier", "give ''"]),
        ({"": "cpu", "embeddings.word_embeddings": "disk"}, "model.device_map", ["splits bert.embeddings", "position_ids"]),
        ({"": "cpu", "encoder": "cpu", "bert.encoder": "disk"}, "model.device_map.bert.encoder", ["name the same module"]),
    ],
)
def test_explicit_maps_are_checked_against_the_modules(bert_dir, device_map, field, words):
    with pytest.raises(RecipeError) as caught:
        load_model(bert_dir, head="sequence-classification", device_map=device_map)
    assert caught.value.field == field
    for word in words:
        assert word in str(caught.value)


def test_devices_that_are_not_there_and_offload_under_training_are_refused(bert_dir):
    with pytest.raises(ModelError, match="GPU 0, but the recipe's device is cpu"):
        load_model(bert_dir, head="sequence-classification", device_map={"": 0})
    with pytest.raises(ModelError, match=r"offloads bert.encoder.layer.1, bert.pooler to cpu/disk.*changes weights"):
        load_model(bert_dir, head="sequence-classification", device_map=CPU_AND_DISK, changes_weights=True)
    assert load_model(bert_dir, head="sequence-classification", device_map={"": "cpu"}, changes_weights=True).offloaded == ()


def test_dtype_auto_is_the_checkpoints(tiny_model_dir, tmp_path, minilm_dir):
    import json

    import transformers

    from tests.conftest import tiny_config

    model = transformers.AutoModelForSequenceClassification.from_config(tiny_config("bert")).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    transformers.AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(tmp_path / "bf16")
    assert checkpoint_dtype(str(tmp_path / "bf16")) == "bfloat16"
    assert load_model(str(tmp_path / "bf16"), head="sequence-classification", dtype="auto").model.dtype == torch.bfloat16
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    config.pop("dtype", None), config.pop("torch_dtype", None)
    (tmp_path / "bf16" / "config.json").write_text(json.dumps(config))
    assert checkpoint_dtype(str(tmp_path / "bf16")) == "bfloat16"  # from the safetensors header
    assert checkpoint_dtype(str(tiny_model_dir("bert"))) == "float32"


def test_attn_implementation_replaces_the_workbench_function_and_heads_are_then_refused(bert_dir, reference):
    eager = load_model(bert_dir, head="sequence-classification", attn_implementation="eager")
    assert eager.model.config._attn_implementation == "eager" and eager.attn_implementation == "eager"
    assert not eager.heads_reachable
    with pytest.raises(ModelError, match="attn_implementation='eager'"):
        eager.require_heads("head importance")
    batch = collate(_task(reference).encodings, list(range(4)))
    with torch.no_grad():
        assert torch.allclose(eager.model(**batch.model_inputs()).logits, reference.model(**batch.model_inputs()).logits, atol=1e-6)
    with pytest.raises(ModelError, match="model.attn_implementation 'flash_attention_2'"):
        load_model(bert_dir, head="sequence-classification", attn_implementation="flash_attention_2")


# ---- through recipes ---------------------------------------------------------------------------------


def _head_recipe(model_dir, **model):
    document = recipe(
        model_dir,
        datasets={"dev": agreement(24, 2)},
        steps={
            "importance": {"kind": "importance", "dataset": "dev", "batch_size": 8, "entropy": True},
            "attention": {"kind": "attention", "dataset": "dev", "batch_size": 8},
        },
    )
    document["model"].update(model)
    return document


def test_a_recipe_run_across_cpu_and_disk_matches_and_shares_the_cache(bert_dir, tmp_path):
    plain = write_yaml(tmp_path / "plain.yaml", _head_recipe(bert_dir))
    placed = write_yaml(tmp_path / "placed.yaml", _head_recipe(bert_dir, device_map=CPU_AND_DISK, attn_implementation="sdpa"))
    assert cli("run", plain, "--store", tmp_path / "a", "-q").code == 0
    result = cli("run", placed, "--store", tmp_path / "b", "-q")
    assert result.code == 0, result.text
    assert "keeps the workbench attention function" in result.text
    first, second = (steps_by_id(run_json(tmp_path / store)) for store in ("a", "b"))
    for step in ("importance", "attention"):
        for scores in ("head_scores", "layer_scores"):
            a, b = first[step][scores], second[step][scores]
            assert a.keys() == b.keys()
            for name in a:
                expected, actual = (torch.tensor(values, dtype=torch.float64) for values in (a[name], b[name]))
                assert torch.allclose(expected, actual, rtol=1e-6, atol=1e-9, equal_nan=True), (step, name)
        assert first[step]["head_scores"] and first[step]["metrics"] == second[step]["metrics"]
    assert "grad_sep" in first["attention"]["layer_scores"]  # Clark's dL/dA went through the tapped probabilities
    again = cli("run", placed, "--store", tmp_path / "a", "-q")  # placement is not in the cache keys
    assert again.code == 0, again.text
    assert {step["status"] for step in run_json(tmp_path / "a")["steps"]} == {"cached"}


def test_a_bad_map_key_is_a_recipe_error_at_its_line(bert_dir, tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", _head_recipe(bert_dir, device_map={"": "cpu", "encoder.layr.1": "disk"}))
    result = cli("run", path, "--store", tmp_path / "s", "-q")
    assert result.code == 2
    line = next(number for number, text in enumerate(path.read_text().splitlines(), 1) if "encoder.layr.1" in text)
    assert f"bad.yaml:{line} model.device_map.encoder.layr.1" in result.text and "did you mean 'encoder.layer.1'" in result.text


@pytest.mark.parametrize(
    "model, words",
    [
        ({"device_map": {"encoder": "gpu"}}, "'gpu' is not a device"),
        ({"device_map": "everywhere"}, "device_map"),
        ({"device_map": {"": "cpu"}, "max_memory": {"cpu": "1GiB"}}, "max_memory limits what a device_map strategy places"),
        ({"device_map": "auto", "max_memory": {0: "ten gigs"}}, "'ten gigs' (0) is not a size"),
        ({"attn_implementation": "fast"}, "attn_implementation"),
        ({"dtype": "float64"}, "dtype"),
    ],
)
def test_placement_fields_are_validated_before_any_model_loads(tmp_path, model, words):
    from workbench.recipe.loader import load_recipe

    document = _head_recipe(tmp_path / "nowhere", **model)
    with pytest.raises(WorkbenchError) as caught:
        load_recipe(write_yaml(tmp_path / "r.yaml", document))
    assert words in str(caught.value) and "r.yaml:" in str(caught.value)
