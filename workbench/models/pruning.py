"""Structural head pruning on Transformers 5: remove heads for real by slicing the projection weights.

Transformers 5 removed `prune_heads`, so the workbench slices the weights itself, per family:

  * BERT / RoBERTa / ELECTRA / XLM-R (`attention.self.query/key/value` rows, `attention.output.dense`
    columns); DistilBERT (`q_lin/k_lin/v_lin` rows, `out_lin` columns);
  * GPT-2 (fused `c_attn` Conv1D: the same head columns from each of its q | k | v blocks; `c_proj` rows);
  * Llama / Qwen2 / Mistral (`q_proj` rows, `o_proj` columns; `k_proj/v_proj` rows of whole K/V groups).

The family is recognised from the attention modules' projections, never from the model's name.

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
unchanged on zero-size weights (`view(..., -1, head_dim)` resolves to 0 heads); GPT-2 needs two
adjustments: `split_size` becomes `[0, 0, 0]` (an int 0 would split the empty fused output into one
piece, not three) and `c_proj` becomes a `WidthSafeConv1D` (Conv1D's `view(-1, 0)` is ambiguous).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from workbench.errors import ModelError

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
    model, layers = _attention_layers(model_or_loaded)
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


def load_pruned_model(
    folder: str | Path,
    model_class: type,
    pruned: Mapping[int | str, Iterable[int]],
    attn_implementation: str,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Rebuild a pruned model saved by `save_model(..., extra={"pruned_heads": ...})`.

    Builds the architecture from config.json, prunes it to the saved shapes (the saved map fully
    determines them, see the module docstring), then loads the safetensors weights strictly (only
    weights tied to loaded ones may be absent from the files).
    """
    import transformers

    from workbench.models.attention import ATTENTION_NAME, register_workbench_attention
    from workbench.models.loading import WORKBENCH_CONFIG_KEY

    folder = Path(folder)
    if attn_implementation == ATTENTION_NAME:
        register_workbench_attention()
    config = transformers.AutoConfig.from_pretrained(folder)
    if hasattr(config, WORKBENCH_CONFIG_KEY):
        delattr(config, WORKBENCH_CONFIG_KEY)
    model = model_class.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    model.eval()
    model, layers = _attention_layers(model)
    saved = _normalise_map(pruned, len(layers), layers[0].num_original_heads)
    for index, heads in saved.items():
        layer = layers[index]
        layer.apply([h for h in layer.head_ids if h not in set(heads)])
    _record(model, layers)
    _load_weights_strictly(model, folder)
    return model


