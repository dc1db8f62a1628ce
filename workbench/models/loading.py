"""Load a model and its tokenizer with the workbench attention function installed.

Models come from the recipe (`model:`) or from another step's output folder (a fine-tuned or
pruned model). Every model is loaded with `attn_implementation="workbench"` when the architecture
dispatches through Transformers' attention interface; steps that need heads refuse the others
with a clear error instead of silently computing nothing.

A folder is hostile until checked. Before loading: workbench/models/folder.py (config.json, weight
files, tokenizer files) for folders, workbench/hub.py (offline and not cached, or unreachable) for
hub ids. While loading: safetensors are preferred and a pytorch_model.bin is unpickled only with
torch's `weights_only=True`, so a pickle that holds anything but tensors is refused, never run.
After loading: transformers' own report, because it fills tensors the weights lack with random
values and says so only in a log line. Backbone tensors missing from the weights (a config with
more layers, weights of another architecture) and tensors of other shapes are errors; a missing
task head (or pooler) is not: that is a new head, trained by `finetune`.
"""

from __future__ import annotations

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
    _check_source(source, revision)
    saved = _workbench_metadata(source)
    head = saved.get("head", head)
    model_class = getattr(transformers, HEAD_CLASSES[head])
    options: dict[str, object] = {"revision": revision, "dtype": DTYPES[dtype], **_weight_options(source)}
    if head == "sequence-classification" and "head" not in saved:
        if num_labels is not None:
            options["num_labels"] = num_labels
        if labels is not None:
            options.update(id2label=labels.id2label, label2id=labels.label2id)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, revision=revision)
    except Exception as error:  # noqa: BLE001 -- broken tokenizer files fail in many ways inside tokenizers
        raise ModelError(f"cannot load the tokenizer of model '{source}': {_first_line(error)}") from None
    try:
        if saved.get("pruned_heads"):
            from workbench.models.pruning import load_pruned_model

            model = load_pruned_model(source, model_class, saved["pruned_heads"], ATTENTION_NAME, DTYPES[dtype])
            heads_reachable = True
        else:
            model, heads_reachable, report = _from_pretrained(model_class, source, options)
            _refuse_unfit_weights(model, report, source)
    except ModelError:
        raise
    except Exception as error:  # noqa: BLE001 -- a broken model folder fails in many ways inside transformers
        raise _load_failure(source, error) from None

    _refuse_small_vocabulary(tokenizer, model, source)
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
    from workbench.hub import redact

    text = str(error).strip().splitlines()
    return redact(f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": "))


def _check_source(source: str, revision: str | None) -> None:
    """The folder's files (workbench/models/folder.py), or for a hub id whether it can be loaded now."""
    from workbench.hub import hub_loading_problem
    from workbench.models.folder import check_folder

    folder = Path(source).expanduser()
    if folder.is_dir():
        problem = check_folder(folder)
        if problem:
            raise ModelError(f"cannot load model {source}: {problem}")
        return
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelError(f"cannot load model {source}: no such folder")
    refused = hub_loading_problem(source, revision, "model")
    if refused:
        raise ModelError(f"cannot load model '{source}': {refused[0]}", hint=refused[1])


def _weight_options(source: str) -> dict[str, object]:
    """Safetensors when the folder has them; a .bin only through torch's weights_only unpickler."""
    from workbench.models.folder import SAFETENSORS, SAFETENSORS_INDEX

    folder = Path(source).expanduser()
    options: dict[str, object] = {"weights_only": True, "output_loading_info": True, "ignore_mismatched_sizes": True}
    if folder.is_dir():  # a hub id: transformers picks, and prefers safetensors too
        options["use_safetensors"] = (folder / SAFETENSORS).is_file() or (folder / SAFETENSORS_INDEX).is_file()
    return options


def _load_failure(source: str, error: Exception) -> ModelError:
    """transformers' and torch's exceptions in the user's words; the .bin cases first, as theirs are pages long."""
    import pickle

    text = str(error)
    if "Weights only load failed" in text and "global" in text:  # the pickle names a class or function
        return ModelError(
            f"cannot load model {source}: refused to unpickle pytorch_model.bin, which holds objects other than "
            "tensors (unpickling them could run any code)",
            hint="convert the checkpoint where you trust it: model.save_pretrained(folder, safe_serialization=True) "
            "writes model.safetensors",
        )
    if isinstance(error, pickle.UnpicklingError) or "PytorchStreamReader" in text or _only_pickled_weights(source):
        return ModelError(
            f"cannot load model {source}: pytorch_model.bin is corrupt or truncated (torch cannot read it: {_first_line(error)})"
        )
    return ModelError(f"cannot load model '{source}': {_first_line(error)}")


