"""The eager path of the workbench attention reproduces each family's own eager attention exactly.

For tiny random models of every family whose attention has something of its own -- Gemma-2 (logit
softcapping, sliding windows, query_pre_attn_scalar), Mistral and Qwen2 (sliding windows), gpt-oss
(attention sinks, sliding windows), Llama (plain, grouped-query), GPT-2, BERT -- the probabilities the
observers receive equal `output_attentions=True` under `attn_implementation="eager"`, the model's
outputs with observers attached (and without: sdpa, or eager where sdpa cannot) equal the eager
model's, and padding changes nothing for the real tokens. Sequences are longer than the windows.
Attention that cannot be reproduced (sparse indexers) is refused, naming the feature; ALiBi families
(BLOOM) do not dispatch through the attention interface and head steps refuse them.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from workbench.errors import ModelError
from workbench.models.attention import (
    head_hooks,
    number_attention_modules,
    register_workbench_attention,
    workbench_attention,
)

VOCAB = 99
WINDOW = 4
SEQ = 10  # longer than the window, so the window bites
SMALL = {
    "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
}


def _config(family: str):
    if family == "bert":
        return transformers.BertConfig(**SMALL)
    if family == "gpt2":
        return transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    if family == "llama":
        return transformers.LlamaConfig(**SMALL, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    if family == "mistral":
        return transformers.MistralConfig(
            **SMALL, num_key_value_heads=2, max_position_embeddings=64, sliding_window=WINDOW, pad_token_id=0
        )
    if family == "qwen2":  # layer 0 full attention, layer 1 a sliding window
        return transformers.Qwen2Config(
            **SMALL, num_key_value_heads=2, max_position_embeddings=64, use_sliding_window=True,
            sliding_window=WINDOW, max_window_layers=1, pad_token_id=0,
        )
    if family == "gemma2":  # layers alternate sliding / full; softcap small enough to bite
        return transformers.Gemma2Config(
            **SMALL, num_key_value_heads=2, head_dim=8, max_position_embeddings=64, sliding_window=WINDOW,
            attn_logit_softcapping=2.0, query_pre_attn_scalar=8, pad_token_id=0,
        )
    if family == "gpt_oss":
        if not hasattr(transformers, "GptOssConfig"):
            pytest.skip("this transformers has no gpt-oss")
        return transformers.GptOssConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, num_local_experts=2, num_experts_per_tok=1,
            max_position_embeddings=64, sliding_window=WINDOW, pad_token_id=0,
        )
    raise ValueError(family)


FAMILIES = ("bert", "gpt2", "llama", "mistral", "qwen2", "gemma2", "gpt_oss")
SLIDING_LAYERS = {"mistral": (0, 1), "qwen2": (1,), "gemma2": (0,), "gpt_oss": (0,)}


def _sharpen(model: torch.nn.Module) -> None:
    """Random tiny weights attend almost uniformly; larger query/key weights (and sinks) make every
    feature change the probabilities visibly."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            leaf = name.rsplit(".", 2)[-2] if name.count(".") else name
            if leaf in ("q_proj", "k_proj", "query", "key", "c_attn") and name.endswith("weight"):
                parameter.mul_(12.0)
            if name.endswith("sinks"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2)


_MODELS: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}