class WidthSafeConv1D(Conv1D):
    """A GPT-2 Conv1D that accepts inputs of width 0 (same parameters, same state dict).

    `Conv1D.forward` flattens with `view(-1, width)`, which is ambiguous for width 0; with no input
    features the output is exactly the bias.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = math.prod(x.shape[:-1])
        flat = torch.addmm(self.bias, x.reshape(rows, x.shape[-1]), self.weight)
        return flat.view(*x.shape[:-1], self.weight.shape[1])


# ----------------------------------------------------------------------------------------------------
# Adapters: one per family, each knows which weights hold a head
# ----------------------------------------------------------------------------------------------------


def _slice_parameter(owner: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    old = getattr(owner, name)
    if old is None:
        return
    new = old.detach().index_select(dim, index.to(old.device)).clone()
    setattr(owner, name, nn.Parameter(new, requires_grad=old.requires_grad))


def _slice_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """Keep rows (dim 0, outputs) or columns (dim 1, inputs) `index` of a Linear, in place, same dtype."""
    _slice_parameter(layer, "weight", index, dim)
    if dim == 0:
        _slice_parameter(layer, "bias", index, 0)
    layer.out_features, layer.in_features = layer.weight.shape


def _slice_conv1d(layer: nn.Module, index: torch.Tensor, dim: int) -> None:
    """Keep inputs (dim 0) or outputs (dim 1) `index` of a GPT-2 Conv1D (weight [in, out]), in place."""
    _slice_parameter(layer, "weight", index, dim)
    if dim == 1:
        _slice_parameter(layer, "bias", index, 0)
    layer.nx, layer.nf = layer.weight.shape


def _head_rows(positions: list[int], head_dim: int) -> torch.Tensor:
    """Feature indices of the heads at `positions` (current positions, not original ids)."""
    if not positions:
        return torch.zeros(0, dtype=torch.long)
    starts = torch.tensor(positions, dtype=torch.long)[:, None] * head_dim
    return (starts + torch.arange(head_dim)[None, :]).reshape(-1)


def _set_if_present(module: nn.Module, names: Iterable[str], value: int) -> None:
    for name in names:
        if isinstance(getattr(module, name, None), int):
            setattr(module, name, value)


class _Adapter:
    family = ""

    def __init__(self, module: nn.Module, head_dim: int):
        self.module = module
        self.head_dim = head_dim

    def num_heads(self) -> int:
        raise NotImplementedError

    def num_kv_heads(self) -> int:
        return self.num_heads()

    def keep(self, q_keep: list[int], kv_keep: list[int]) -> None:
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError


class _BertAdapter(_Adapter):
    """`BertSelfAttention`-style: query/key/value Linear in the module, output dense in its parent."""

    family = "bert"

    def __init__(self, module: nn.Module, output_dense: nn.Linear):
        super().__init__(module, int(module.attention_head_size))
        self.dense = output_dense

    def num_heads(self) -> int:
        return self.module.query.out_features // self.head_dim

    def keep(self, q_keep: list[int], kv_keep: list[int]) -> None:
        rows = _head_rows(q_keep, self.head_dim)
        for projection in (self.module.query, self.module.key, self.module.value):
            _slice_linear(projection, rows, 0)
        _slice_linear(self.dense, rows, 1)
        _set_if_present(self.module, ("num_attention_heads",), len(q_keep))
        _set_if_present(self.module, ("all_head_size",), len(q_keep) * self.head_dim)

    def parameters(self) -> list[nn.Parameter]:
        modules = (self.module.query, self.module.key, self.module.value, self.dense)
        return [p for m in modules for p in (m.weight, m.bias) if p is not None]


class _Gpt2Adapter(_Adapter):
    """GPT-2: fused c_attn Conv1D (weight [in, 3 * heads * head_dim], blocks q | k | v), c_proj Conv1D."""

    family = "gpt2"

    def __init__(self, module: nn.Module):
        super().__init__(module, int(module.head_dim))

    def num_heads(self) -> int:
        return self.module.c_proj.weight.shape[0] // self.head_dim

    def keep(self, q_keep: list[int], kv_keep: list[int]) -> None:
        width = self.num_heads() * self.head_dim  # one block of the fused q | k | v output
        rows = _head_rows(q_keep, self.head_dim)
        _slice_conv1d(self.module.c_attn, torch.cat([rows + block * width for block in range(3)]), 1)
        _slice_conv1d(self.module.c_proj, rows, 0)
        kept = len(q_keep) * self.head_dim
        # An int 0 would split the empty fused output into ONE piece; a list gives three empty ones.
        self.module.split_size = kept if kept else [0, 0, 0]
        _set_if_present(self.module, ("num_heads",), len(q_keep))
        if not kept and type(self.module.c_proj) is Conv1D:
            self.module.c_proj.__class__ = WidthSafeConv1D

    def parameters(self) -> list[nn.Parameter]:
        modules = (self.module.c_attn, self.module.c_proj)
        return [p for m in modules for p in (m.weight, m.bias) if p is not None]


class _SeparateProjectionsAdapter(_Adapter):
    """q/k/v/o Linear layers in the module: Llama, Qwen2, Mistral, Gemma, OLMo, StableLM (with GQA);
    GPT-J, OPT (`out_proj`); Phi (`dense`); DistilBERT (q_lin ...)."""

    family = "llama"
    NAMES = (
        ("q_proj", "k_proj", "v_proj", "o_proj"),
        ("q_proj", "k_proj", "v_proj", "out_proj"),
        ("q_proj", "k_proj", "v_proj", "dense"),
        ("q_lin", "k_lin", "v_lin", "out_lin"),
    )

    def __init__(self, module: nn.Module, names: tuple[str, str, str, str], head_dim: int):
        super().__init__(module, head_dim)
        self.q, self.k, self.v, self.o = (getattr(module, name) for name in names)
        if names[0] == "q_lin":
            self.family = "distilbert"

    def num_heads(self) -> int:
        return self.q.out_features // self.head_dim

    def num_kv_heads(self) -> int:
        return self.k.out_features // self.head_dim

    def keep(self, q_keep: list[int], kv_keep: list[int]) -> None:
        rows = _head_rows(q_keep, self.head_dim)
        kv_rows = _head_rows(kv_keep, self.head_dim)
        _slice_linear(self.q, rows, 0)
        _slice_linear(self.k, kv_rows, 0)
        _slice_linear(self.v, kv_rows, 0)
        _slice_linear(self.o, rows, 1)
        groups = len(q_keep) // len(kv_keep) if kv_keep else 1
        _set_if_present(self.module, ("num_key_value_groups",), groups)
        _set_if_present(self.module, ("num_heads", "num_attention_heads", "n_heads"), len(q_keep))
        _set_if_present(self.module, ("num_key_value_heads",), len(kv_keep))

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.q, self.k, self.v, self.o) for p in (m.weight, m.bias) if p is not None]


def _adapter_for(model: nn.Module, module: nn.Module, names: dict[int, str]) -> _Adapter:
    kind = type(module).__name__
    if all(isinstance(getattr(module, name, None), nn.Linear) for name in ("query", "key", "value")):
        name = names.get(id(module), "")
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else None
        dense = getattr(getattr(parent, "output", None), "dense", None)
        if parent is None or getattr(parent, "self", None) is not module or not isinstance(dense, nn.Linear):
            raise ModelError(f"cannot find the output projection (attention.output.dense) of {kind} '{name}'")
        return _BertAdapter(module, dense)
    # GPT-2's Conv1D q | k | v blocks; GPT-BigCode's c_attn is a Linear with one shared K/V head (multi-query)
    if isinstance(getattr(module, "c_attn", None), Conv1D) and isinstance(getattr(module, "c_proj", None), Conv1D):
        if getattr(module, "is_cross_attention", False) or hasattr(module, "q_attn"):
            raise ModelError(f"pruning cross-attention ({kind}) is not supported")
        return _Gpt2Adapter(module)
    for projection_names in _SeparateProjectionsAdapter.NAMES:
        if all(isinstance(getattr(module, name, None), nn.Linear) for name in projection_names):
            head_dim = getattr(module, "head_dim", None) or getattr(module, "attention_head_size", None)
            if not isinstance(head_dim, int):
                raise ModelError(f"{kind} does not say its head dimension (head_dim); cannot prune it")
            return _SeparateProjectionsAdapter(module, projection_names, head_dim)
    raise ModelError(
        f"cannot prune heads of {kind}: unknown attention structure",
        hint="supported: BERT-style query/key/value + output.dense, GPT-2 c_attn/c_proj, "
        "q_proj/k_proj/v_proj + o_proj, out_proj or dense (Llama, Qwen2, Mistral, GPT-J, OPT, Phi), "
        "DistilBERT q_lin/k_lin/v_lin/out_lin; fused query/key/value projections are not sliced yet",
    )


# ----------------------------------------------------------------------------------------------------
# Layers: original head ids, K/V groups, policies
# ----------------------------------------------------------------------------------------------------


class _Layer:
    def __init__(self, index: int, adapter: _Adapter, num_heads: int, num_kv_heads: int):
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


def _attention_layers(target: object) -> tuple[nn.Module, list[_Layer]]:
    """The model and one _Layer per attention module, by layer number (numbering the modules if needed)."""
    from workbench.models.attention import ATTENTION_NAME, number_attention_modules

    model = _unwrap(target)
    loaded_modules = None if isinstance(target, nn.Module) else getattr(target, "attention_modules", None)
    modules = list(loaded_modules or _numbered_modules(model))
    if not modules and getattr(model.config, "_attn_implementation", None) == ATTENTION_NAME:
        pad = getattr(model.config, "pad_token_id", None) or 0
        probe = torch.full((1, 2), int(pad), dtype=torch.long, device=next(model.parameters()).device)
        modules = number_attention_modules(model, probe)
    num_layers = getattr(model.config, "num_hidden_layers", None)
    if not modules or (isinstance(num_layers, int) and len(modules) != num_layers):
        raise ModelError(
            f"cannot reach the attention heads of {type(model).__name__} "
            f"({len(modules)} attention modules found for {num_layers} layers)",
            hint="load the model with workbench.models.loading.load_model (attn_implementation='workbench')",
        )
    heads = _original_heads(model)
    kv_heads = getattr(model.config, "num_key_value_heads", None) or heads
    if heads % kv_heads:
        raise ModelError(f"{heads} attention heads cannot be split into {kv_heads} key/value groups")
    names = {id(m): name for name, m in model.named_modules()}
    layers = []
    for index, module in enumerate(modules):
        adapter = _adapter_for(model, module, names)
        # Multi-head models whose adapter has separate k/v (DistilBERT, MHA Llama) have kv == heads.
        layer_kv = kv_heads if isinstance(adapter, _SeparateProjectionsAdapter) else heads
        layers.append(_Layer(index, adapter, heads, layer_kv))
    return model, layers


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


def _load_weights_strictly(model: nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    index_file = folder / "model.safetensors.index.json"
    if index_file.is_file():
        files = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ModelError(f"no safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: saved {tuple(state[key].shape)}, pruned model {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    loaded_storage = {expected[key].data_ptr() for key in state if key in expected and expected[key].numel()}
    missing = sorted(
        key for key in set(expected) - set(state)
        if expected[key].numel() and expected[key].data_ptr() not in loaded_storage  # tied weights are fine
    )
    if unexpected or mismatched or missing:
        problems = [*(f"unexpected {k}" for k in unexpected[:5]), *mismatched[:5]]
        problems += [f"missing {k}" for k in missing[:5]]
        raise ModelError(f"the pruned model in {folder} does not match its saved weights: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
