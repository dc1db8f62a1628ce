"""Which architecture families the workbench reaches the heads of, and what it can do with them.

One entry per family: a tiny random config (2 layers, 4 heads, hidden 32; transformers config
class + sizes), the task head it is tested with, and what the workbench is expected to do for each
capability. tests/test_family_matrix.py runs every (family, capability) and asserts exactly the
declared outcome: a ✓ is checked numerically, a refusal is checked to raise the declared clear
error (a ModelError whose message matches `error`), and a known gap (the workbench computes the
capability today but gets it wrong) is checked to still be wrong, so fixing it fails the test
until the declaration says ✓. README.md's model table is generated from this module
(`python -m workbench.docs --write README.md`), so the claim and the test are one thing.

Nothing here imports torch or transformers: `Family.config()` imports transformers when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The capabilities, in the README's column order: (key, column title, what a ✓ means).
CAPABILITIES: tuple[tuple[str, str, str], ...] = (
    ("outputs", "same outputs", "loaded by the workbench, the model computes what Transformers' own eager attention computes (logits, last hidden state)"),
    ("heads", "heads", "the workbench reaches every layer's heads (`LoadedModel.heads_reachable`): through the workbench attention function, or, for models that compute attention inline, through the output projection's input and the model's own eager probabilities (noted \"via projection\")"),
    ("gates_ones", "gates = 1", "gates of ones change nothing (bit for bit)"),
    ("zero_gate", "zero gate", "a zero gate equals zeroing that head's input columns of the output projection by hand"),
    ("importance", "importance", "the gate gradient of every head equals finite differences of the loss (float64; Richardson-extrapolated central differences, within 0.1% of the largest gradient)"),
    ("observed", "observed = eager", "the probabilities observers receive equal Transformers' eager `output_attentions`, and the eager path's outputs equal the sdpa path's"),
    ("stats_padding", "stats padded", "attention statistics (HeadStatistics) of a padded batch equal those of each example alone"),
    ("pruning", "pruning", "structurally pruned outputs equal masked outputs (<= 1e-4), with fewer parameters"),
    ("save_reload", "save → reload", "a model saved by the workbench (pruned, where pruning is ✓) loads back with the same outputs and pruned-head map"),
    ("gqa", "GQA policies", "K/V heads shared by query heads: `per_group` pruning equals masking, `groups` refuses part of a group and `partial_groups: prune` rounds up"),
)
CAPABILITY_KEYS = tuple(key for key, _, _ in CAPABILITIES)
HEAD_CAPABILITIES = ("gates_ones", "zero_gate", "importance", "observed", "stats_padding", "pruning", "gqa")


@dataclass(frozen=True)
class Supported:
    def __str__(self) -> str:
        return "✓"


@dataclass(frozen=True)
class Refused:
    """The workbench refuses with a clear ModelError whose message matches `error` (a regular expression)."""

    why: str
    error: str


@dataclass(frozen=True)
class Gap:
    """The workbench computes this today but the numbers are wrong; the check is asserted to fail."""

    why: str


@dataclass(frozen=True)
class NotApplicable:
    why: str


Outcome = Supported | Refused | Gap | NotApplicable
OK = Supported()

NO_FLAG = Refused(
    "it calls the attention interface but does not declare `_supports_attention_backend`, and the workbench only "
    "trusts architectures that do or that this matrix has checked (encoder-decoders: their cross-attention would "
    "need a layer numbering of its own, and the output-projection path would find 3 attention modules per layer); it is loaded with Transformers' own eager attention",
    error="does not declare support for custom attention functions",
)
SHARED_LAYERS = Refused(
    "one attention module is shared by every layer (ALBERT's cross-layer parameter sharing): gates and observers tell "
    "the layers apart by call order, but a head cannot be removed from one layer's weights only",
    error="one attention module serves several layers",
)
CONFIG_WIDTH = Refused(
    "its attention reads the query width from the model config, which all layers share, so one layer cannot lose heads",
    error="reads its query width from the model config",
)
MULTI_QUERY = Refused(
    "multi-query attention: its one K/V head is shared by every query head, so heads are masked, not sliced",
    error="pruning multi-query attention .* is not supported",
)
MHA = NotApplicable("one K/V head per query head")
ALIBI = Refused(
    "ALiBi: the model builds one bias slope per head for its full number of heads, which pruning would misalign",
    error="adds ALiBi biases",
)
FALCON_FUSED = Refused(
    "Falcon's fused query_key_value groups its rows for multi-query attention, a layout the workbench does not slice",
    error="groups its rows for multi-query attention",
)
VIA_PROJECTION = "heads via projection"


@dataclass(frozen=True)
class Family:
    name: str  # as the README names it
    config_class: str  # a transformers configuration class
    sizes: dict[str, Any]  # the tiny config (vocab_size is added: the test tokenizer's)
    head: str = "sequence-classification"
    heads: Refused | None = None  # why the heads cannot be reached: every head capability is refused so
    load: Refused | None = None  # loading with head access refuses (every capability then refuses so)
    pruning: Refused | None = None  # why structural pruning (and so the GQA policies) is refused
    gaps: dict[str, Gap] = field(default_factory=dict)  # capabilities that are wrong today
    note: str = ""

    @property
    def key(self) -> str:
        return self.name.lower().replace(" ", "-")

    @property
    def gqa(self) -> bool:
        kv = self.sizes.get("num_key_value_heads")
        return bool(self.sizes.get("multi_query")) or (kv is not None and kv < self.sizes.get("num_attention_heads", 4))

    def config(self, vocab_size: int) -> Any:
        import transformers

        return getattr(transformers, self.config_class)(vocab_size=vocab_size, num_labels=2, **self.sizes)

    def expected(self) -> dict[str, Outcome]:
        result: dict[str, Outcome] = {}
        for key in CAPABILITY_KEYS:
            outcome: Outcome = OK
            if self.load is not None:
                outcome = self.load
            elif key == "heads" or key in HEAD_CAPABILITIES:
                if self.heads is not None:
                    outcome = self.heads
                elif key == "pruning":
                    outcome = self.pruning or OK
                elif key == "gqa":
                    outcome = (self.pruning or OK) if self.gqa else MHA
            result[key] = self.gaps.get(key, outcome)
        return result


def _decoder(**extra: Any) -> dict[str, Any]:
    sizes = {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
        "max_position_embeddings": 128, "pad_token_id": 0, "bos_token_id": 101, "eos_token_id": 102,
    }
    return {**sizes, **extra}


def _encoder(**extra: Any) -> dict[str, Any]:
    return {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37, **extra}


_ROBERTA_IDS = {"pad_token_id": 0, "bos_token_id": 101, "eos_token_id": 102}

FAMILIES: tuple[Family, ...] = (
    Family("BERT", "BertConfig", _encoder()),
    Family("RoBERTa", "RobertaConfig", _encoder(**_ROBERTA_IDS)),
    Family("DistilBERT", "DistilBertConfig", {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 37, "pad_token_id": 0}),
    Family("ELECTRA", "ElectraConfig", _encoder(embedding_size=32)),
    Family("XLM-RoBERTa", "XLMRobertaConfig", _encoder(**_ROBERTA_IDS)),
    Family("ALBERT", "AlbertConfig", _encoder(embedding_size=16), pruning=SHARED_LAYERS, note="one attention module shared by all layers"),
    Family(
        "ModernBERT", "ModernBertConfig",
        _encoder(local_attention=4, pad_token_id=0, bos_token_id=101, eos_token_id=102, cls_token_id=101, sep_token_id=102),
        note="local (sliding-window) attention of 4 tokens on its local layers; fused Wqkv",
    ),
    Family("GPT-2", "GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128, "pad_token_id": 0}),
    Family(
        "GPT-Neo", "GPTNeoConfig",
        {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "attention_types": [[["global", "local"], 1]],
         "window_size": 4, "max_position_embeddings": 128, "pad_token_id": 0},
        note=f"{VIA_PROJECTION}; local attention window of 4",
    ),
    Family("GPT-J", "GPTJConfig", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 37, "rotary_dim": 4, "n_positions": 128, "pad_token_id": 0}),
    Family("GPT-NeoX", "GPTNeoXConfig", _decoder(), note="fused query_key_value, head by head"),
    Family("OPT", "OPTConfig", {**{k: v for k, v in _decoder().items() if k != "intermediate_size"}, "ffn_dim": 37, "word_embed_proj_dim": 32}),
    Family("BLOOM", "BloomConfig", {"hidden_size": 32, "n_layer": 2, "n_head": 4, "pad_token_id": 0}, pruning=ALIBI, note=f"{VIA_PROJECTION}; ALiBi"),
    Family("Falcon", "FalconConfig", _decoder(), pruning=FALCON_FUSED, note=f"{VIA_PROJECTION}; multi-query"),
    Family("Llama", "LlamaConfig", _decoder(num_key_value_heads=2)),
    Family("Mistral", "MistralConfig", _decoder(num_key_value_heads=2, sliding_window=4), note="sliding window of 4 tokens"),
    Family(  # intermediate 32: the grouped_mm experts kernel needs 16-byte strides
        "Mixtral", "MixtralConfig", _decoder(num_key_value_heads=2, num_local_experts=2, num_experts_per_tok=1, intermediate_size=32)
    ),
    Family("Qwen2", "Qwen2Config", _decoder(num_key_value_heads=2)),
    Family("Qwen3", "Qwen3Config", _decoder(num_key_value_heads=2, head_dim=8)),
    Family("Gemma", "GemmaConfig", _decoder(num_key_value_heads=2, head_dim=8)),
    Family(
        "Gemma-2", "Gemma2Config",
        _decoder(num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=4, attn_logit_softcapping=2.0),
        note="attention logit softcapping (at 2, so that it bites on tiny scores) and sliding windows of 4 tokens",
    ),
    Family("Phi", "PhiConfig", _decoder()),
    Family("Phi-3", "Phi3Config", _decoder(num_key_value_heads=2), pruning=CONFIG_WIDTH, note="fused qkv_proj"),
    Family("StableLM", "StableLmConfig", _decoder(num_key_value_heads=2)),
    Family(
        "GPT-BigCode", "GPTBigCodeConfig",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 37, "n_positions": 128, "pad_token_id": 0, "multi_query": True},
        pruning=MULTI_QUERY, note="multi-query attention",
    ),
    Family(
        "GPT-BigCode MHA", "GPTBigCodeConfig",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 37, "n_positions": 128, "pad_token_id": 0, "multi_query": False},
        note="multi-head variant: fused c_attn Linear, head by head",
    ),
    Family("Starcoder2", "Starcoder2Config", _decoder(num_key_value_heads=2)),
    Family("Granite", "GraniteConfig", _decoder(num_key_value_heads=2), head="causal-lm", note="causal LM head"),
    Family("Cohere", "CohereConfig", _decoder(num_key_value_heads=2), head="causal-lm", note="causal LM head"),
    Family("OLMo", "OlmoConfig", _decoder(num_key_value_heads=2)),
    Family(
        "BART", "BartConfig",
        {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
         "encoder_ffn_dim": 37, "decoder_ffn_dim": 37, "max_position_embeddings": 128, "pad_token_id": 0,
         "bos_token_id": 101, "eos_token_id": 102, "decoder_start_token_id": 102, "forced_eos_token_id": None},
        heads=NO_FLAG, note="encoder-decoder",
    ),
    Family(
        "T5", "T5Config",
        {"d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4, "pad_token_id": 0,
         "decoder_start_token_id": 0, "eos_token_id": 102},
        heads=NO_FLAG, note="encoder-decoder, relative position bias",
    ),
    Family(
        "DeBERTa-v2", "DebertaV2Config",
        _encoder(pad_token_id=0, relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=16),
        note=f"{VIA_PROJECTION}; disentangled attention with relative-position projections",
    ),
    Family(
        "OpenAI GPT", "OpenAIGPTConfig", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128, "pad_token_id": 0},
        note=f"{VIA_PROJECTION}; the original GPT",
    ),
)


def family(name: str) -> Family:
    for entry in FAMILIES:
        if name in (entry.name, entry.key):
            return entry
    raise KeyError(name)


def _cell(outcome: Outcome, notes: list[str]) -> str:
    if isinstance(outcome, Supported):
        return "✓"
    why = outcome.why
    if why not in notes:
        notes.append(why)
    number = notes.index(why) + 1
    if isinstance(outcome, Refused):
        return f"refused [{number}]"
    if isinstance(outcome, Gap):
        return f"✗ wrong today [{number}]"
    return f"— [{number}]"


def model_table_markdown() -> str:
    """README's model table: one row per family of FAMILIES, one column per capability, reasons below."""
    notes: list[str] = []
    header = ["family", "tested as", *(title for _, title, _ in CAPABILITIES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in FAMILIES:
        expected = entry.expected()
        tested = f"`{entry.config_class}`" + (f", {entry.note}" if entry.note else "")
        cells = [entry.name, tested, *(_cell(expected[key], notes) for key in CAPABILITY_KEYS)]
        lines.append("| " + " | ".join(cells) + " |")
    meanings = "\n".join(f"- **{title}**: {meaning}." for _, title, meaning in CAPABILITIES)
    reasons = "\n".join(f"{number}. {why}" for number, why in enumerate(notes, 1))
    intro = (
        f"{len(FAMILIES)} families, each as a tiny random model (2 layers, 4 heads, hidden 32; K/V heads shared "
        "where the family has grouped-query attention) tested by tests/test_family_matrix.py: a ✓ is checked "
        "numerically, a refusal is checked to be the clear error named below, a gap is checked to be still wrong."
    )
    return f"{intro}\n\n" + "\n".join(lines) + f"\n\n{meanings}\n\nNotes:\n\n{reasons}\n"
