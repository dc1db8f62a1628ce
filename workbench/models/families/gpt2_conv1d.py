"""GPT-2 and the original GPT: a fused `c_attn` Conv1D (weight [in, 3 * heads * head_dim], blocks
q | k | v) and the output projection `c_proj` (Conv1D)."""

from __future__ import annotations

from transformers.pytorch_utils import Conv1D

from workbench.models.families.base import HeadAdapter, heads_along_inputs, heads_along_outputs, int_attribute
from workbench.models.families.base import set_if_present, stacked_qkv_features


class Gpt2Adapter(HeadAdapter):
    layout = "gpt2"

    @classmethod
    def build(cls, module, parent, head_dim):
        c_attn, c_proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
        if not (isinstance(c_attn, Conv1D) and isinstance(c_proj, Conv1D)):
            return None
        adapter = cls(module, c_proj, int_attribute(module, "head_dim") or head_dim or 0)
        if getattr(module, "is_cross_attention", False) or hasattr(module, "q_attn"):
            adapter.pruning_refusal = f"pruning cross-attention ({type(module).__name__}) is not supported"
        if int_attribute(module, "n_head") is not None:  # the original GPT: split_heads divides by n_head
            adapter.min_heads = 1
        return adapter if adapter.head_dim else None

    def slices(self):
        return heads_along_outputs(self.module.c_attn, stacked_qkv_features) + heads_along_inputs(self.output)

    def set_counts(self, num_query: int, num_kv: int) -> None:
        kept = num_query * self.head_dim
        # An int 0 would split the empty fused output into ONE piece; a list gives three empty ones.
        self.module.split_size = kept if kept else [0, 0, 0]
        set_if_present(self.module, ("num_heads", "n_head"), num_query)
