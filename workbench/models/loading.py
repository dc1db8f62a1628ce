"""Load a model and its tokenizer with the workbench attention function installed.

Models come from the recipe (`model:`) or from another step's output folder (a fine-tuned or
pruned model). Every model is loaded with `attn_implementation="workbench"` when the architecture
dispatches through Transformers' attention interface; steps that need heads refuse the others
with a clear error instead of silently computing nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.data.labels import LabelVocabulary, vocabulary_from_config
from workbench.errors import ModelError
from workbench.models.attention import ATTENTION_NAME, number_attention_modules, register_workbench_attention

HEAD_CLASSES = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Written into config.json of models the workbench saves, so they load back the same way.
WORKBENCH_CONFIG_KEY = "workbench"


@dataclass(frozen=True)
class HeadLayout:
    num_layers: int
    num_heads: int  # query heads per layer, before any pruning
    num_kv_heads: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.num_layers, self.num_heads


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    head: str  # base | sequence-classification | causal-lm | masked-lm
    layout: HeadLayout
    heads_reachable: bool  # loaded with the workbench attention function
    attention_modules: list[torch.nn.Module]  # index = layer
    source: str
    resolved_commit: str | None = None
    labels: LabelVocabulary | None = None  # class names in id order (classification heads)
    uses_token_types: bool = False  # has segment embeddings: sentence pairs get token type ids

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def problem_type(self) -> str:
        """'regression' for a 1-output classification head, else 'classification' / 'lm'."""
        if self.head == "sequence-classification":
            return "regression" if self.model.config.num_labels == 1 else "classification"
        return "lm" if self.head in ("causal-lm", "masked-lm") else "none"

    def require_heads(self, what: str) -> None:
        if not self.heads_reachable:
            raise ModelError(
                f"{what} needs per-head access, but {type(self.model).__name__} does not dispatch attention "
                "through Transformers' attention interface (e.g. DeBERTa-v2, T5)",
                hint="use an architecture such as BERT, RoBERTa, GPT-2, Llama, Qwen2 or Mistral",
            )


def load_model(
    source: str,
    *,
    head: str,
    num_labels: int | None = None,
    labels: LabelVocabulary | None = None,
    revision: str | None = None,
    dtype: str = "float32",
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Load from a hub id or a local folder (also the folders the workbench saves).

    `labels` names the classes of a new classification head (it is written into the config, so the
    model saves with it); a model the workbench saved brings its own.
    """
    import transformers

    register_workbench_attention()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    saved = _workbench_metadata(source)
    head = saved.get("head", head)
    model_class = getattr(transformers, HEAD_CLASSES[head])
    options: dict[str, object] = {"revision": revision, "dtype": DTYPES[dtype]}
    if head == "sequence-classification" and "head" not in saved:
        if num_labels is not None:
            options["num_labels"] = num_labels
        if labels is not None:
            options.update(id2label=labels.id2label, label2id=labels.label2id)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, revision=revision)
        if saved.get("pruned_heads"):
            from workbench.models.pruning import load_pruned_model

            model = load_pruned_model(source, model_class, saved["pruned_heads"], ATTENTION_NAME, DTYPES[dtype])
            heads_reachable = True
        else:
            model, heads_reachable = _from_pretrained(model_class, source, options)
    except ModelError:
        raise
    except Exception as error:  # noqa: BLE001 -- a broken model folder fails in many ways inside transformers
        raise ModelError(f"cannot load model '{source}': {_first_line(error)}") from None

    _ensure_padding(tokenizer, model)
    model.to(device)
    model.eval()
    config = model.config
    layout = HeadLayout(
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
    )
    modules: list[torch.nn.Module] = []
    if heads_reachable:
        probe = torch.tensor([[tokenizer.pad_token_id or 0] * 2], device=model.device)
        modules = number_attention_modules(model, probe)
        # Some architectures accept the implementation name but never call it (DeBERTa-v2, T5).
        heads_reachable = len(modules) == layout.num_layers
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        head=head,
        layout=layout,
        heads_reachable=heads_reachable,
        attention_modules=modules,
        source=source,
        resolved_commit=getattr(config, "_commit_hash", None),
        labels=vocabulary_from_config(config, real_only=False) if head == "sequence-classification" else None,
        uses_token_types=uses_token_types(model),
    )


def uses_token_types(model: torch.nn.Module) -> bool:
    """Whether the model has segment embeddings that token type ids select (BERT: yes; GPT-2, RoBERTa: no).

    GPT-2's forward accepts `token_type_ids` but looks them up in its WORD embeddings, so the
    config's `type_vocab_size` decides, together with the forward's signature.
    """
    import inspect

    types = getattr(model.config, "type_vocab_size", None)
    return isinstance(types, int) and types > 1 and "token_type_ids" in inspect.signature(model.forward).parameters


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def save_model(loaded: LoadedModel, folder: Path, extra: dict | None = None) -> None:
    """Save model and tokenizer (safetensors) with the workbench metadata needed to load it back."""
    import transformers

    from workbench.models.pruning import heads_json, pruned_heads

    transformers.utils.logging.disable_progress_bar()
    folder.mkdir(parents=True, exist_ok=True)
    config = loaded.model.config
    metadata: dict = {"head": loaded.head}
    pruned = pruned_heads(loaded) if loaded.heads_reachable else {}
    if pruned:  # without the map nothing could rebuild the pruned shapes
        metadata["pruned_heads"] = heads_json(pruned)
    metadata.update(extra or {})
    setattr(config, WORKBENCH_CONFIG_KEY, metadata)
    try:
        loaded.model.save_pretrained(folder, safe_serialization=True)
    finally:
        delattr(config, WORKBENCH_CONFIG_KEY)
    loaded.tokenizer.save_pretrained(folder)


def _from_pretrained(model_class: type, source: str, options: dict) -> tuple[torch.nn.Module, bool]:
    try:
        model = model_class.from_pretrained(source, attn_implementation=ATTENTION_NAME, **options)
        return model, bool(getattr(model, "_supports_attention_backend", False))
    except ValueError as error:
        if "attn_implementation" not in str(error) and "attention" not in str(error).lower():
            raise
    # The architecture does not support custom attention functions: load it as it is.
    return model_class.from_pretrained(source, **options), False


def _workbench_metadata(source: str) -> dict:
    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        return {}
    return json.loads(config_file.read_text()).get(WORKBENCH_CONFIG_KEY, {}) or {}


def _ensure_padding(tokenizer: object, model: torch.nn.Module) -> None:
    """Decoders often ship without a pad token; batching needs one (it is masked out anyway)."""
    if getattr(tokenizer, "pad_token_id", None) is None:
        fallback = getattr(tokenizer, "eos_token", None) or getattr(tokenizer, "unk_token", None)
        if fallback is None:
            raise ModelError("the tokenizer has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = fallback
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"