def _models(family: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the family's own eager model, the same weights under the workbench attention)."""
    if family not in _MODELS:
        register_workbench_attention()
        torch.manual_seed(0)  # each model its own config: from_config sets the implementation on it
        eager = transformers.AutoModel.from_config(_config(family), attn_implementation="eager")
        _sharpen(eager)
        ours = transformers.AutoModel.from_config(_config(family), attn_implementation="workbench")
        assert eager.config._attn_implementation == "eager"
        ours.load_state_dict(eager.state_dict())
        eager.eval()
        ours.eval()
        number_attention_modules(ours, torch.tensor([[3, 4]]))
        _MODELS[family] = eager, ours
    return _MODELS[family]


TOKENS = torch.randint(3, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(2))


def _batch(lengths=(SEQ, SEQ - 3), rows=(0, 1)) -> dict[str, torch.Tensor]:
    """Right-padded token ids (pad 0) of TOKENS' `rows`, cut to `lengths`, and their attention mask."""
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for at, (row, length) in enumerate(zip(rows, lengths)):
        ids[at, :length] = TOKENS[row, :length]
        mask[at, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _observe(model: torch.nn.Module, inputs: dict) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    seen: dict[int, torch.Tensor] = {}

    def keep(layer, head_ids, probs):
        assert torch.equal(head_ids, torch.arange(probs.shape[1]))
        seen[layer] = probs.clone()

    with torch.no_grad(), head_hooks(observers=[keep]):
        hidden = model(**inputs).last_hidden_state
    return hidden, seen


@pytest.mark.parametrize("family", FAMILIES)
def test_observed_probabilities_are_the_eager_attentions(family):
    eager, ours = _models(family)
    inputs = _batch()
    with torch.no_grad():
        reference = eager(**inputs, output_attentions=True)
        plain = ours(**inputs).last_hidden_state  # no hooks: sdpa, or eager where sdpa cannot (softcap, sinks)
    hidden, seen = _observe(ours, inputs)
    assert sorted(seen) == list(range(len(reference.attentions)))
    for layer, expected in enumerate(reference.attentions):
        assert seen[layer].shape == expected.shape
        torch.testing.assert_close(seen[layer], expected, atol=1e-6, rtol=0, msg=f"{family} layer {layer}")
    torch.testing.assert_close(hidden, reference.last_hidden_state, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(plain, reference.last_hidden_state, atol=1e-5, rtol=1e-5)
    # The attention is not near uniform: the comparison above is one that features could fail.
    assert max(float(probs.max()) for probs in seen.values()) > 0.5


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_changes_nothing_for_the_real_tokens(family):
    _, ours = _models(family)
    short = SEQ - 3
    padded_hidden, padded = _observe(ours, _batch((SEQ, short)))
    alone_hidden, alone = _observe(ours, _batch((short,), rows=(1,)))
    for layer, probs in padded.items():
        torch.testing.assert_close(probs[1:, :, :short, :short], alone[layer], atol=1e-6, rtol=0)
        assert float(probs[1, :, :short, short:].abs().max()) == 0.0  # no weight on padding
    torch.testing.assert_close(padded_hidden[1:, :short], alone_hidden, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", sorted(SLIDING_LAYERS))
def test_sliding_windows_hide_the_keys_outside_the_window(family):
    _, ours = _models(family)
    _, seen = _observe(ours, _batch((SEQ,)))
    query = torch.arange(SEQ)[:, None]
    key = torch.arange(SEQ)[None, :]
    outside = key <= query - WINDOW  # what transformers' sliding_window_overlay hides
    for layer, probs in seen.items():
        if layer in SLIDING_LAYERS[family]:
            assert float(probs[..., outside].abs().max()) == 0.0
        else:
            assert float(probs[..., outside].max()) > 0.0  # a full-attention layer sees them


def test_gemma2_softcap_is_applied():
    _, ours = _models("gemma2")
    inputs = _batch((SEQ,))
    _, capped = _observe(ours, inputs)
    modules = [m for m in ours.modules() if hasattr(m, "attn_logit_softcapping")]
    try:
        for module in modules:
            module.attn_logit_softcapping = None
        _, uncapped = _observe(ours, inputs)
    finally:
        for module in modules:
            module.attn_logit_softcapping = 2.0
    assert not torch.allclose(capped[0], uncapped[0], atol=1e-3)


def test_gpt_oss_sinks_take_their_share():
    """Under eager, a query's weights over the keys sum to less than one: the sink took the rest."""
    _, ours = _models("gpt_oss")
    _, seen = _observe(ours, _batch((SEQ,)))
    for probs in seen.values():
        totals = probs.sum(-1)  # [batch, heads, q_len]
        assert float(totals.max()) < 1.0 and float(totals.mean()) < 0.99


def test_gemma2_default_path_no_longer_crashes_on_softcap():
    """sdpa refuses softcapping: without observers the workbench attention goes eager, and gates still work."""
    eager, ours = _models("gemma2")
    inputs = _batch()
    gates = torch.ones(2, 4)
    gates[1, 3] = 0.0
    with torch.no_grad():
        reference = eager(**inputs).last_hidden_state
        plain = ours(**inputs).last_hidden_state
        with head_hooks(gates=gates):
            gated = ours(**inputs).last_hidden_state
    torch.testing.assert_close(plain, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(gated, plain, atol=1e-4)


def test_sparse_indexer_attention_is_refused_naming_the_feature():
    module = torch.nn.Module()
    module.layer_idx = 0
    query = torch.zeros(1, 2, 3, 4)
    key = value = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ModelError, match="indices"):
        workbench_attention(module, query, key, value, None, indices=torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ModelError, match="block_indices"):
        workbench_attention(module, query, key, value, None, block_indices=torch.zeros(1, dtype=torch.long))


def test_pruned_heads_take_their_own_sinks():
    """A layer left with heads 1 and 3 of 4 uses sinks 1 and 3."""
    torch.manual_seed(0)
    module = torch.nn.Module()
    module.layer_idx = 0
    module.is_causal = True
    module.wb_head_ids = torch.tensor([1, 3])
    query, key, value = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    sinks = torch.tensor([5.0, -1.0, 7.0, 0.5])
    seen = {}
    with head_hooks(observers=[lambda layer, heads, probs: seen.update(probs=probs)]):
        workbench_attention(module, query, key, value, None, s_aux=sinks)
    full_query = torch.zeros(1, 4, 5, 4)
    full_query[:, [1, 3]] = query
    full_key = torch.zeros(1, 4, 5, 4)
    full_key[:, [1, 3]] = key
    module_full = torch.nn.Module()
    module_full.layer_idx = 0
    module_full.is_causal = True
    with head_hooks(observers=[lambda layer, heads, probs: seen.update(full=probs)]):
        workbench_attention(module_full, full_query, full_key, torch.zeros(1, 4, 5, 4), None, s_aux=sinks)
    torch.testing.assert_close(seen["probs"], seen["full"][:, [1, 3]])


def test_alibi_families_get_heads_through_the_output_projection_but_no_pruning(tmp_path):
    """BLOOM computes ALiBi attention inline, never through the attention interface: its heads are reached
    through the output projection (its own eager attention, so ALiBi is exact); pruning would misalign the
    slopes the model builds for its full number of heads, so it is refused."""
    from tests.conftest import minilm_path
    from workbench.models.loading import load_model
    from workbench.models.pruning import prune_heads

    torch.manual_seed(0)
    model = transformers.BloomModel(transformers.BloomConfig(vocab_size=30522, hidden_size=32, n_layer=2, n_head=4))
    model.save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), head="base")
    assert loaded.heads_reachable and loaded.heads_via == "output projection"
    loaded.require_heads("attention statistics")
    with pytest.raises(ModelError, match="ALiBi biases the model builds for its full number of heads"):
        prune_heads(loaded, {0: [1]})


def test_float64_gate_gradients_are_finite_when_a_window_holds_only_padding():
    """A padded query whose window holds only padding attends to nothing; in float64 (finite-difference
    checks) its softmax must not turn the mask's minimum into -inf and NaN every gate gradient."""
    import copy

    _, ours = _models("gemma2")
    model = copy.deepcopy(ours).to(torch.float64)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    inputs = _batch((SEQ, 3))  # example 2: its pads 7..9 see only pads within the window of 4
    gates = torch.ones(2, 4, dtype=torch.float64, requires_grad=True)
    with head_hooks(gates=gates):
        hidden = model(**inputs).last_hidden_state
    loss = hidden[0].sum() + hidden[1, :3].sum()
    (gradient,) = torch.autograd.grad(loss, gates)
    assert torch.isfinite(gradient).all() and gradient.abs().max() > 0
