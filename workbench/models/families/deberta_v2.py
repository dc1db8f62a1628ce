"""DeBERTa-v2's disentangled attention: `query_proj/key_proj/value_proj` in `attention.self`, the
output projection `attention.output.dense`, and per-head relative-position projections
(`pos_key_proj`, `pos_query_proj`, present unless `share_att_key`) sliced with the heads."""

from __future__ import annotations

from workbench.models.families.base import heads_along_outputs, linears, query_features
from workbench.models.families.bert import BertAdapter


class DebertaV2Adapter(BertAdapter):
    layout = "deberta-v2"
    NAMES = ("query_proj", "key_proj", "value_proj")
    min_heads = 1  # its transpose_for_scores views (..., heads, -1): ambiguous with no head

    def slices(self):
        relative = [
            piece
            for name in ("pos_key_proj", "pos_query_proj")
            if linears(self.module, (name,))
            for piece in heads_along_outputs(getattr(self.module, name), query_features)
        ]
        return super().slices() + relative
