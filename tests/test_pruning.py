"""Structural head pruning: pruned logits equal masked logits, exact parameter counts, save/load, GQA."""

from __future__ import annotations

import copy

import pytest
import torch

from workbench.errors import ModelError
from workbench.models.attention import head_hooks
from workbench.models.loading import load_model, save_model
from workbench.analysis.head_selection import select_heads_to_prune
from workbench.models.pruning import (
    attention_parameters,
    count_parameters,
    prune_heads,
    pruned_heads,
)

TEXTS = ["the keys to the cabinet are here .", "a dog runs .", "why ?"]  # a padded batch
LAYERS, HEADS, HIDDEN, HEAD_DIM, KV_HEADS = 2, 4, 32, 8, 2  # the tiny models of conftest


@pytest.fixture(scope="module")
def pristine(tiny_model_dir):
    """One unpruned model per family, loaded once; tests prune deep copies."""
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = load_model(str(tiny_model_dir(family)), head="sequence-classification")
        original = cache[family]
        return copy.deepcopy(original, {id(original.tokenizer): original.tokenizer})  # share the tokenizer

    return get


def _inputs(loaded):
    batch = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    assert (batch["attention_mask"] == 0).any()
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _mask(pruned: dict[int, list[int]]) -> torch.Tensor:
    gates = torch.ones(LAYERS, HEADS)
    for layer, heads in pruned.items():
        gates[layer, heads] = 0.0
    return gates


def _logits(loaded, gates=None):
    with torch.no_grad(), head_hooks(gates=gates):
        return loaded.model(**_inputs(loaded)).logits


def _expected_drop(family: str, pruned: dict[int, list[int]]) -> int:
    """Parameters removed by pruning `pruned` (original ids) from an unpruned tiny model."""
    if family == "llama":  # no biases; q and o per query head, k and v per removed K/V group
        per_query, per_group = 2 * HIDDEN * HEAD_DIM, 2 * HIDDEN * HEAD_DIM
        rep = HEADS // KV_HEADS
        groups = [set(range(group * rep, (group + 1) * rep)) for group in range(KV_HEADS)]
        removed_groups = sum(1 for heads in pruned.values() for group in groups if group <= set(heads))
        return per_query * sum(len(h) for h in pruned.values()) + per_group * removed_groups
    per_head = 3 * (HIDDEN * HEAD_DIM + HEAD_DIM) + HEAD_DIM * HIDDEN  # q, k, v rows with bias; output columns
    return per_head * sum(len(h) for h in pruned.values())


CASES = [
    ("bert", {0: [0, 1, 2, 3], 1: [2]}, "groups"),  # a layer losing all heads, a layer losing exactly one
    ("bert", {0: [1], 1: [0, 3]}, "groups"),
    ("bert", {0: [0, 1, 2, 3], 1: [0, 1, 2, 3]}, "groups"),  # nothing left at all
    ("roberta", {0: [3], 1: [0, 1, 2, 3]}, "groups"),
    ("roberta", {0: [0, 2]}, "groups"),
    ("gpt2", {0: [0, 1, 2, 3], 1: [2]}, "groups"),
    ("gpt2", {0: [1], 1: [0, 1, 2, 3]}, "groups"),
    ("gpt2", {0: [0, 3], 1: [1, 2]}, "groups"),
    ("llama", {0: [0, 1, 2, 3], 1: [2, 3]}, "groups"),  # whole K/V groups; layer 0 loses everything
    ("llama", {1: [0, 1]}, "groups"),
    ("llama", {0: [0, 2], 1: [1, 3]}, "per_group"),  # one query head from each group
    ("llama", {0: [1, 3], 1: [0, 1, 2, 3]}, "per_group"),
]


