"""DeBERTa-v2's disentangled attention: `query_proj/key_proj/value_proj` in `attention.self`, the
output projection `attention.output.dense`, and per-head relative-position projections
(`pos_key_proj`, `pos_query_proj`, present unless `share_att_key`) sliced with the heads."""

from __future__ import annotations

from workbench.models.families.base import heads_along_outputs, linears, query_features
from workbench.models.families.bert import BertAdapter, parent_output_dense


class DebertaV2Adapter(BertAdapter):
    layout = "deberta-v2"
    NAMES = ("query_proj", "key_proj", "value_proj")
    min_heads = 1  # its transpose_for_scores views (..., heads, -1): ambiguous with no head

    @classmethod
    def build(cls, module, parent, head_dim):
        projections = linears(module, cls.NAMES)
        dense = parent_output_dense(module, parent)
        if projections is None or dense is None:
            return None
        adapter = cls(module, dense, int(getattr(module, "attention_head_size", 0) or head_dim or 0))
        adapter.q, adapter.k, adapter.v = projections
        return adapter if adapter.head_dim else None

    def slices(self):
        relative = [
            piece
            for name in ("pos_key_proj", "pos_query_proj")
            if linears(self.module, (name,))
            for piece in heads_along_outputs(getattr(self.module, name), query_features)
        ]
        return super().slices() + relative
