"""GPT-BigCode (SantaCoder, StarCoder 1): a fused `c_attn` Linear and `c_proj`. With `multi_query` the
fused output is [all q heads | one k head | one v head]; without, it is laid out head by head."""

from __future__ import annotations

from torch import nn

from workbench.models.families.base import HeadAdapter, heads_along_inputs, heads_along_outputs, int_attribute
from workbench.models.families.base import set_if_present, stacked_qkv_features
from workbench.models.families.fused_per_head import per_head_qkv_features


class MultiQueryAdapter(HeadAdapter):
    layout = "gpt-bigcode"
    min_heads = 1  # the query is viewed as (..., -1, head_dim)

    @classmethod
    def build(cls, module, parent, head_dim):
        c_attn, c_proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
        if not (isinstance(c_attn, nn.Linear) and isinstance(c_proj, nn.Linear)):
            return None
        adapter = cls(module, c_proj, int_attribute(module, "head_dim") or head_dim or 0)
        adapter.multi_query = bool(getattr(module, "multi_query", False))
        if getattr(module, "is_cross_attention", False) or hasattr(module, "q_attn"):
            adapter.pruning_refusal = f"pruning cross-attention ({type(module).__name__}) is not supported"
        elif adapter.multi_query:
            adapter.pruning_refusal = (
                f"pruning multi-query attention ({type(module).__name__}) is not supported: its one K/V head is shared "
                "by every query head"
            )
        return adapter if adapter.head_dim else None

    def num_kv_heads(self) -> int:
        return 1 if self.multi_query else self.num_heads()

    def original_kv_heads(self, heads: int, config_kv: int) -> int:
        return 1 if self.multi_query else heads

    def slices(self):
        features = stacked_qkv_features if self.multi_query else per_head_qkv_features
        return heads_along_outputs(self.module.c_attn, features) + heads_along_inputs(self.output)

    def set_counts(self, num_query: int, num_kv: int) -> None:
        width = num_query * self.head_dim
        set_if_present(self.module, ("num_heads",), num_query)
        set_if_present(self.module, ("embed_dim", "split_size"), width)
        if not self.multi_query:
            set_if_present(self.module, ("kv_heads",), num_query)
            set_if_present(self.module, ("kv_dim",), width)
