"""The family coverage matrix: every (family, capability) of workbench/models/families_matrix.py, as declared.

Each family is a tiny random model (2 layers, 4 heads, hidden 32) saved with MiniLM's WordPiece
tokenizer and loaded by `load_model`. A capability declared ✓ is checked numerically; one declared
refused must raise the declared ModelError; a declared gap must still fail its check (so a fix shows
up here and the declaration, and README.md's model table generated from it, are updated with it).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch

from tests.conftest import HEAD_CLASSES, minilm_path
from workbench.errors import ModelError
from workbench.models import families_matrix as matrix
from workbench.models.attention import head_hooks
from workbench.models.loading import _write_labels, load_model, save_model
from workbench.models.pruning import count_parameters, prune_heads, pruned_heads

TEXTS = ["the keys to the cabinet are here , he said .", "a dog runs .", "why ?"]  # a padded batch
LABELS = torch.tensor([0, 1, 0])
# MiniLM's tokenizer has 30522 tokens; in a folder whose config is Qwen2's, Transformers 5 reads it as a
# Qwen2Tokenizer, which adds <|endoftext|>: the embeddings leave room for such additions.
VOCAB = 30528
LAYERS, HEADS = 2, 4
MHA_PRUNE = {0: [1], 1: [0, 3]}
GQA_PRUNE = {0: [0, 1], 1: [2, 3]}  # whole K/V groups (2 query heads per group)
TOLERANCE = 1e-4  # masked vs pruned outputs


class _Built:
    """One family's saved folder and its models, built once per test module."""

    def __init__(self, entry: matrix.Family, folder):
        self.entry = entry
        self.folder = folder
        self._loaded = None
        self._eager = None

    def loaded(self):
        if self._loaded is None:
            try:
                self._loaded = load_model(str(self.folder), head=self.entry.head)
            except ModelError as error:
                self._loaded = error
        if isinstance(self._loaded, ModelError):
            raise ModelError(str(self._loaded))
        return self._loaded

    def copy(self):
        original = self.loaded()
        return copy.deepcopy(original, {id(original.tokenizer): original.tokenizer})

    def eager(self):
        """The same weights loaded by Transformers alone, with its own eager attention."""
        if self._eager is None:
            import transformers

            model_class = getattr(transformers, HEAD_CLASSES[self.entry.head])
            self._eager = model_class.from_pretrained(self.folder, attn_implementation="eager").eval()
        return self._eager


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    made: dict[str, _Built] = {}

    def get(entry: matrix.Family) -> _Built:
        if entry.key not in made:
            torch.manual_seed(0)
            model_class = getattr(transformers, HEAD_CLASSES[entry.head])
            model = model_class.from_config(entry.config(VOCAB))
            folder = tmp_path_factory.mktemp(entry.key)
            model.save_pretrained(folder)
            _write_labels(folder / "config.json", model.config)  # as save_model does (BART's default is 3)
            tokenizer.save_pretrained(folder)
            made[entry.key] = _Built(entry, folder)
        return made[entry.key]

    return get


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _inputs(loaded, texts=TEXTS):
    batch = loaded.tokenizer(list(texts), padding=True, return_tensors="pt", return_token_type_ids=False)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _flat(output, attention_mask) -> torch.Tensor:
    """Logits and the last hidden state at the real tokens, as one vector."""
    parts = [output.logits.flatten()]
    hidden = getattr(output, "hidden_states", None)
    if hidden:
        parts.append(hidden[-1][attention_mask.bool()].flatten())
    return torch.cat([part.double() for part in parts])


def _outputs(model, inputs, **hooks) -> torch.Tensor:
    with torch.no_grad(), head_hooks(**hooks):
        return _flat(model(**inputs, output_hidden_states=True), inputs["attention_mask"])


def _mask(heads: dict[int, list[int]]) -> torch.Tensor:
    gates = torch.ones(LAYERS, HEADS)
    for layer, ids in heads.items():
        gates[layer, ids] = 0.0
    return gates


