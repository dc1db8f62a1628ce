"""The workbench attention function: gates, observers and masking on every supported family."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import FAMILIES
from workbench.models.attention import head_hooks
from workbench.models.loading import load_model


def _inputs(loaded, texts):
    batch = loaded.tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


TEXTS = ["the keys to the cabinet are here .", "a dog runs ."]


@pytest.mark.parametrize("family", FAMILIES)
def test_gates_of_ones_change_nothing(tiny_model_dir, family):
    loaded = load_model(str(tiny_model_dir(family)), head="sequence-classification")
    assert loaded.heads_reachable and len(loaded.attention_modules) == 2
    inputs = _inputs(loaded, TEXTS)
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with head_hooks(gates=torch.ones(2, 4)):
            gated = loaded.model(**inputs).logits
        with head_hooks(eager=True):
            eager = loaded.model(**inputs).logits
    assert torch.equal(plain, gated)
    assert torch.allclose(plain, eager, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_gate_removes_exactly_that_head(tiny_model_dir, family):
    """Zeroing head h equals zeroing that head's slice of the attention output by hand."""
    loaded = load_model(str(tiny_model_dir(family)), head="sequence-classification")
    inputs = _inputs(loaded, TEXTS)
    gates = torch.ones(2, 4)
    gates[1, 2] = 0.0
    module = loaded.attention_modules[1]
    head_dim = loaded.model.config.hidden_size // 4

    def zero_head_two(_module, args, kwargs):
        # The output projection's input is [batch, seq, heads * head_dim]; blank head 2's columns.
        hidden = args[0].clone()
        hidden[..., 2 * head_dim : 3 * head_dim] = 0
        return (hidden,), kwargs

    projection = _output_projection(loaded.model, module)
    with torch.no_grad():
        with head_hooks(gates=gates):
            gated = loaded.model(**inputs).logits
        handle = projection.register_forward_pre_hook(zero_head_two, with_kwargs=True)
        try:
            by_hand = loaded.model(**inputs).logits
        finally:
            handle.remove()
        plain = loaded.model(**inputs).logits
    assert torch.allclose(gated, by_hand, atol=1e-6)
    assert not torch.allclose(gated, plain, atol=1e-6)


def _output_projection(model, module):
    """The linear layer that mixes the heads' outputs back into the residual stream."""
    for name in ("o_proj", "c_proj"):  # Llama family, GPT-2
        if hasattr(module, name):
            return getattr(module, name)
    parent = next(m for m in model.modules() if getattr(m, "self", None) is module)  # BERT family
    return parent.output.dense


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_is_masked(tiny_model_dir, family):
    """A padded batch gives the same logits as each example alone: the mask function is registered."""
    loaded = load_model(str(tiny_model_dir(family)), head="sequence-classification")
    with torch.no_grad():
        together = loaded.model(**_inputs(loaded, TEXTS)).logits
        alone = torch.cat([loaded.model(**_inputs(loaded, [text])).logits for text in TEXTS])
    assert torch.allclose(together, alone, atol=1e-5)


def test_observers_see_probabilities(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("llama")), head="sequence-classification")
    seen = []
    with torch.no_grad(), head_hooks(observers=[lambda layer, heads, probs: seen.append((layer, heads, probs))]):
        loaded.model(**_inputs(loaded, TEXTS))
    assert [layer for layer, _, _ in seen] == [0, 1]
    probs = seen[0][2]
    assert probs.shape[:2] == (2, 4)
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)
    assert torch.all(probs.triu(1) == 0)  # causal


def test_hooks_do_not_leak(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("bert")), head="sequence-classification")
    inputs = _inputs(loaded, TEXTS)
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with pytest.raises(RuntimeError):
            with head_hooks(gates=torch.zeros(2, 4)):
                raise RuntimeError("step failed")
        after = loaded.model(**inputs).logits
    assert torch.equal(plain, after)
