"""Separate q/k/v projections and an output projection, all Linear in the attention module, with
grouped- or multi-query K/V (k and v have one row block per K/V head): Llama, Qwen2/3, Mistral,
Mixtral, Gemma, OLMo, StableLM, Granite, Cohere, Starcoder2 (`q_proj k_proj v_proj o_proj`).
The other spellings of the same layout are one subclass each, in their own files."""

from __future__ import annotations

from workbench.models.families.base import (
    HeadAdapter,
    heads_along_inputs,
    heads_along_outputs,
    int_attribute,
    kv_features,
    linears,
    query_features,
    set_if_present,
)


class SeparateProjectionsAdapter(HeadAdapter):
    layout = "llama"
    NAMES = ("q_proj", "k_proj", "v_proj", "o_proj")

    @classmethod
    def build(cls, module, parent, head_dim):
        layers = linears(module, cls.NAMES)
        if layers is None:
            return None
        size = int_attribute(module, "head_dim", "attention_head_size", "head_size") or head_dim
        if not size:
            return None
        adapter = cls(module, layers[3], size)
        adapter.q, adapter.k, adapter.v = layers[:3]
        return adapter

    def num_kv_heads(self) -> int:
        return self.k.out_features // self.head_dim

    def original_kv_heads(self, heads: int, config_kv: int) -> int:
        return config_kv

    def slices(self):
        return [
            *heads_along_outputs(self.q, query_features),
            *heads_along_outputs(self.k, kv_features),
            *heads_along_outputs(self.v, kv_features),
            *heads_along_inputs(self.output),
        ]

    def set_counts(self, num_query: int, num_kv: int) -> None:
        set_if_present(self.module, ("num_key_value_groups",), num_query // num_kv if num_kv else 1)
        set_if_present(self.module, ("num_heads", "num_attention_heads", "n_heads"), num_query)
        set_if_present(self.module, ("num_key_value_heads",), num_kv)