def _output_projection(model, module):
    """The layer that mixes the heads' outputs back into the residual stream, and its kind."""
    for name in ("o_proj", "out_proj", "c_proj", "dense", "out_lin", "Wo", "o"):
        projection = getattr(module, name, None)
        if isinstance(projection, torch.nn.Module) and hasattr(projection, "weight"):
            return projection
    parent = next(m for m in model.modules() if getattr(m, "self", None) is module)  # BERT family
    return parent.output.dense


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    difference = (actual - expected).abs().max().item()
    assert difference <= atol, f"{what}: max difference {difference:.3g} > {atol:g}"


# ----------------------------------------------------------------------------------------------------
# the checks: each raises AssertionError when the numbers are wrong, ModelError when refused
# ----------------------------------------------------------------------------------------------------


def check_outputs(built: _Built) -> None:
    loaded = built.loaded()
    inputs = _inputs(loaded)
    reference = built.eager()
    with torch.no_grad():
        expected = _flat(reference(**inputs, output_hidden_states=True), inputs["attention_mask"])
    _close(_outputs(loaded.model, inputs), expected, 1e-5, "workbench-loaded vs Transformers' eager outputs")


def check_heads(built: _Built) -> None:
    loaded = built.loaded()
    loaded.require_heads("the family matrix")
    assert loaded.heads_reachable and len(loaded.attention_modules) == LAYERS
    for layer, module in enumerate(loaded.attention_modules):  # a shared module (ALBERT) serves several layers
        assert layer in getattr(module, "wb_shared_layers", [module.wb_layer])


def check_gates_ones(built: _Built) -> None:
    loaded = built.loaded()
    loaded.require_heads("gates")
    inputs = _inputs(loaded)
    plain = _outputs(loaded.model, inputs)
    gated = _outputs(loaded.model, inputs, gates=torch.ones(LAYERS, HEADS))
    assert torch.equal(plain, gated), "gates of ones changed the outputs"


def check_zero_gate(built: _Built) -> None:
    loaded = built.loaded()
    loaded.require_heads("gates")
    inputs = _inputs(loaded)
    module = loaded.attention_modules[1]
    gates = torch.ones(LAYERS, HEADS)
    gates[getattr(module, "wb_shared_layers", [1]), 2] = 0.0  # zeroing a shared module's weights hits all its layers
    gated = _outputs(loaded.model, inputs, gates=gates)
    plain = _outputs(loaded.model, inputs)
    projection = _output_projection(loaded.model, module)
    weight = projection.weight
    conv1d = type(projection).__name__.endswith("Conv1D")  # GPT-2: weight [in, out]
    width = weight.shape[0] if conv1d else weight.shape[1]
    head_dim = width // HEADS
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            if conv1d:
                weight[2 * head_dim : 3 * head_dim, :] = 0
            else:
                weight[:, 2 * head_dim : 3 * head_dim] = 0
        by_hand = _outputs(loaded.model, inputs)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    _close(gated, by_hand, 1e-6, "zero gate vs that head's output-projection columns zeroed")
    assert (gated - plain).abs().max().item() > 1e-6, "the head did not matter at all"


