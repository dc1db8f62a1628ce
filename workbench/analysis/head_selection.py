"""Which heads to prune next, given their importance (Michel et al.'s iterative pruning, with the
grouped-query policies of workbench/models/pruning.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from workbench.errors import ModelError
from workbench.models.pruning import GQA_POLICIES, GqaPolicy, _budget, _normalise_map


def select_heads_to_prune(
    importance: torch.Tensor,
    amount: int | float,
    *,
    num_kv_heads: int | None = None,
    gqa_policy: GqaPolicy = "groups",
    already_pruned: Mapping[int, Iterable[int]] | None = None,
    min_per_layer: int = 0,
) -> dict[int, list[int]]:
    """Pick the least important heads to prune next, as a set `prune_heads` accepts under `gqa_policy`.

    importance: [layers, heads] (original head ids; higher = more important). `amount`: an int is a
    number of heads, a float in [0, 1] a fraction of all layers * heads; either way it counts NEW heads,
    on top of `already_pruned` (which are never picked again). Never prunes more than `amount`:

      * no GQA (kv heads == heads): the `amount` least important remaining heads;
      * "groups": whole K/V groups (of their remaining heads), least total importance first, as many as
        fit in `amount` (so fewer heads than asked when `amount` is not a multiple of the group size);
      * "per_group": per layer, one "slice" = the least important remaining head of every remaining
        group; slices are taken by total importance while they fit in `amount`.

    A unit that would leave its layer with fewer than `min_per_layer` heads is skipped (Michel's
    at_least_x_heads_per_layer: the most important heads of every layer stay).

    Returns {layer: [heads]} of the new heads only, sorted (ties: lower layer, then lower head first).
    """
    scores = torch.as_tensor(importance, dtype=torch.float64).detach().cpu()
    if scores.dim() != 2:
        raise ModelError(f"importance must be [layers, heads], got shape {tuple(scores.shape)}")
    num_layers, num_heads = scores.shape
    if gqa_policy not in GQA_POLICIES:
        raise ModelError(f"unknown gqa_policy '{gqa_policy}'", hint=f"use one of: {', '.join(GQA_POLICIES)}")
    kv = num_kv_heads or num_heads
    if kv <= 0 or num_heads % kv:
        raise ModelError(f"{num_heads} heads cannot be split into {kv} key/value groups")
    rep = num_heads // kv
    budget = _budget(amount, num_layers * num_heads)
    done = _normalise_map(already_pruned or {}, num_layers, num_heads)
    remaining = [[h for h in range(num_heads) if h not in set(done.get(layer, ()))] for layer in range(num_layers)]

    # Units of removal: (score, layer, tie-break, heads). All must be taken whole.
    units: list[tuple[float, int, int, list[int]]] = []
    if rep == 1:
        for layer, heads in enumerate(remaining):
            units.extend((float(scores[layer, h]), layer, h, [h]) for h in heads)
    elif gqa_policy == "groups":
        for layer, heads in enumerate(remaining):
            for group in sorted({h // rep for h in heads}):
                members = [h for h in heads if h // rep == group]
                units.append((float(scores[layer, members].sum()), layer, group, members))
    else:  # per_group: slice k of a layer = the k-th least important remaining head of every group
        for layer, heads in enumerate(remaining):
            groups = sorted({h // rep for h in heads})
            def rank(head: int, layer: int = layer) -> tuple[float, int]:
                return float(scores[layer, head]), head

            ranked = [sorted((h for h in heads if h // rep == g), key=rank) for g in groups]
            depth = min((len(members) for members in ranked), default=0)
            for k in range(depth):
                members = sorted(members[k] for members in ranked)
                units.append((float(scores[layer, members].sum()), layer, k, members))
    units.sort(key=lambda unit: (unit[0], unit[1], unit[2]))

    chosen: dict[int, list[int]] = {}
    left = [len(heads) for heads in remaining]
    taken = 0
    for _, layer, _, members in units:
        if taken + len(members) > budget or left[layer] - len(members) < min_per_layer:
            continue
        chosen.setdefault(layer, []).extend(members)
        left[layer] -= len(members)
        taken += len(members)
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}
