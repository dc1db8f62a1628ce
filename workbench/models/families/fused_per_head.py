"""One fused `query_key_value` Linear laid out head by head ([head 0: q k v | head 1: q k v | ...]) and the
output projection `dense`: GPT-NeoX (and Pythia), BLOOM, Falcon.

BLOOM's and some Falcons' attention takes ALiBi biases the model builds for its number of heads, and
Falcon's multi-query / new-decoder layouts group the fused rows differently: those are reached through
the output projection (gates, attention) but not pruned."""

from __future__ import annotations

import inspect

import torch

from workbench.models.families.base import HeadAdapter, Heads, heads_along_inputs, heads_along_outputs
from workbench.models.families.base import head_rows, int_attribute, linears, set_if_present


def per_head_qkv_features(heads: Heads) -> torch.Tensor:
    """Head h's q, k and v rows are the 3 * head_dim rows starting at 3 * head_dim * h."""
    return head_rows(heads.query, 3 * heads.head_dim)


class FusedPerHeadAdapter(HeadAdapter):
    layout = "gpt-neox"
    min_heads = 1  # the forward views the fused output as (..., -1, 3 * head_dim): ambiguous with no head

    @classmethod
    def build(cls, module, parent, head_dim):
        layers = linears(module, ("query_key_value", "dense"))
        size = int_attribute(module, "head_size", "head_dim") or head_dim
        if layers is None or not size:
            return None
        adapter = cls(module, layers[1], size)
        adapter.fused = layers[0]
        adapter.pruning_refusal = adapter._why_not_pruned()
        return adapter

    def _why_not_pruned(self) -> str:
        kind = type(self.module).__name__
        if self.fused.out_features != 3 * self.num_heads() * self.head_dim:
            return f"{kind}'s fused query_key_value groups its rows for multi-query attention, a layout the workbench does not slice"
        # BLOOM always adds ALiBi; Falcon takes the argument but uses it only when its config says `alibi`.
        takes_alibi = "alibi" in inspect.signature(self.module.forward).parameters
        if takes_alibi and getattr(getattr(self.module, "config", None), "alibi", True):
            return f"{kind} adds ALiBi biases the model builds for its full number of heads; pruning would misalign them"
        return ""

    def slices(self):
        return heads_along_outputs(self.fused, per_head_qkv_features) + heads_along_inputs(self.output)

    def set_counts(self, num_query: int, num_kv: int) -> None:
        set_if_present(self.module, ("num_attention_heads", "num_heads"), num_query)