def check_importance(built: _Built) -> None:
    loaded = built.loaded()
    loaded.require_heads("importance")
    inputs = _inputs(loaded)
    model = copy.deepcopy(loaded.model).to(torch.float64)
    if getattr(model.config, "_experts_implementation", None) not in (None, "eager"):
        model.set_experts_implementation("eager")  # the same sums; grouped_mm has no float64 kernel
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    def loss(gates: torch.Tensor) -> torch.Tensor:
        with head_hooks(gates=gates):
            logits = model(**inputs).logits.double()
        if logits.dim() == 2:  # a classification head
            return torch.nn.functional.cross_entropy(logits, LABELS)
        targets = inputs["input_ids"][:, 1:].masked_fill(inputs["attention_mask"][:, 1:] == 0, -100)
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten())  # next tokens

    gates = torch.ones(LAYERS, HEADS, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(loss(gates), gates)
    # Float64 throughout, except where a family computes in float32 whatever its dtype (RMSNorm, rotary
    # tables): that noise (~1e-8 of the loss) divided by the step must stay below the tolerance, so the
    # steps are large and Richardson's extrapolation of two central differences removes their O(eps^2) error.
    def central(layer: int, head: int, eps: float) -> float:
        up, down = torch.ones(LAYERS, HEADS, dtype=torch.float64), torch.ones(LAYERS, HEADS, dtype=torch.float64)
        up[layer, head] += eps
        down[layer, head] -= eps
        return float((loss(up) - loss(down)) / (2 * eps))

    finite = torch.zeros(LAYERS, HEADS, dtype=torch.float64)
    with torch.no_grad():
        for layer in range(LAYERS):
            for head in range(HEADS):
                finite[layer, head] = (4 * central(layer, head, 1e-2) - central(layer, head, 2e-2)) / 3
    scale = gradient.abs().max().item()
    assert scale > 0, "every gate gradient is zero"
    _close(gradient, finite, 1e-3 * scale, f"gate gradient (largest {scale:.3g}) vs finite differences")


def check_observed(built: _Built) -> None:
    loaded = built.loaded()
    loaded.require_heads("attention maps")
    inputs = _inputs(loaded)
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def observe(layer, head_ids, probs):
        seen[layer] = (head_ids, probs)

    observed = _outputs(loaded.model, inputs, observers=[observe])
    _close(observed, _outputs(loaded.model, inputs), 1e-5, "eager path vs sdpa path outputs")
    with torch.no_grad():
        reference = built.eager()(**inputs, output_attentions=True, output_hidden_states=True)
    _close(observed, _flat(reference, inputs["attention_mask"]), 1e-5, "eager path vs Transformers' eager outputs")
    real = inputs["attention_mask"].bool()
    assert sorted(seen) == list(range(LAYERS))
    for layer in range(LAYERS):
        head_ids, probs = seen[layer]
        assert head_ids.tolist() == list(range(HEADS))
        expected = reference.attentions[layer]
        assert probs.shape == expected.shape, (probs.shape, expected.shape)
        for row in range(real.shape[0]):  # the real queries of every example (all keys)
            _close(probs[row][:, real[row]].double(), expected[row][:, real[row]].double(), 1e-6, f"layer {layer} attention")


def check_stats_padding(built: _Built) -> None:
    from workbench.analysis.attention_stats import HeadStatistics

    loaded = built.loaded()
    loaded.require_heads("attention statistics")
    tokenizer = loaded.tokenizer
    punctuation = set(tokenizer.convert_tokens_to_ids([".", ","]))

    def statistics(batches) -> dict[str, torch.Tensor]:
        result = HeadStatistics(LAYERS, HEADS)
        for texts in batches:
            inputs = _inputs(loaded, texts)
            ids = inputs["input_ids"]
            separators = ids == tokenizer.sep_token_id
            punct = torch.isin(ids, torch.tensor(sorted(punctuation)))
            result.set_batch(inputs["attention_mask"], separators, punct)
            _outputs(loaded.model, inputs, observers=[result.observe])
        return result.result()

    together = statistics([TEXTS])
    alone = statistics([[text] for text in TEXTS])
    for name, values in together.items():
        torch.testing.assert_close(values, alone[name], atol=1e-6, rtol=1e-5, equal_nan=True, msg=name)


def _prune_map(entry: matrix.Family) -> dict[int, list[int]]:
    return GQA_PRUNE if entry.gqa else MHA_PRUNE


def check_pruning(built: _Built) -> None:
    loaded = built.copy()
    loaded.require_heads("pruning")
    inputs = _inputs(loaded)
    heads = _prune_map(built.entry)
    plain, masked = _outputs(loaded.model, inputs), _outputs(loaded.model, inputs, gates=_mask(heads))
    before = count_parameters(loaded)
    assert prune_heads(loaded, heads, gqa_policy="groups") == heads == pruned_heads(loaded)
    pruned = _outputs(loaded.model, inputs)
    _close(pruned, masked, TOLERANCE, "pruned vs masked outputs")
    assert (pruned - plain).abs().max().item() > TOLERANCE, "the pruned heads did not matter"
    assert count_parameters(loaded) < before
    for layer, module in enumerate(loaded.attention_modules):
        assert module.wb_head_ids.tolist() == [h for h in range(HEADS) if h not in heads.get(layer, [])]


def check_save_reload(built: _Built, tmp_path) -> None:
    loaded = built.copy()
    expected_map: dict[int, list[int]] = {}
    if isinstance(built.entry.expected()["pruning"], matrix.Supported):
        expected_map = prune_heads(loaded, _prune_map(built.entry), gqa_policy="groups")
    inputs = _inputs(loaded)
    expected = _outputs(loaded.model, inputs)
    save_model(loaded, tmp_path / "saved")
    again = load_model(str(tmp_path / "saved"), head=built.entry.head)
    assert again.heads_reachable == loaded.heads_reachable
    if again.heads_reachable:
        assert pruned_heads(again) == expected_map
    shapes = {name: tuple(value.shape) for name, value in loaded.model.state_dict().items()}
    assert {name: tuple(value.shape) for name, value in again.model.state_dict().items()} == shapes
    _close(_outputs(again.model, _inputs(again)), expected, 1e-6, "reloaded vs saved outputs")


def check_gqa(built: _Built) -> None:
    loaded = built.copy()
    loaded.require_heads("grouped-query pruning")
    layout = loaded.layout
    assert layout.num_kv_heads < layout.num_heads, "the family's tiny config has no grouped-query attention"
    inputs = _inputs(loaded)

    # per_group: one query head from every K/V group; the K/V projections keep all their rows
    heads = {0: [1, 3], 1: [0, 2]}
    masked = _outputs(loaded.model, inputs, gates=_mask(heads))
    prune_heads(loaded, heads, gqa_policy="per_group")
    _close(_outputs(loaded.model, inputs), masked, TOLERANCE, "per_group pruned vs masked outputs")

    # groups: part of a group is refused, and rounded up to the whole group with partial_groups: prune
    other = built.copy()
    with pytest.raises(ModelError, match="part of group"):
        prune_heads(other, {0: [0]}, gqa_policy="groups")
    masked = _outputs(other.model, inputs, gates=_mask({0: [0, 1]}))
    assert prune_heads(other, {0: [0]}, gqa_policy="groups", partial_groups="prune") == {0: [0, 1]}
    _close(_outputs(other.model, inputs), masked, TOLERANCE, "whole-group pruned vs masked outputs")


CHECKS = {
    "outputs": check_outputs,
    "heads": check_heads,
    "gates_ones": check_gates_ones,
    "zero_gate": check_zero_gate,
    "importance": check_importance,
    "observed": check_observed,
    "stats_padding": check_stats_padding,
    "pruning": check_pruning,
    "save_reload": check_save_reload,
    "gqa": check_gqa,
}


# ----------------------------------------------------------------------------------------------------
# the matrix
# ----------------------------------------------------------------------------------------------------


def test_the_matrix_covers_enough_families():
    assert len(matrix.FAMILIES) >= 20
    assert len({entry.key for entry in matrix.FAMILIES}) == len(matrix.FAMILIES)
    assert set(CHECKS) == set(matrix.CAPABILITY_KEYS)
    for entry in matrix.FAMILIES:
        assert set(entry.expected()) == set(matrix.CAPABILITY_KEYS)
        assert set(entry.gaps) <= set(matrix.CAPABILITY_KEYS), entry.name


CASES = [
    pytest.param(entry, capability, id=f"{entry.key}-{capability}")
    for entry in matrix.FAMILIES
    for capability in matrix.CAPABILITY_KEYS
]


@pytest.mark.parametrize(("entry", "capability"), CASES)
def test_capability_is_as_declared(built, entry, capability, tmp_path):
    expected = entry.expected()[capability]
    check = CHECKS[capability]
    family = built(entry)

    def run() -> None:
        if capability == "save_reload":
            check(family, tmp_path)
        else:
            check(family)

    if isinstance(expected, matrix.Supported):
        run()
    elif isinstance(expected, matrix.Refused):
        with pytest.raises(ModelError) as refusal:
            run()
        assert re.search(expected.error, str(refusal.value)), f"refused, but not as declared: {refusal.value}"
    elif isinstance(expected, matrix.Gap):
        try:
            run()
        except AssertionError:
            return
        pytest.fail(f"{entry.name} {capability} now passes: declare it ✓ in workbench/models/families_matrix.py")
    else:  # not applicable: the family's tiny model indeed has no grouped-query attention
        assert capability == "gqa" and not entry.gqa
        layout = family.loaded().layout
        assert layout.num_kv_heads == layout.num_heads
