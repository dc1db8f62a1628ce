"""BERT-style: `attention.self.query/key/value` (Linear) with the output projection in the parent,
`attention.output.dense` (BERT, RoBERTa, ELECTRA, XLM-R, and the BERT-shaped families)."""

from __future__ import annotations

from torch import nn

from workbench.models.families.base import (
    HeadAdapter,
    HeadSlices,
    heads_along_inputs,
    heads_along_outputs,
    int_attribute,
    linears,
    query_features,
    set_if_present,
)


def parent_output_dense(module: nn.Module, parent: nn.Module | None) -> nn.Linear | None:
    """`parent.output.dense` when `module` is `parent.self` (the BERT block layout), else None."""
    if parent is None or getattr(parent, "self", None) is not module:
        return None
    dense = getattr(getattr(parent, "output", None), "dense", None)
    return dense if isinstance(dense, nn.Linear) else None


class BertAdapter(HeadAdapter):
    layout = "bert"
    NAMES = ("query", "key", "value")

    @classmethod
    def build(cls, module, parent, head_dim):
        projections = linears(module, cls.NAMES)
        dense = parent_output_dense(module, parent)
        if projections is None or dense is None:
            return None
        adapter = cls(module, dense, int_attribute(module, "attention_head_size") or head_dim or 0)
        adapter.q, adapter.k, adapter.v = projections
        return adapter if adapter.head_dim else None

    def slices(self) -> list[HeadSlices]:
        into = [piece for layer in (self.q, self.k, self.v) for piece in heads_along_outputs(layer, query_features)]
        return into + heads_along_inputs(self.output)

    def set_counts(self, num_query: int, num_kv: int) -> None:
        set_if_present(self.module, ("num_attention_heads",), num_query)
        set_if_present(self.module, ("all_head_size",), num_query * self.head_dim)