@pytest.mark.parametrize(("family", "heads", "policy"), CASES, ids=lambda value: str(value).replace(" ", ""))
def test_pruned_logits_equal_masked_logits(pristine, family, heads, policy):
    loaded = pristine(family)
    plain, masked = _logits(loaded), _logits(loaded, _mask(heads))
    before, attention_before = count_parameters(loaded), attention_parameters(loaded)

    result = prune_heads(loaded, heads, gqa_policy=policy)

    assert result == heads == pruned_heads(loaded) == loaded.model.wb_pruned_heads
    pruned = _logits(loaded)
    assert (pruned - masked).abs().max().item() <= 1e-4
    assert not torch.allclose(pruned, plain, atol=1e-4)  # the heads did matter
    assert before - count_parameters(loaded) == _expected_drop(family, heads)
    assert attention_before - attention_parameters(loaded) == _expected_drop(family, heads)
    for layer, module in enumerate(loaded.attention_modules):
        assert module.wb_head_ids.tolist() == [h for h in range(HEADS) if h not in heads.get(layer, [])]


def test_fully_pruned_layer_outputs_the_output_bias(pristine):
    """GPT-2 attention with no heads left returns c_proj's bias at every position; BERT's returns 0 width."""
    gpt2 = pristine("gpt2")
    prune_heads(gpt2, {0: [0, 1, 2, 3]})
    attention = gpt2.attention_modules[0]
    with torch.no_grad():
        attention.c_proj.bias.normal_()
        hidden = torch.randn(2, 5, HIDDEN)
        output, _ = attention(hidden)
    assert attention.c_attn.weight.shape == (HIDDEN, 0) and attention.c_proj.weight.shape == (0, HIDDEN)
    assert torch.equal(output, attention.c_proj.bias.expand(2, 5, HIDDEN))

    bert = pristine("bert")
    prune_heads(bert, {1: [0, 1, 2, 3]})
    with torch.no_grad():
        output, _ = bert.attention_modules[1](torch.randn(2, 5, HIDDEN))
    assert output.shape == (2, 5, 0)


def test_pruning_keeps_dtype_and_gradient_flags(pristine):
    loaded = pristine("llama")
    loaded.model.to(torch.bfloat16)
    prune_heads(loaded, {0: [2, 3]})
    module = loaded.attention_modules[0]
    for projection in (module.q_proj, module.k_proj, module.v_proj, module.o_proj):
        assert projection.weight.dtype == torch.bfloat16 and projection.weight.requires_grad
    assert module.q_proj.weight.shape == (2 * HEAD_DIM, HIDDEN) and module.k_proj.out_features == HEAD_DIM


@pytest.mark.parametrize(
    ("family", "heads", "policy"),
    [
        ("bert", {0: [0, 1, 2, 3], 1: [1]}, "groups"),
        ("roberta", {1: [0, 2]}, "groups"),
        ("gpt2", {0: [0, 1, 2, 3], 1: [3]}, "groups"),
        ("llama", {0: [0, 1, 2, 3], 1: [1, 3]}, "per_group"),
    ],
)
def test_save_and_load_back(pristine, tmp_path, family, heads, policy):
    loaded = pristine(family)
    prune_heads(loaded, heads, gqa_policy=policy)
    expected = _logits(loaded)
    save_model(loaded, tmp_path / "pruned", extra={"pruned_heads": pruned_heads(loaded)})

    again = load_model(str(tmp_path / "pruned"), head="sequence-classification")

    assert again.heads_reachable and len(again.attention_modules) == LAYERS
    shapes = {name: tuple(value.shape) for name, value in loaded.model.state_dict().items()}
    assert {name: tuple(value.shape) for name, value in again.model.state_dict().items()} == shapes
    assert torch.equal(_logits(again), expected)
    assert pruned_heads(again) == heads
    assert [m.wb_head_ids.tolist() for m in again.attention_modules] == [
        [h for h in range(HEADS) if h not in heads.get(layer, [])] for layer in range(LAYERS)
    ]
    assert count_parameters(again) == count_parameters(loaded)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_gates_on_a_pruned_model_address_original_heads(pristine, tmp_path, family):
    """Gate [layers, original heads] on the (reloaded) pruned model == the same gate on the masked unpruned model,
    values and gradients alike: importance can be computed on a pruned model."""
    heads = {0: [1, 3], 1: [1, 3]} if family == "llama" else {0: [0, 1, 2, 3], 1: [1]}
    policy = "per_group" if family == "llama" else "groups"
    unpruned = pristine(family)
    loaded = pristine(family)
    prune_heads(loaded, heads, gqa_policy=policy)
    save_model(loaded, tmp_path / "pruned", extra={"pruned_heads": pruned_heads(loaded)})
    again = load_model(str(tmp_path / "pruned"), head="sequence-classification")

    gates = torch.rand(LAYERS, HEADS) + 0.5
    gates[1, 2] = 0.0  # a remaining head, gated off by its original id
    on_pruned = gates.clone().requires_grad_(True)
    on_masked = (gates * _mask(heads)).requires_grad_(True)
    with head_hooks(gates=on_pruned):
        pruned_logits = again.model(**_inputs(again)).logits
    with head_hooks(gates=on_masked):
        masked_logits = unpruned.model(**_inputs(unpruned)).logits
    assert (pruned_logits - masked_logits).abs().max().item() <= 1e-4
    pruned_logits.sum().backward()
    masked_logits.sum().backward()
    keep = _mask(heads).bool()
    assert torch.all(on_pruned.grad[~keep] == 0)
    assert torch.allclose(on_pruned.grad[keep], on_masked.grad[keep], atol=1e-5)
    assert on_pruned.grad[1, 2] != 0


