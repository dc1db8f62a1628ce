"""One fused q | k | v projection stacked block by block ([all q heads | all k heads | all v heads]):
ModernBERT (`Wqkv`, `Wo`) and Phi-3 (`qkv_proj`, `o_proj`, with grouped K/V blocks).

Phi-3's forward reads its query width from the model config, which every layer shares, so a layer
cannot lose heads on its own: its pruning is refused."""

from __future__ import annotations

from workbench.models.families.base import HeadAdapter, heads_along_inputs, heads_along_outputs, int_attribute
from workbench.models.families.base import linears, set_if_present, stacked_qkv_features

NAMES = (("Wqkv", "Wo"), ("qkv_proj", "o_proj"))


class FusedStackedAdapter(HeadAdapter):
    layout = "fused-qkv"
    min_heads = 1  # ModernBERT views the fused output as (..., 3, -1, head_dim)

    @classmethod
    def build(cls, module, parent, head_dim):
        for names in NAMES:
            layers = linears(module, names)
            size = int_attribute(module, "head_dim") or head_dim
            if layers is not None and size:
                adapter = cls(module, layers[1], size)
                adapter.fused = layers[0]
                kv = int_attribute(module, "num_key_value_heads")
                adapter._kv = kv if kv is not None else adapter.num_heads()
                if names[0] == "qkv_proj":
                    adapter.pruning_refusal = (
                        f"{type(module).__name__} reads its query width from the model config, which all layers share, "
                        "so one layer cannot lose heads"
                    )
                return adapter
        return None

    def num_kv_heads(self) -> int:
        return self._kv

    def original_kv_heads(self, heads: int, config_kv: int) -> int:
        return config_kv

    def slices(self):
        return heads_along_outputs(self.fused, stacked_qkv_features) + heads_along_inputs(self.output)

    def set_counts(self, num_query: int, num_kv: int) -> None:
        self._kv = num_kv
        set_if_present(self.module, ("num_heads", "num_attention_heads"), num_query)
        set_if_present(self.module, ("num_key_value_heads",), num_kv)