def _only_pickled_weights(source: str) -> bool:
    """A folder whose weights torch.load reads: any failure past the config checks is a failure to read them."""
    from workbench.models.folder import PICKLED, SAFETENSORS, SAFETENSORS_INDEX

    folder = Path(source).expanduser()
    has_safetensors = (folder / SAFETENSORS).is_file() or (folder / SAFETENSORS_INDEX).is_file()
    return folder.is_dir() and not has_safetensors and any((folder / name).is_file() for name in PICKLED)


def _refuse_unfit_weights(model: torch.nn.Module, report: dict, source: str) -> None:
    """Tensors of other shapes, or backbone tensors the weights lack: transformers would fill them at random."""
    mismatched = sorted(report.get("mismatched_keys") or [])
    if mismatched:
        name, saved_shape, config_shape = mismatched[0]
        raise ModelError(
            f"cannot load model {source}: its weights do not fit its config.json: {_tensors(len(mismatched))} "
            f"another shape (e.g. {name}: {list(saved_shape)} in the weights, {list(config_shape)} from the config)",
            hint="config.json belongs to other weights, or num_labels differs from the checkpoint's classifier",
        )
    missing = sorted(key for key in report.get("missing_keys") or [] if _in_backbone(model, key))
    if missing:
        total = len(model.base_model.state_dict())
        raise ModelError(
            f"cannot load model {source}: {len(missing)} of the {total} backbone tensors its config.json asks for "
            f"are not in its weights (e.g. {missing[0]}); they would be random",
            hint="config.json belongs to other weights (more layers, another architecture?)",
        )


def _tensors(count: int) -> str:
    return "1 tensor has" if count == 1 else f"{count} tensors have"


def _in_backbone(model: torch.nn.Module, key: str) -> bool:
    """Whether a parameter name belongs to the encoder/decoder proper, not to a (new) task head or pooler."""
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and key.startswith(prefix + "."):
        inner = key[len(prefix) + 1:]
    elif model.base_model is model:
        inner = key
    else:
        return False  # classifier, score, lm_head, cls.predictions: a head the checkpoint may not have
    return not inner.startswith("pooler.")  # BERT's pooler is missing from MLM checkpoints and trained with the head


def _refuse_small_vocabulary(tokenizer: object, model: torch.nn.Module, source: str) -> None:
    """Token ids past the embedding table crash in the middle of a step (IndexError); say so before."""
    try:
        rows = model.get_input_embeddings().num_embeddings
    except (AttributeError, NotImplementedError):
        return
    tokens = len(tokenizer)  # type: ignore[arg-type]
    if tokens > rows:
        raise ModelError(
            f"cannot load model {source}: its tokenizer has {tokens} tokens, but its embeddings have {rows} rows",
            hint="the tokenizer files belong to another model (or config.json's vocab_size is too small)",
        )


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


def _from_pretrained(model_class: type, source: str, options: dict) -> tuple[torch.nn.Module, bool, dict]:
    """(model, whether it dispatches through the workbench attention, transformers' loading report)."""
    try:
        model, report = model_class.from_pretrained(source, attn_implementation=ATTENTION_NAME, **options)
        return model, bool(getattr(model, "_supports_attention_backend", False)), report
    except ValueError as error:
        if "attn_implementation" not in str(error) and "attention" not in str(error).lower():
            raise
    # The architecture does not support custom attention functions: load it as it is.
    model, report = model_class.from_pretrained(source, **options)
    return model, False, report


def _workbench_metadata(source: str) -> dict:
    from workbench.models.folder import FolderProblem, read_config

    if not (Path(source) / "config.json").is_file():
        return {}
    try:
        metadata = read_config(Path(source)).get(WORKBENCH_CONFIG_KEY, {}) or {}
    except FolderProblem as problem:
        raise ModelError(f"cannot load model {source}: {problem}") from None
    return metadata if isinstance(metadata, dict) else {}


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

