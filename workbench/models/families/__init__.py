"""Attention layout adapters: where each family keeps its heads, one module per layout.

Each module defines one `HeadAdapter` subclass (see base.py) that recognises its layout by
introspecting the attention module's projections, never by the model's name, and says where every
head sits in those weights. Pruning, the dense export and the output-projection gates all work from
that description.

Adding a layout = one file here with a `HeadAdapter` subclass, and its line in `LAYOUTS` below
(tried in order: the first whose `build` returns an adapter wins), plus a line in
workbench/models/families_matrix.py that tests a tiny model of the family.
"""

from __future__ import annotations

from torch import nn

from workbench.models.families.albert import AlbertAdapter
from workbench.models.families.base import HeadAdapter, Heads, HeadSlices
from workbench.models.families.bert import BertAdapter
from workbench.models.families.deberta_v2 import DebertaV2Adapter
from workbench.models.families.distilbert import DistilBertAdapter
from workbench.models.families.fused_per_head import FusedPerHeadAdapter
from workbench.models.families.fused_stacked import FusedStackedAdapter
from workbench.models.families.gpt2_conv1d import Gpt2Adapter
from workbench.models.families.multi_query import MultiQueryAdapter
from workbench.models.families.out_proj import OutProjAdapter
from workbench.models.families.phi import PhiAdapter
from workbench.models.families.separate_projections import SeparateProjectionsAdapter

LAYOUTS: tuple[type[HeadAdapter], ...] = (
    BertAdapter,
    AlbertAdapter,
    DebertaV2Adapter,
    Gpt2Adapter,
    MultiQueryAdapter,
    SeparateProjectionsAdapter,
    OutProjAdapter,
    PhiAdapter,
    DistilBertAdapter,
    FusedPerHeadAdapter,
    FusedStackedAdapter,
)

SUPPORTED = (
    "BERT-style query/key/value + attention.output.dense, DeBERTa-v2 query_proj/key_proj/value_proj, "
    "GPT-2/GPT c_attn/c_proj, GPT-BigCode c_attn/c_proj, q_proj/k_proj/v_proj + o_proj, out_proj or dense "
    "(Llama, Qwen2, Mistral, OPT, GPT-J, GPT-Neo, Phi), DistilBERT q_lin/k_lin/v_lin/out_lin, fused "
    "query_key_value + dense (GPT-NeoX, BLOOM, Falcon), fused Wqkv/qkv_proj (ModernBERT, Phi-3)"
)


def config_head_dim(model: nn.Module) -> int | None:
    """The head dimension the model's config says (`head_dim`, else hidden size / heads), or None."""
    config = model.config
    explicit = getattr(config, "head_dim", None)
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads == 0:
        return hidden // heads
    return None


def find_adapter(module: nn.Module, parent: nn.Module | None, head_dim: int | None) -> HeadAdapter | None:
    """The adapter of the first layout `module` has, or None when it is not an attention module we know."""
    for layout in LAYOUTS:
        adapter = layout.build(module, parent, head_dim)
        if adapter is not None:
            return adapter
    return None


__all__ = ["LAYOUTS", "SUPPORTED", "HeadAdapter", "HeadSlices", "Heads", "config_head_dim", "find_adapter"]