def test_pruning_twice_accumulates_original_ids(pristine):
    loaded = pristine("bert")
    assert prune_heads(loaded, {1: [0]}) == {1: [0]}
    result = prune_heads(loaded, {1: [0, 2], 0: [3]})  # head 0 again: already gone, ignored
    assert result == {0: [3], 1: [0, 2]}
    assert loaded.attention_modules[1].wb_head_ids.tolist() == [1, 3]
    assert (_logits(loaded) - _logits(pristine("bert"), _mask(result))).abs().max().item() <= 1e-4
    assert prune_heads(loaded, {1: [1, 3]}) == {0: [3], 1: [0, 1, 2, 3]}


def test_llama_mixed_policies_accumulate_and_reload(pristine, tmp_path):
    """per_group then groups on the same layer; the saved map alone rebuilds the shapes."""
    loaded = pristine("llama")
    prune_heads(loaded, {0: [0, 2]}, gqa_policy="per_group")
    module = loaded.attention_modules[0]
    assert module.num_key_value_groups == 1 and module.k_proj.out_features == 2 * HEAD_DIM
    result = prune_heads(loaded, {0: [1]}, gqa_policy="groups")  # group 0's last query head: its K/V go too
    assert result == {0: [0, 1, 2]}
    assert module.k_proj.out_features == HEAD_DIM and module.wb_head_ids.tolist() == [3]
    expected = _logits(loaded)
    assert (expected - _logits(pristine("llama"), _mask(result))).abs().max().item() <= 1e-4
    save_model(loaded, tmp_path / "pruned", extra={"pruned_heads": result})
    again = load_model(str(tmp_path / "pruned"), head="sequence-classification")
    assert torch.equal(_logits(again), expected)


def test_gqa_requests_are_checked_or_rounded(pristine):
    loaded = pristine("llama")
    weights = loaded.attention_modules[1].q_proj.weight
    with pytest.raises(ModelError, match=r"layer 1: gqa_policy 'groups'.*heads \[2\].*group 1"):
        prune_heads(loaded, {0: [0, 1], 1: [2]}, gqa_policy="groups")
    with pytest.raises(ModelError, match=r"layer 0: gqa_policy 'per_group'.*unbalanced.*group 0: 2, group 1: 0"):
        prune_heads(loaded, {0: [0, 1]}, gqa_policy="per_group")
    assert pruned_heads(loaded) == {} and loaded.attention_modules[1].q_proj.weight is weights  # nothing touched

    assert prune_heads(copy.deepcopy(loaded), {0: [0, 1], 1: [2]}, partial_groups="keep") == {0: [0, 1]}
    assert prune_heads(loaded, {0: [0, 1], 1: [2]}, partial_groups="prune") == {0: [0, 1], 1: [2, 3]}


