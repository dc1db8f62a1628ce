"""ALBERT-style: query/key/value and the output projection `dense` all in the attention module.

ALBERT shares one attention module between all its layers: gates and observers tell the layers apart
by call order (workbench/models/attention.py), but its weights cannot lose a head in one layer only,
so its pruning is refused (by pruning.py, which sees one module serving several layers)."""

from __future__ import annotations

from workbench.models.families.base import int_attribute, linears
from workbench.models.families.bert import BertAdapter


class AlbertAdapter(BertAdapter):
    layout = "albert"

    @classmethod
    def build(cls, module, parent, head_dim):
        layers = linears(module, ("query", "key", "value", "dense"))
        if layers is None:
            return None
        adapter = cls(module, layers[3], int_attribute(module, "attention_head_size") or head_dim)
        adapter.q, adapter.k, adapter.v = layers[:3]
        return adapter if adapter.head_dim else None
