"""Structural head pruning on Transformers 5: remove heads for real by slicing the projection weights.

Transformers 5 removed `prune_heads`, so the workbench slices the weights itself. Where a layer's
heads sit in its weights is the business of the layout adapters (workbench/models/families/, one
module per layout, recognised from the attention module's projections, never from the model's name);
this module holds what is the same for every layout: original head ids, K/V groups and the policies.

Head ids are always the ORIGINAL ids. Each pruned attention module carries `wb_head_ids` (a LongTensor
of the original ids of the heads it still has, in order); the workbench attention function uses it to map
gates [layers, original heads] and observers back to original coordinates, and `pruned_heads(model)`
derives the pruned map from it, so pruning an already-pruned model accumulates. The map is also kept on
the model as `model.wb_pruned_heads`.

Grouped-query attention (query head h belongs to K/V group h // (heads / kv_heads)):

  * `gqa_policy="groups"`: only whole K/V groups go; their query rows and their k/v rows are removed.
    A request that covers part of a group raises a ModelError naming the layer and the group, unless
    `partial_groups="keep"` (round down: the partial group stays whole) or `"prune"` (round up: the whole
    group goes).
  * `gqa_policy="per_group"`: the same number of query heads goes from every remaining K/V group
    (k/v untouched, `num_key_value_groups` updated); an unbalanced request raises a ModelError.
    Removing every head of every group removes the layer's k/v too.

  Whatever the history, a layer's state is canonical: a K/V group keeps its k/v rows exactly when it
  still has a query head, and all remaining groups have the same number of query heads. That is why a
  saved pruned-head map is enough to rebuild the shapes (`load_pruned_model`).

Layers that lose ALL heads keep zero-size weights (the parameter count stays exact and the state dict
loads strictly) and still call the attention function with zero heads (so layer numbering, gates and
observers keep working). The attention block then outputs exactly what a layer whose heads are all gated
to zero outputs: the output projection's bias (BERT: `output.dense` bias, then residual + LayerNorm as
usual; GPT-2: `c_proj` bias; Llama: `o_proj` has no bias, so zero). BERT/DistilBERT/Llama forwards run
unchanged on zero-size weights (`view(..., -1, head_dim)` resolves to 0 heads); GPT-2's adapter
adjusts two things (families/gpt2_conv1d.py). Layouts whose forward cannot run with no head left
(a `view(..., -1, d)` of nothing: the original GPT, GPT-NeoX, ModernBERT, DeBERTa-v2) refuse to
lose a layer's last head (`HeadAdapter.min_heads`).

A module shared by several layers (ALBERT) is refused: its weights cannot lose a head in one layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import nn

from workbench.errors import ModelError
from workbench.models.families import SUPPORTED, HeadAdapter, config_head_dim, find_adapter

GqaPolicy = Literal["groups", "per_group"]
GQA_POLICIES = ("groups", "per_group")
PARTIAL_GROUPS = ("error", "keep", "prune")
PRUNED_ATTRIBUTE = "wb_pruned_heads"


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def prune_heads(
    model_or_loaded: object,
    heads_to_prune: Mapping[int, Iterable[int]],
    *,
    gqa_policy: GqaPolicy = "groups",
    partial_groups: Literal["error", "keep", "prune"] = "error",
) -> dict[int, list[int]]:
    """Remove the given heads (original ids, {layer: [heads]}) in place; return the full pruned map.

    Heads that are already pruned may be named again (they are ignored). `gqa_policy` and
    `partial_groups` only matter for grouped-query attention (see the module docstring).
    """
    if gqa_policy not in GQA_POLICIES:
        raise ModelError(f"unknown gqa_policy '{gqa_policy}'", hint=f"use one of: {', '.join(GQA_POLICIES)}")
    if partial_groups not in PARTIAL_GROUPS:
        raise ModelError(f"unknown partial_groups '{partial_groups}'", hint=f"use one of: {', '.join(PARTIAL_GROUPS)}")
    model, layers = _attention_layers(model_or_loaded, for_pruning=True)
    request = _normalise_map(heads_to_prune, len(layers), layers[0].num_original_heads)
    targets: dict[int, list[int]] = {}
    for index, heads in request.items():  # validate every layer before touching any weights
        targets[index] = layers[index].plan(heads, gqa_policy, partial_groups)
    for index, remaining in targets.items():
        layers[index].apply(remaining)
    return _record(model, layers)


def pruned_heads(model_or_loaded: object) -> dict[int, list[int]]:
    """{layer: [original ids of the heads removed]} (layers without pruned heads are left out)."""
    model = _unwrap(model_or_loaded)
    modules = _numbered_modules(model)
    if not modules:
        return {int(k): list(v) for k, v in (getattr(model, PRUNED_ATTRIBUTE, None) or {}).items()}
    total = _original_heads(model)
    result: dict[int, list[int]] = {}
    for module in modules:
        ids = getattr(module, "wb_head_ids", None)
        if ids is None:
            continue
        gone = sorted(set(range(total)) - set(ids.tolist()))
        if gone:
            result[int(module.wb_layer)] = gone
    return result


def present_heads(loaded: object) -> torch.Tensor:
    """[layers, original heads] bool: False where structural pruning removed the head."""
    model = _unwrap(loaded)
    present = torch.ones(model.config.num_hidden_layers, _original_heads(model), dtype=torch.bool)
    for layer, heads in pruned_heads(loaded).items():
        present[layer, heads] = False
    return present


def heads_json(heads: Mapping[int, Iterable[int]]) -> dict[str, list[int]]:
    """A {layer: [heads]} map as JSON keys and sorted lists, layers in order (for step data)."""
    return {str(layer): sorted(ids) for layer, ids in sorted(heads.items()) if ids}


def count_parameters(model_or_loaded: object) -> int:
    """All parameters of the model (tied weights counted once)."""
    model = _unwrap(model_or_loaded)
    return sum(parameter.numel() for parameter in model.parameters())


def attention_parameters(model_or_loaded: object) -> int:
    """Parameters of the attention projections (q, k, v and output, with biases) of every layer."""
    _, layers = _attention_layers(model_or_loaded)
    seen: dict[int, int] = {}
    for layer in layers:
        for parameter in layer.adapter.parameters():
            seen[id(parameter)] = parameter.numel()
    return sum(seen.values())


# ----------------------------------------------------------------------------------------------------
# Layers: original head ids, K/V groups, policies
# ----------------------------------------------------------------------------------------------------


class _Layer:
    def __init__(self, index: int, adapter: HeadAdapter, num_heads: int, num_kv_heads: int):
        self.index = index
        self.adapter = adapter
        self.num_original_heads = num_heads
        self.rep = num_heads // num_kv_heads  # query heads per K/V group, originally
        module = adapter.module
        ids = getattr(module, "wb_head_ids", None)
        self.head_ids: list[int] = ids.tolist() if ids is not None else list(range(adapter.num_heads()))
        if len(self.head_ids) != adapter.num_heads():
            raise ModelError(
                f"layer {index}: the attention module has {adapter.num_heads()} heads but records "
                f"{len(self.head_ids)} head ids; was it pruned outside the workbench?"
            )
        if adapter.num_kv_heads() != len(self.groups()):
            raise ModelError(f"layer {index}: {adapter.num_kv_heads()} K/V heads do not match its query heads' groups")

    def group(self, head: int) -> int:
        return head // self.rep

    def groups(self, heads: Iterable[int] | None = None) -> list[int]:
        return sorted({self.group(h) for h in (self.head_ids if heads is None else heads)})

    def members(self, group: int, heads: Iterable[int] | None = None) -> list[int]:
        return [h for h in (self.head_ids if heads is None else heads) if self.group(h) == group]

    def plan(self, request: list[int], policy: str, partial: str) -> list[int]:
        """The head ids that remain after applying `request` under the policy (validated)."""
        present = set(self.head_ids)
        drop = {h for h in request if h in present}
        if self.rep > 1 and drop:
            drop = self._check_gqa(drop, policy, partial)
        return [h for h in self.head_ids if h not in drop]

    def _check_gqa(self, drop: set[int], policy: str, partial: str) -> set[int]:
        where = f"layer {self.index}"
        if policy == "groups":
            for group in self.groups():
                members = self.members(group)
                asked = [h for h in members if h in drop]
                if not asked or len(asked) == len(members):
                    continue
                if partial == "keep":
                    drop -= set(asked)
                elif partial == "prune":
                    drop |= set(members)
                else:
                    raise ModelError(
                        f"{where}: gqa_policy 'groups' removes whole key/value groups, but heads {asked} are only "
                        f"part of group {group} (query heads {members})",
                        hint="prune all of the group's heads, use partial_groups: keep | prune to round, "
                        "or gqa_policy: per_group",
                    )
            return drop
        counts = {group: len([h for h in self.members(group) if h in drop]) for group in self.groups()}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"group {g}: {n}" for g, n in counts.items())
            raise ModelError(
                f"{where}: gqa_policy 'per_group' removes the same number of query heads from every key/value "
                f"group, but the request is unbalanced ({detail}; {self.rep} query heads per group originally)",
                hint="ask for the same number of heads in every group, or use gqa_policy: groups",
            )
        return drop

    def apply(self, remaining: list[int]) -> None:
        """Slice the weights so that exactly `remaining` (original ids, current order) are left."""
        keep_set = set(remaining)
        kept_groups = self.groups(remaining)
        sizes = {len(self.members(group, remaining)) for group in kept_groups}
        if len(sizes) > 1:
            raise ModelError(
                f"layer {self.index}: heads {remaining} leave key/value groups of different sizes; "
                "grouped-query attention needs the same number of query heads in every group"
            )
        unknown = keep_set - set(self.head_ids)
        if unknown:
            raise ModelError(f"layer {self.index}: heads {sorted(unknown)} are already pruned")
        if len(remaining) < self.adapter.min_heads:
            raise ModelError(
                f"layer {self.index}: {type(self.adapter.module).__name__} cannot run with no head left "
                f"(its forward views the heads as (..., -1, head_dim)), so its last head cannot be pruned",
                hint="keep at least one head per layer (prune: min_heads_per_layer: 1)",
            )
        q_keep = [i for i, h in enumerate(self.head_ids) if h in keep_set]
        kv_keep = [j for j, group in enumerate(self.groups()) if group in set(kept_groups)]
        if len(q_keep) == len(self.head_ids) and len(kv_keep) == len(self.groups()):
            self._set_ids(self.head_ids)
            return
        self.adapter.keep(q_keep, kv_keep)
        self.head_ids = [self.head_ids[i] for i in q_keep]
        self._set_ids(self.head_ids)

    def _set_ids(self, ids: list[int]) -> None:
        self.adapter.module.wb_head_ids = torch.tensor(ids, dtype=torch.long)


def _unwrap(target: object) -> nn.Module:
    """The nn.Module of a model or of a LoadedModel (a model's own `.model` is its backbone: not that)."""
    model = target if isinstance(target, nn.Module) else getattr(target, "model", None)
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a model or a loaded model, got {type(target).__name__}")
    return model


def _numbered_modules(model: nn.Module) -> list[nn.Module]:
    modules = [m for m in model.modules() if getattr(m, "wb_layer", None) is not None]
    return sorted(modules, key=lambda m: m.wb_layer)


def _original_heads(model: nn.Module) -> int:
    heads = getattr(model.config, "num_attention_heads", None)
    if not isinstance(heads, int):
        raise ModelError(f"{type(model).__name__}'s config does not give num_attention_heads")
    return heads


def _attention_layers(target: object, for_pruning: bool = False) -> tuple[nn.Module, list[_Layer]]:
    """The model and one _Layer per attention module, by layer number (numbering the modules if needed).

    `for_pruning`: refuse layouts and models whose weights cannot be sliced, saying why."""
    from workbench.models.attention import ATTENTION_NAME, number_attention_modules

    model = _unwrap(target)
    loaded_modules = None if isinstance(target, nn.Module) else getattr(target, "attention_modules", None)
    modules = list(loaded_modules or _numbered_modules(model))
    if not modules:
        pad = getattr(model.config, "pad_token_id", None) or 0
        probe = torch.full((1, 2), int(pad), dtype=torch.long, device=next(model.parameters()).device)
        if getattr(model.config, "_attn_implementation", None) == ATTENTION_NAME:
            modules = number_attention_modules(model, probe)
        else:  # a model whose heads the workbench reaches through their output projections
            from workbench.models.projection_heads import find_projection_heads, install_projection_heads

            modules = find_projection_heads(model, probe)
            if modules and len(modules) == getattr(model.config, "num_hidden_layers", None):
                install_projection_heads(model, modules)
    num_layers = getattr(model.config, "num_hidden_layers", None)
    if not modules or (isinstance(num_layers, int) and len(modules) != num_layers):
        raise ModelError(
            f"cannot reach the attention heads of {type(model).__name__} "
            f"({len(modules)} attention modules found for {num_layers} layers)",
            hint="load the model with workbench.models.loading.load_model (attn_implementation='workbench')",
        )
    if for_pruning and len({id(module) for module in modules}) < len(modules):
        raise ModelError(
            f"cannot prune heads of {type(model).__name__}: one attention module serves several layers (ALBERT's "
            "shared layers), so a head cannot be removed from one layer only",
            hint="mask the heads instead (head gates: mask_search, head_ablation)",
        )
    heads = _original_heads(model)
    config_kv = getattr(model.config, "num_key_value_heads", None) or heads
    if heads % config_kv:
        raise ModelError(f"{heads} attention heads cannot be split into {config_kv} key/value groups")
    names = {id(m): name for name, m in model.named_modules()}
    layers = []
    for index, module in enumerate(modules):
        adapter = adapter_of(model, module, names)
        if for_pruning and adapter.pruning_refusal:
            raise ModelError(f"cannot prune heads of {type(module).__name__}: {adapter.pruning_refusal}")
        layers.append(_Layer(index, adapter, heads, adapter.original_kv_heads(heads, config_kv)))
    return model, layers


def adapter_of(model: nn.Module, module: nn.Module, names: dict[int, str] | None = None) -> HeadAdapter:
    """The layout adapter of one of `model`'s attention modules (ModelError when no layout matches)."""
    names = names if names is not None else {id(m): name for name, m in model.named_modules()}
    name = names.get(id(module), "")
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else (model if name else None)
    adapter = find_adapter(module, parent, config_head_dim(model))
    if adapter is None:
        raise ModelError(
            f"cannot prune heads of {type(module).__name__}: unknown attention structure",
            hint=f"supported: {SUPPORTED}",
        )
    return adapter


def _normalise_map(heads: Mapping, num_layers: int, num_heads: int) -> dict[int, list[int]]:
    """{layer: sorted unique head ids}, keys may be strings (JSON); raises ModelError on bad ids."""
    if not isinstance(heads, Mapping):
        raise ModelError(f"heads to prune must be a mapping {{layer: [heads]}}, got {type(heads).__name__}")
    result: dict[int, list[int]] = {}
    for key, values in heads.items():
        try:
            layer = int(key)
        except (TypeError, ValueError):
            raise ModelError(f"layer '{key}' in the heads to prune is not a layer number") from None
        if not 0 <= layer < num_layers:
            raise ModelError(f"layer {layer} is out of range: the model has layers 0..{num_layers - 1}")
        if isinstance(values, torch.Tensor):
            values = values.tolist()
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ModelError(f"layer {layer}: heads must be a list of head ids, got {values!r}")
        ids = set()
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ModelError(f"layer {layer}: head id {value!r} is not an integer")
            if not 0 <= value < num_heads:
                raise ModelError(f"layer {layer}: head {value} is out of range: the layer has heads 0..{num_heads - 1}")
            ids.add(value)
        if ids:
            result[layer] = sorted(result.get(layer, []) + sorted(ids))
    return result


def _budget(amount: int | float, total: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
        raise ModelError(f"the amount of heads to prune must be a count or a fraction, got {amount!r}")
    if isinstance(amount, float):
        if amount > 1:
            raise ModelError(f"a fraction of heads to prune must be in [0, 1], got {amount}")
        return int(math.floor(amount * total + 1e-9))
    return int(amount)


def _record(model: nn.Module, layers: list[_Layer]) -> dict[int, list[int]]:
    result = {}
    for layer in layers:
        layer._set_ids(layer.head_ids)  # every attention module carries its original head ids
        gone = sorted(set(range(layer.num_original_heads)) - set(layer.head_ids))
        if gone:
            result[layer.index] = gone
    setattr(model, PRUNED_ATTRIBUTE, {k: list(v) for k, v in result.items()})
    return result