def test_bad_requests_raise_clear_errors(pristine):
    loaded = pristine("bert")
    with pytest.raises(ModelError, match="layer 1: head 4 is out of range"):
        prune_heads(loaded, {1: [4]})
    with pytest.raises(ModelError, match="layer 2 is out of range"):
        prune_heads(loaded, {2: [0]})
    with pytest.raises(ModelError, match="not an integer"):
        prune_heads(loaded, {0: ["a"]})
    with pytest.raises(ModelError, match="gqa_policy"):
        prune_heads(loaded, {0: [0]}, gqa_policy="nonsense")
    assert pruned_heads(loaded) == {}

    class Unknown(torch.nn.Module):
        pass

    fake = copy.copy(loaded)
    fake.attention_modules = [Unknown(), Unknown()]
    with pytest.raises(ModelError, match="unknown attention structure"):
        prune_heads(fake, {0: [0]})


def test_select_without_gqa_follows_importance():
    importance = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.05, 0.7]])
    assert select_heads_to_prune(importance, 3) == {0: [1], 1: [0, 2]}
    assert select_heads_to_prune(importance, 0.5) == {0: [1, 3], 1: [0, 2]}  # 4 of 8 heads
    assert select_heads_to_prune(importance, 2, already_pruned={1: [2]}) == {0: [1], 1: [0]}
    assert select_heads_to_prune(importance, 0) == {}
    with pytest.raises(ModelError):
        select_heads_to_prune(importance, 1.5)


def test_select_with_gqa_policies():
    # 2 K/V groups per layer: heads {0, 1} and {2, 3}
    importance = torch.tensor([[0.1, 0.2, 0.9, 0.8], [0.3, 0.05, 0.4, 0.6]])
    groups = select_heads_to_prune(importance, 4, num_kv_heads=2, gqa_policy="groups")
    assert groups == {0: [0, 1], 1: [0, 1]}  # the two least important whole groups (0.3 and 0.35)
    assert select_heads_to_prune(importance, 3, num_kv_heads=2, gqa_policy="groups") == {0: [0, 1]}  # never more
    assert select_heads_to_prune(importance, 1, num_kv_heads=2, gqa_policy="groups") == {}

    per_group = select_heads_to_prune(importance, 2, num_kv_heads=2, gqa_policy="per_group")
    assert per_group == {1: [1, 2]}  # layer 1's slice (0.05 + 0.4) beats layer 0's (0.1 + 0.8)
    more = select_heads_to_prune(importance, 4, num_kv_heads=2, gqa_policy="per_group", already_pruned=per_group)
    assert more == {0: [0, 3], 1: [0, 3]}

    with pytest.raises(ModelError, match="key/value groups"):
        select_heads_to_prune(importance, 2, num_kv_heads=3)


@pytest.mark.parametrize("policy", ["groups", "per_group"])
def test_selected_heads_prune_cleanly(pristine, policy):
    loaded = pristine("llama")
    importance = torch.rand(LAYERS, HEADS, generator=torch.Generator().manual_seed(1))
    chosen = select_heads_to_prune(importance, 0.5, num_kv_heads=KV_HEADS, gqa_policy=policy)
    assert sum(len(h) for h in chosen.values()) == 4
    masked = _logits(loaded, _mask(chosen))
    assert prune_heads(loaded, chosen, gqa_policy=policy) == chosen
    assert (_logits(loaded) - masked).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_observers_on_a_fully_pruned_layer(pristine, family):
    loaded = pristine(family)
    prune_heads(loaded, {0: [0, 1, 2, 3]})
    seen = []
    with torch.no_grad(), head_hooks(observers=[lambda layer, heads, probs: seen.append((layer, heads.tolist()))]):
        eager = loaded.model(**_inputs(loaded)).logits
    assert torch.allclose(eager, _logits(loaded), atol=1e-5)
    assert seen == [(0, []), (1, [0, 1, 2, 3])]
