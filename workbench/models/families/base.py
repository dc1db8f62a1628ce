"""What every attention layout adapter is: where a layer's heads live in its weights.

An adapter wraps one attention module and says, for each parameter that holds heads, along which
dimension and at which feature indices every head sits (`HeadSlices`). That one description drives
structural pruning (keep the features of the heads left), the dense export (scatter them back into
a full-width zero tensor) and the output-projection gates (issue 13: the projection whose INPUT is
the concatenation of the heads, [batch, seq, heads * head_dim]).

Feature indices are computed from a `Heads` value: the positions of the query heads and K/V heads to
address, in a layer of `num_query` query heads and `num_kv` K/V heads. Pruning asks with current
positions in the current (maybe already pruned) layer; the dense export asks with original ids in
the original layer. The same function answers both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class Heads:
    query: list[int]  # query heads, as positions in a layer of num_query heads
    kv: list[int]  # K/V heads, as positions in a layer of num_kv heads
    num_query: int
    num_kv: int
    head_dim: int


Features = Callable[[Heads], torch.Tensor]  # -> LongTensor of feature indices along one dimension


@dataclass(frozen=True)
class HeadSlices:
    """The features of `owner.<name>` (a weight or a bias) along `dim` that belong to the heads."""

    owner: nn.Module
    name: str
    dim: int
    features: Features


def head_rows(positions: Iterable[int], head_dim: int) -> torch.Tensor:
    """Feature indices of the heads at `positions`, each `head_dim` wide, laid side by side."""
    positions = list(positions)
    if not positions:
        return torch.zeros(0, dtype=torch.long)
    starts = torch.tensor(positions, dtype=torch.long)[:, None] * head_dim
    return (starts + torch.arange(head_dim)[None, :]).reshape(-1)


def query_features(heads: Heads) -> torch.Tensor:
    return head_rows(heads.query, heads.head_dim)


def kv_features(heads: Heads) -> torch.Tensor:
    return head_rows(heads.kv, heads.head_dim)


def stacked_qkv_features(heads: Heads) -> torch.Tensor:
    """A fused projection whose output is [all query heads | all key heads | all value heads]."""
    q_width, kv_width = heads.num_query * heads.head_dim, heads.num_kv * heads.head_dim
    kv = kv_features(heads)
    return torch.cat([query_features(heads), kv + q_width, kv + q_width + kv_width])


def _is_conv1d(layer: nn.Module) -> bool:
    return isinstance(layer, Conv1D)


def heads_along_outputs(layer: nn.Module, features: Features) -> list[HeadSlices]:
    """A projection INTO the heads (q, k, v): its outputs (Linear rows, Conv1D columns) and its bias."""
    weight_dim = 1 if _is_conv1d(layer) else 0
    slices = [HeadSlices(layer, "weight", weight_dim, features)]
    if getattr(layer, "bias", None) is not None:
        slices.append(HeadSlices(layer, "bias", 0, features))
    return slices


def heads_along_inputs(layer: nn.Module, features: Features = query_features) -> list[HeadSlices]:
    """The projection OUT of the heads: its inputs (Linear columns, Conv1D rows); its bias is not per head."""
    return [HeadSlices(layer, "weight", 0 if _is_conv1d(layer) else 1, features)]


def input_width(layer: nn.Module) -> int:
    """How many features a Linear or Conv1D takes."""
    weight = layer.weight
    return int(weight.shape[0] if _is_conv1d(layer) else weight.shape[1])


class HeadAdapter:
    """One attention module of a known layout. Subclasses say how to recognise it (`build`) and where its
    heads are (`slices`); the rest is shared."""

    layout = ""  # a short name, as the dense export and error messages print it
    min_heads = 0  # 1 where the module's own forward cannot run with no head left (a view(..., -1, d) of nothing)
    pruning_refusal = ""  # why this layout cannot be pruned structurally ("" = it can)

    def __init__(self, module: nn.Module, output: nn.Module, head_dim: int):
        self.module = module
        self.output = output  # the output projection: its input is the concatenation of the heads
        self.head_dim = head_dim

    @classmethod
    def build(cls, module: nn.Module, parent: nn.Module | None, head_dim: int | None) -> HeadAdapter | None:
        """An adapter when `module` has this layout, else None. `parent` is the module holding it;
        `head_dim` what the config says (None when it does not say)."""
        raise NotImplementedError

    def num_heads(self) -> int:
        return input_width(self.output) // self.head_dim

    def num_kv_heads(self) -> int:
        return self.num_heads()

    def original_kv_heads(self, heads: int, config_kv: int) -> int:
        """K/V heads the unpruned layer had, from the config's counts (grouped layouts read `config_kv`)."""
        return heads

    def slices(self) -> list[HeadSlices]:
        raise NotImplementedError

    def set_counts(self, num_query: int, num_kv: int) -> None:
        """Update the module's own head counts after slicing (the names its forward reads)."""

    def projections(self) -> list[nn.Module]:
        """The modules whose parameters are the attention's (for parameter counts)."""
        return list(dict.fromkeys(piece.owner for piece in self.slices()))

    def parameters(self) -> list[nn.Parameter]:
        return [p for module in self.projections() for p in (module.weight, getattr(module, "bias", None)) if p is not None]

    def keep(self, query: list[int], kv: list[int]) -> None:
        """Keep only the query heads at positions `query` and the K/V heads at `kv`, slicing in place."""
        heads = Heads(query, kv, self.num_heads(), self.num_kv_heads(), self.head_dim)
        indices = [(piece, piece.features(heads)) for piece in self.slices()]  # all before any slicing
        for piece, index in indices:
            _slice_parameter(piece.owner, piece.name, index, piece.dim)
        for owner in dict.fromkeys(piece.owner for piece in self.slices()):
            _update_shape(owner)
        self.set_counts(len(query), len(kv))


def set_if_present(module: nn.Module, names: Iterable[str], value: int) -> None:
    for name in names:
        if isinstance(getattr(module, name, None), int):
            setattr(module, name, value)


def int_attribute(module: nn.Module, *names: str) -> int | None:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def linears(module: nn.Module, names: Iterable[str]) -> list[nn.Linear] | None:
    """The Linear layers `module.<name>` for every name, or None when one is missing or not a Linear."""
    found = [getattr(module, name, None) for name in names]
    return found if all(isinstance(layer, nn.Linear) for layer in found) else None  # type: ignore[return-value]


def _slice_parameter(owner: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    old = getattr(owner, name)
    if old is None:
        return
    new = old.detach().index_select(dim, index.to(old.device)).clone()
    setattr(owner, name, nn.Parameter(new, requires_grad=old.requires_grad))


def _update_shape(layer: nn.Module) -> None:
    if _is_conv1d(layer):
        layer.nx, layer.nf = layer.weight.shape
        if layer.weight.shape[0] == 0 and type(layer) is Conv1D:
            layer.__class__ = WidthSafeConv1D
    elif isinstance(layer, nn.Linear):
        layer.out_features, layer.in_features = layer.weight.shape


class WidthSafeConv1D(Conv1D):
    """A GPT-2 Conv1D that accepts inputs of width 0 (same parameters, same state dict).

    `Conv1D.forward` flattens with `view(-1, width)`, which is ambiguous for width 0; with no input
    features the output is exactly the bias.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = math.prod(x.shape[:-1])
        flat = torch.addmm(self.bias, x.reshape(rows, x.shape[-1]), self.weight)
        return flat.view(*x.shape[:-1], self.weight.shape[1])
