"""Head importance from gate gradients (Michel, Levy, Neubig 2019).

Every head h gets a gate xi_h multiplying its attention output; I_h = E_x |dL(x)/dxi_h|.
Only the gates require gradients (parameters are frozen for the pass), so one backward per batch
yields every head's importance without computing a single weight gradient.

Granularities (REFERENCE.md):
    example  the paper's E_x |dL(x)/dxi|, exact: one gate per example [batch, layers, heads], so a
             single batched backward gives each example's own gradient
    batch    the reference script's: |dL(batch)/dxi| summed over batches (without its defect of
             never zeroing gradients between batches)
    token    Michel's code: |dL/dxi| per token, one gate per token [batch, seq, layers, heads]

The reference normalisation: divide by the number of non-pad tokens; then, per layer, divide by
the layer's L2 norm (+1e-20); then min-max over all heads to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from workbench.analysis.tasks import ScoreAccumulator, TaskData, batch_loss
from workbench.data.batching import Batch, batch_order, collate
from workbench.distributed import World, current_world
from workbench.models.attention import head_hooks
from workbench.models.loading import LoadedModel
from workbench.models.pruning import present_heads

GRANULARITIES = ("example", "batch", "token")


@dataclass
class ImportanceResult:
    raw: torch.Tensor  # [layers, heads] summed |gradient| / non-pad tokens
    importance: torch.Tensor  # [layers, heads] after the requested normalisation
    entropy: torch.Tensor | None  # [layers, heads] summed attention entropy / non-pad tokens
    tokens: int
    examples: int
    metrics: dict[str, float] = field(default_factory=dict)  # task score of the same forward passes
    seconds: float = 0.0


def head_importance(
    loaded: LoadedModel,
    task: TaskData,
    batch_size: int,
    *,
    granularity: str = "example",
    mask: torch.Tensor | None = None,
    compute_entropy: bool = False,
    normalize_by_layer: bool = True,
    normalize_global: bool = True,
    seed: int = 0,
    track: Callable[[Iterable[Batch], int], Iterable[Batch]] | None = None,
    naive: bool = False,
    micro_batch_size: int = 32,
    world: World | None = None,
) -> ImportanceResult:
    """Importance of every head on a task, optionally under a head mask [layers, heads] of 0/1.

    Granularity `batch` is the reference script's: |dL(group)/dxi| per group of `batch_size`
    consecutive examples (its SequentialSampler's boundaries), L the mean loss of the group. A group
    need not be one forward pass: its signed gradient is accumulated over length-sorted micro-batches
    of `micro_batch_size` (exact: the gradient is linear in the examples' losses), so a group of 256
    does not pay for padding every example to the group's longest one. The other granularities are
    per example, so their batches are simply length-sorted.

    `naive=True` is the plain baseline the benchmark compares against: parameters requiring
    gradients, eager attention and padding to max_length, one backward per batch.

    Data-parallel (`world`, by default this process's): every rank takes its share of the forward
    passes; per-example gradients are summed over ranks, and a `batch` group's signed gradient is
    summed over the ranks that saw its micro-batches before its absolute value is taken.
    """
    import time

    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}")
    loaded.require_heads("head importance")
    model = loaded.model
    model.eval()
    device = loaded.device
    shape = loaded.layout.shape
    base_gates = (mask if mask is not None else torch.ones(shape)).to(device=device, dtype=torch.float32)
    gradient_sum = torch.zeros(shape, dtype=torch.float64, device=device)
    entropy = EntropyAccumulator(shape, device) if compute_entropy else None
    scores = ScoreAccumulator(task)
    pad_to = task.encodings.max_length if naive else None
    world = world or current_world()
    plan = _batch_plan(task, granularity, batch_size, micro_batch_size, naive)  # [(group, indices)]
    groups = plan[-1][0] + 1 if plan else 0
    plan = world.shard(plan)
    batches: Iterable[tuple[int, Batch]] = (
        (group, collate(task.encodings, indices, device, pad_to)) for group, indices in plan
    )
    if track is not None:
        batches = track(batches, len(plan))  # type: ignore[arg-type,assignment]

    started = time.perf_counter()
    if granularity == "batch":  # signed gradient and size of every group, [groups, layers, heads] and [groups]
        group_gradients = torch.zeros((groups, *shape), dtype=torch.float64, device=device)
        group_sizes = torch.zeros(groups, dtype=torch.float64, device=device)
    with frozen_parameters(model, keep_parameters=naive), torch.enable_grad():
        for group, batch in batches:
            gates = _gates_for(granularity, base_gates, batch)  # requires grad
            observers = [entropy.observer(batch.attention_mask)] if entropy else []
            with head_hooks(gates=gates, observers=observers, eager=naive):
                loss = batch_loss(loaded, batch, task, seed)
            objective = _objective(loss, task, granularity)
            if naive:  # what a plain loop does: backward through everything, parameters included
                objective.backward()
                gradient = gates.grad
            else:  # only the path to the gates: no weight gradients are computed
                (gradient,) = torch.autograd.grad(objective, gates)
            if granularity == "batch":  # d(sum of the micro-batch's losses)/dxi; the group's mean comes last
                group_gradients[group] += gradient.double()
                group_sizes[group] += int(loss.tokens.sum()) if task.kind == "lm" else len(batch)
            else:
                gradient_sum += _absolute_per_granularity(gradient, granularity, batch).double()
            scores.add(batch, loss)
            if naive:
                model.zero_grad(set_to_none=True)
    if granularity == "batch" and groups:
        world.sum(group_gradients)
        world.sum(group_sizes)
        gradient_sum += (group_gradients / group_sizes.clamp(min=1).view(-1, 1, 1)).abs().sum(0)
    else:
        world.sum(gradient_sum)
    if entropy is not None:
        world.sum(entropy.total)
    scores.combine(world)
    seconds = time.perf_counter() - started

    tokens = task.encodings.num_tokens
    pruned = ~present_heads(loaded).to(device)
    raw = torch.where(pruned, torch.nan, (gradient_sum / tokens).float())
    return ImportanceResult(
        raw=raw.cpu(),
        importance=normalize(raw, by_layer=normalize_by_layer, globally=normalize_global).cpu(),
        entropy=(entropy.total / tokens).float().cpu() if entropy else None,
        tokens=tokens,
        examples=len(task),
        metrics=scores.metrics(),
        seconds=seconds,
    )


def normalize(importance: torch.Tensor, *, by_layer: bool = True, globally: bool = True) -> torch.Tensor:
    """Per-layer L2 normalisation (exponent 2, + 1e-20), then global min-max to [0, 1]. NaNs are skipped."""
    values = importance.clone()
    known = ~torch.isnan(values)
    if by_layer:
        norms = torch.where(known, values, 0).pow(2).sum(-1).sqrt()
        values = values / (norms.unsqueeze(-1) + 1e-20)
    if globally and known.any():
        low, high = values[known].min(), values[known].max()
        values = (values - low) / (high - low) if high > low else torch.zeros_like(values).masked_fill(~known, torch.nan)
    return values


def _gates_for(granularity: str, base: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Leaf gates of the right shape, initialised from the head mask (ones when there is none)."""
    batch_size, seq = batch.input_ids.shape
    if granularity == "batch":
        gates = base.clone()  # [layers, heads]
    elif granularity == "example":
        gates = base.expand(batch_size, *base.shape).clone()  # [batch, layers, heads]
    else:
        gates = base.expand(batch_size, seq, *base.shape).clone()  # [batch, seq, layers, heads]
    return gates.requires_grad_(True)


def _objective(loss, task: TaskData, granularity: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """What to differentiate: the sum of per-example losses (or, for LMs in a group, of token NLLs).

    With per-example (or per-token) gates, d(sum_b L_b)/d xi_b = dL_b/d xi_b exactly, because
    example b's loss does not depend on the other examples' gates. For `batch`, the micro-batch's
    sum is divided by the group's size (examples; predicted tokens for the reference GPT-2 loss)
    once the group is complete.
    """
    if granularity == "batch" and task.kind == "lm":
        return loss.outputs.sum()  # summed NLL over the micro-batch's predicted tokens
    return loss.losses.sum()


def _batch_plan(task: TaskData, granularity: str, batch_size: int, micro_batch_size: int, naive: bool) -> list[tuple[int, list[int]]]:
    """(group, example indices) of every forward pass.

    `batch`: groups of `batch_size` consecutive examples (the reference's boundaries), each cut into
    length-sorted micro-batches (the naive baseline keeps a group as one pass). Otherwise one group
    per length-sorted batch.
    """
    if granularity != "batch":
        return list(enumerate(batch_order(task.encodings.lengths, batch_size)))
    plan = []
    for group, start in enumerate(range(0, len(task), batch_size)):
        members = list(range(start, min(start + batch_size, len(task))))
        size = len(members) if naive else micro_batch_size
        lengths = [task.encodings.lengths[i] for i in members]
        plan.extend((group, [members[i] for i in micro]) for micro in batch_order(lengths, size))
    return plan


def _absolute_per_granularity(gradient: torch.Tensor, granularity: str, batch: Batch) -> torch.Tensor:
    if granularity == "batch":
        return gradient.abs()  # [layers, heads]
    if granularity == "example":
        return gradient.abs().sum(0)  # [batch, layers, heads] -> [layers, heads]
    real = batch.attention_mask.to(gradient.dtype)[:, :, None, None]  # [batch, seq, 1, 1]
    return (gradient.abs() * real).sum((0, 1))


class EntropyAccumulator:
    """Attention entropy -sum p log p (0 log 0 = 0) per query, times the query mask, summed."""

    def __init__(self, shape: tuple[int, int], device: torch.device):
        self.total = torch.zeros(shape, dtype=torch.float64, device=device)

    def observer(self, attention_mask: torch.Tensor) -> Callable[[int, torch.Tensor, torch.Tensor], None]:
        query_mask = attention_mask.to(torch.float32)[:, None, :]  # [batch, 1, q_len]

        def observe(layer: int, head_ids: torch.Tensor, probs: torch.Tensor) -> None:
            probs = probs.float()
            plogp = torch.where(probs > 0, probs * torch.log(probs), torch.zeros_like(probs))
            per_query = -plogp.sum(-1)  # [batch, heads, q_len]
            self.total[layer, head_ids.to(self.total.device)] += (per_query * query_mask).sum((0, 2)).double()

        return observe


@contextmanager
def frozen_parameters(model: torch.nn.Module, keep_parameters: bool = False) -> Iterator[None]:
    """Freeze parameters for the block (the naive baseline keeps them trainable), then restore."""
    previous = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        for parameter, _ in previous:
            parameter.requires_grad_(keep_parameters)
        yield
    finally:
        for parameter, flag in previous:
            parameter.requires_grad_(flag)


def mask_least_important(
    importance: torch.Tensor, mask: torch.Tensor, count: int, *, min_per_layer: int = 0
) -> torch.Tensor:
    """Mask `count` more heads: the least important among those still unmasked (ties by position).

    Already-masked heads count as infinitely important so they are never picked again (the
    reference's rule); NaN (pruned) heads are never picked either. `min_per_layer` protects the
    that many most important unmasked heads of every layer (Michel's at_least_x_heads_per_layer),
    so fewer than `count` heads are masked when too few are left to choose from.
    """
    scores = importance.clone().float()
    scores[(mask == 0) | torch.isnan(scores)] = float("inf")
    if min_per_layer > 0:
        for layer in range(scores.shape[0]):
            candidates = torch.nonzero(scores[layer] != float("inf")).flatten()
            protected = candidates[torch.argsort(-scores[layer, candidates], stable=True)[:min_per_layer]]
            scores[layer, protected] = float("inf")
    order = torch.argsort(scores.flatten(), stable=True)
    available = int((scores.flatten() != float("inf")).sum())
    chosen = order[: min(count, available)]
    new_mask = mask.clone().flatten()
    new_mask[chosen] = 0.0
    return new_mask.view_as(mask)


def maskable_heads(mask: torch.Tensor, present: torch.Tensor, min_per_layer: int = 0) -> int:
    """How many more heads may be masked: every unmasked present head but `min_per_layer` per layer."""
    unmasked = ((mask != 0) & present).sum(-1)  # [layers]
    return int((unmasked - min_per_layer).clamp(min=0).sum())
