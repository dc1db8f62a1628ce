"""Head importance from gate gradients: exactness against finite differences and equivalent loops."""

from __future__ import annotations

import pytest
import torch

from workbench.analysis.importance import head_importance, normalize
from workbench.analysis.tasks import TaskData, batch_loss
from workbench.data.batching import collate, encode_texts
from workbench.data.agreement import generate_agreement
from workbench.models.attention import head_hooks
from workbench.models.loading import load_model


def _task(loaded, n=12, pairs=False):
    rows = generate_agreement(n, seed=3)
    texts = [(row.sentence, row.sentence.lower()) if pairs else (row.sentence,) for row in rows]
    encodings = encode_texts(loaded.tokenizer, texts, max_length=32, token_types=loaded.uses_token_types)
    return TaskData(encodings, torch.tensor([row.label for row in rows]), "classification")


@pytest.fixture
def bert(tiny_model_dir):
    return load_model(str(tiny_model_dir("bert")), head="sequence-classification")


def test_gate_gradients_match_finite_differences(bert):
    """|dL/dxi_h| from one backward equals the central difference of the loss in every head."""
    bert.model.double()
    task = _task(bert, n=6)
    result = head_importance(bert, task, batch_size=6, granularity="batch", normalize_by_layer=False, normalize_global=False)
    gradient_abs = result.raw.double() * task.encodings.num_tokens  # one batch: |dL/dxi| itself

    batch = collate(task.encodings, list(range(6)))
    epsilon = 1e-5

    def loss_at(gates):
        with torch.no_grad(), head_hooks(gates=gates):
            return batch_loss(bert, batch, task).losses.mean().item()

    finite = torch.zeros(2, 4, dtype=torch.float64)
    for layer in range(2):
        for head in range(4):
            step = torch.zeros(2, 4, dtype=torch.float64)
            step[layer, head] = epsilon
            ones = torch.ones(2, 4, dtype=torch.float64)
            finite[layer, head] = (loss_at(ones + step) - loss_at(ones - step)) / (2 * epsilon)
    assert torch.allclose(gradient_abs, finite.abs(), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_example_granularity_equals_a_batch_size_one_loop(tiny_model_dir, family):
    loaded = load_model(str(tiny_model_dir(family)), head="sequence-classification")
    task = _task(loaded, n=10)
    exact = head_importance(loaded, task, batch_size=5, granularity="example", normalize_by_layer=False, normalize_global=False)
    loop = head_importance(loaded, task, batch_size=1, granularity="batch", normalize_by_layer=False, normalize_global=False)
    assert torch.allclose(exact.raw, loop.raw, rtol=1e-4, atol=1e-8)
    assert exact.raw.min() > 0


def test_token_granularity_is_padding_invariant_and_bounds_example(bert):
    task = _task(bert, n=8)
    options = {"normalize_by_layer": False, "normalize_global": False}
    tokens_batched = head_importance(bert, task, batch_size=8, granularity="token", **options)
    tokens_single = head_importance(bert, task, batch_size=1, granularity="token", **options)
    example = head_importance(bert, task, batch_size=8, granularity="example", **options)
    assert torch.allclose(tokens_batched.raw, tokens_single.raw, rtol=1e-4, atol=1e-8)
    # sum_t |g_t| >= |sum_t g_t|: per-token magnitudes bound the per-example one
    assert torch.all(tokens_batched.raw >= example.raw - 1e-7)


def test_fast_path_equals_naive_baseline(bert):
    """Frozen parameters, sdpa and dynamic padding change nothing but the speed."""
    task = _task(bert, n=16, pairs=True)
    fast = head_importance(bert, task, batch_size=4, granularity="batch")
    naive = head_importance(bert, task, batch_size=4, granularity="batch", naive=True)
    assert torch.allclose(fast.importance, naive.importance, atol=1e-5)
    assert all(p.requires_grad for p in bert.model.parameters())  # restored afterwards
    assert fast.importance.min() == 0 and fast.importance.max() == 1


def test_entropy_matches_a_direct_computation(bert):
    task = _task(bert, n=4)
    result = head_importance(bert, task, batch_size=4, compute_entropy=True)
    batch = collate(task.encodings, list(range(4)))
    maps = {}
    with torch.no_grad(), head_hooks(observers=[lambda layer, heads, probs: maps.__setitem__(layer, probs)]):
        bert.model(**batch.model_inputs())
    mask = batch.attention_mask.float()
    expected = torch.stack(
        [(-(p * torch.log(p.clamp(min=1e-30))).sum(-1) * mask[:, None, :]).sum((0, 2)) for p in (maps[0], maps[1])]
    ) / mask.sum()
    assert torch.allclose(result.entropy, expected, atol=1e-5)


def test_masked_heads_keep_gradients_and_normalisation_is_the_reference():
    raw = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    by_layer = raw / raw.pow(2).sum(-1, keepdim=True).sqrt()
    expected = (by_layer - by_layer.min()) / (by_layer.max() - by_layer.min())
    assert torch.allclose(normalize(raw), expected)
    with_gap = normalize(torch.tensor([[1.0, float("nan")], [2.0, 2.0]]))
    assert torch.isnan(with_gap[0, 1]) and with_gap[~torch.isnan(with_gap)].max() == 1


def test_importance_under_a_mask_uses_the_mask(bert):
    task = _task(bert, n=6)
    mask = torch.ones(2, 4)
    mask[0, :3] = 0
    masked = head_importance(bert, task, batch_size=6, mask=mask, normalize_by_layer=False, normalize_global=False)
    plain = head_importance(bert, task, batch_size=6, normalize_by_layer=False, normalize_global=False)
    assert not torch.allclose(masked.raw, plain.raw)
    assert not torch.isnan(masked.raw).any()  # masked, not pruned: gradients still exist


@pytest.mark.parametrize("head", ["sequence-classification", "causal-lm"])
def test_batch_granularity_keeps_the_reference_groups_and_micro_batches_change_nothing(tiny_model_dir, head):
    """Groups are consecutive examples (run_bertology's SequentialSampler); cutting each group into
    length-sorted micro-batches gives the gradient of one pass per group (the gradient is linear)."""
    loaded = load_model(str(tiny_model_dir("gpt2", head)), head=head)
    task = _task(loaded, n=12)
    if head == "causal-lm":
        task = TaskData(task.encodings, None, "lm")
    options = dict(granularity="batch", normalize_by_layer=False, normalize_global=False)
    micro = head_importance(loaded, task, batch_size=6, micro_batch_size=2, **options)
    whole = head_importance(loaded, task, batch_size=6, micro_batch_size=6, **options)
    assert torch.allclose(micro.raw, whole.raw, rtol=1e-5, atol=1e-9)

    # By hand: |d mean loss / dxi| of examples 0..5 plus that of 6..11.
    total = torch.zeros(2, 4, dtype=torch.float64)
    for group in (list(range(6)), list(range(6, 12))):
        batch = collate(task.encodings, group)
        gates = torch.ones(2, 4, requires_grad=True)
        with head_hooks(gates=gates):
            loss = batch_loss(loaded, batch, task)
        objective = loss.outputs.sum() / loss.tokens.sum() if head == "causal-lm" else loss.losses.mean()
        (gradient,) = torch.autograd.grad(objective, gates)
        total += gradient.abs().double()
    assert torch.allclose(micro.raw.double(), total / task.encodings.num_tokens, rtol=1e-4, atol=1e-10)
