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

Big models: `device_map` (a strategy or an explicit map) and `max_memory` go through accelerate
(workbench/models/placement.py); such a model stays where accelerate put it, and
`LoadedModel.device` is where its inputs go. `dtype="auto"` is the checkpoint's own dtype.
`attn_implementation` replaces the workbench attention for callers that read no heads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.data.labels import LabelVocabulary, vocabulary_from_config
from workbench.errors import ModelError, WorkbenchError
from workbench.models.attention import ATTENTION_NAME, number_attention_modules, register_workbench_attention
from workbench.models.placement import Placement

HEAD_CLASSES = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "F8_E4M3": "float8_e4m3fn"}
# Written into config.json of models the workbench saves, so they load back the same way.
WORKBENCH_CONFIG_KEY = "workbench"
# Model types that call Transformers' attention interface with nothing the workbench function would drop,
# but do not declare `_supports_attention_backend`; each is checked by tests/test_family_matrix.py.
CHECKED_DISPATCH = frozenset({"stablelm"})
HEADS_VIA = ("attention interface", "output projection")
NOT_DISPATCHED = "does not dispatch attention through Transformers' attention interface (e.g. DeBERTa-v2, BLOOM)"


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
    attn_implementation: str = ATTENTION_NAME  # what the model was loaded with
    device_map: dict[str, Any] | None = None  # {module: device} when placed by model.device_map
    offloaded: tuple[str, ...] = ()  # modules on cpu/disk whose weights are loaded at every forward
    input_device: torch.device | None = None  # where inputs go (set for a placed model)
    heads_problem: str = ""  # why the heads are not reachable (completes "<model class> ..."), when they are not
    # How the heads are reached: "attention interface" (the workbench attention function) or "output projection"
    # (models that compute attention inline: gates on the projection's input, probabilities from their eager).
    heads_via: str = ""

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def device(self) -> torch.device:
        """Where inputs, gates and accumulators go: the input device of a placed model (whose first
        parameter may be offloaded to the meta device), else the device of its parameters."""
        if self.input_device is not None:
            return self.input_device
        return next(self.model.parameters()).device

    @property
    def problem_type(self) -> str:
        """'regression' for a 1-output classification head, else 'classification' / 'lm'."""
        if self.head == "sequence-classification":
            return "regression" if self.model.config.num_labels == 1 else "classification"
        return "lm" if self.head in ("causal-lm", "masked-lm") else "none"

    def require_heads(self, what: str) -> None:
        if self.attn_implementation != ATTENTION_NAME and not self.heads_reachable:
            raise ModelError(
                f"{what} needs per-head access, but the model was loaded with attn_implementation="
                f"'{self.attn_implementation}' instead of the workbench attention function",
                hint="load it with head access (StepContext.model(head_access=True), the default)",
            )
        if not self.heads_reachable:
            raise ModelError(
                f"{what} needs per-head access, but {type(self.model).__name__} {self.heads_problem or NOT_DISPATCHED}",
                hint="use an architecture such as BERT, RoBERTa, GPT-2, Llama, Qwen2 or Mistral "
                "(README.md's model table lists what each family supports)",
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
    device_map: str | dict[str, int | str] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    attn_implementation: str | None = None,
    changes_weights: bool = False,
    heads_via: str | None = None,
) -> LoadedModel:
    """Load from a hub id or a local folder (also the folders the workbench saves).

    `labels` names the classes of a new classification head (it is written into the config, so the
    model saves with it); a model the workbench saved brings its own.

    `device_map`/`max_memory`: place the model with accelerate instead of moving it to `device`
    (workbench/models/placement.py); `device` then confines a strategy's default memory limits.
    `changes_weights`: the caller trains or slices the weights, which modules offloaded to cpu/disk
    cannot hold (accelerate reloads them at every forward), so such a placement is refused.
    `dtype="auto"`: the checkpoint's dtype (`checkpoint_dtype`). `attn_implementation`: load with
    Transformers' eager/sdpa/flash attention instead of the workbench function; no head access then.
    `heads_via`: how to reach the heads, "attention interface" or "output projection"; by default the
    attention interface where the architecture dispatches through it, else the output projection
    (workbench/models/projection_heads.py). Both give the same numbers where both apply.
    """
    import transformers

    register_workbench_attention()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # accelerate warns that offloaded parameters are on the meta device: that is what offloading is
    logging.getLogger("accelerate.big_modeling").setLevel(logging.ERROR)
    _check_source(source, revision)
    device = torch.device(device)
    saved = _workbench_metadata(source)
    head = saved.get("head", head)
    model_class = getattr(transformers, HEAD_CLASSES[head])
    if dtype == "auto":
        dtype = checkpoint_dtype(source, revision)
    if heads_via not in (None, *HEADS_VIA):
        raise ModelError(f"unknown heads_via '{heads_via}'", hint=f"use one of: {', '.join(HEADS_VIA)}")
    attention = attn_implementation or ATTENTION_NAME
    build_with = "eager" if heads_via == "output projection" and attention == ATTENTION_NAME else attention
    placement = Placement(device_map, max_memory) if device_map is not None else None
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
    offload_folder = _offload_folder() if placement is not None and placement.may_use_disk else None
    try:
        if saved.get("pruned_heads"):
            from workbench.models.placement import dispatch

            built_with = attention
            if attention == ATTENTION_NAME and (build_with == "eager" or not _trusted_class(model_class, source, options)):
                built_with = "eager"  # heads through the output projections (workbench/models/projection_heads.py)
            model = load_pruned_model(source, model_class, saved["pruned_heads"], built_with, DTYPES[dtype])
            heads_reachable = built_with == ATTENTION_NAME
            if placement is not None:
                model = dispatch(model, placement, device, offload_folder)  # type: ignore[arg-type]
        else:
            random_state = torch.random.get_rng_state()  # new tensors (a task head) are drawn from it
            if placement is not None:
                options.update(_placement_options(model_class, source, revision, placement, device, offload_folder))
            model, heads_reachable, report = _from_pretrained(model_class, source, options, build_with)
            _refuse_unfit_weights(model, report, source)
            stranded = _new_tensors_on_disk(model, report, device) if placement is not None else None
            if stranded is not None:  # load again with those modules on cpu, drawing the same values
                del model
                torch.random.set_rng_state(random_state)
                options.pop("max_memory", None)
                options["device_map"] = stranded
                model, heads_reachable, report = _from_pretrained(model_class, source, options, build_with)
            if placement is not None:
                _draw_new_tensors_on_cpu(model, report, model_class, source, options, build_with, random_state, device)
    except WorkbenchError:
        _remove_folder(offload_folder)
        raise
    except Exception as error:  # noqa: BLE001 -- a broken model folder fails in many ways inside transformers
        _remove_folder(offload_folder)
        raise _load_failure(source, error) from None

    _refuse_small_vocabulary(tokenizer, model, source)
    _ensure_padding(tokenizer, model)
    device_map, offloaded, inputs_at = _settle_placement(model, placement, device, offload_folder)
    if offloaded and changes_weights:
        from workbench.models.placement import module_names

        raise ModelError(
            f"model.device_map offloads {module_names(offloaded)} to cpu/disk; a step that changes weights (finetune "
            "trains them, prune slices them) cannot: accelerate reloads offloaded weights at every forward",
            hint="give this step a placement that fits on the accelerators (model.max_memory), or a smaller model",
        )
    model.eval()
    config = model.config
    layout = HeadLayout(
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
    )
    modules: list[torch.nn.Module] = []
    heads_problem = "" if heads_reachable or attention != ATTENTION_NAME else _unreachable_heads(model)
    heads_via = ""
    # Encoder-decoders keep their refusal: cross-attention would need a numbering of its own.
    if not heads_reachable and attention == ATTENTION_NAME and _loaded_eager(model) and not config.is_encoder_decoder:
        from workbench.models.projection_heads import find_projection_heads, install_projection_heads

        probe = torch.tensor([[tokenizer.pad_token_id or 0] * 2], device=inputs_at or model.device)
        calls = find_projection_heads(model, probe)
        if calls and not _module_count_problem(len(calls), layout.num_layers):
            install_projection_heads(model, calls)
            modules, heads_reachable, heads_problem, heads_via = calls, True, "", "output projection"
    elif heads_reachable:
        heads_via = "attention interface"
        # Not model.device: a placed model's first parameter may be offloaded (on the meta device).
        probe = torch.tensor([[tokenizer.pad_token_id or 0] * 2], device=inputs_at or model.device)
        modules = number_attention_modules(model, probe)
        # Some architectures accept the implementation name but never call it, or not once per layer.
        heads_problem = _module_count_problem(len(modules), layout.num_layers)
        heads_reachable = not heads_problem
    if heads_reachable and device_map is not None:  # observers get each layer's probabilities where the inputs are
        for module in modules:
            module.wb_home = inputs_at
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
        attn_implementation=attention,
        device_map=device_map,
        offloaded=offloaded,
        input_device=inputs_at,
        heads_problem=heads_problem,
        heads_via=heads_via,
    )


def _loaded_eager(model: torch.nn.Module) -> bool:
    return getattr(model.config, "_attn_implementation", None) == "eager"


def _dispatches(model: torch.nn.Module) -> bool:
    """Whether the workbench trusts the model's attention modules to call the attention interface."""
    flagged = bool(getattr(model, "_supports_attention_backend", False))
    return flagged or getattr(model.config, "model_type", None) in CHECKED_DISPATCH


def _trusted_class(model_class: type, source: str, options: dict) -> bool:
    """Whether the class `model_class` (an Auto class) resolves to for `source` gets the workbench attention
    (see `_dispatches`); True when that cannot be told before loading (the load then tells)."""
    import transformers
    from transformers.models.auto.auto_factory import _get_model_class

    try:
        config = transformers.AutoConfig.from_pretrained(source, revision=options.get("revision"))
        concrete = _get_model_class(config, model_class._model_mapping)
    except Exception:  # noqa: BLE001 -- not an Auto class, or a config the load itself will report
        return True
    return bool(getattr(concrete, "_supports_attention_backend", False)) or config.model_type in CHECKED_DISPATCH


def _unreachable_heads(model: torch.nn.Module) -> str:
    """Why a model loaded with the workbench attention is not trusted with it (see `_dispatches`)."""
    try:  # Transformers' own test: its modelling file calls ALL_ATTENTION_FUNCTIONS.get_interface(...)
        calls_interface = bool(type(model)._can_set_attn_implementation())
    except Exception:  # noqa: BLE001 -- a heuristic of transformers; without it, say what is certain
        calls_interface = False
    if calls_interface:
        return (
            "calls Transformers' attention interface but does not declare support for custom attention functions "
            "(`_supports_attention_backend`: e.g. T5, BART), so the workbench does not trust what it hands them"
        )
    return NOT_DISPATCHED


def _module_count_problem(found: int, layers: int) -> str:
    """'' when the attention function was called by one module per layer, else why the heads have no layer."""
    if found == layers:
        return ""
    if found == 0:
        return NOT_DISPATCHED
    if found < layers:
        return (
            f"shares its attention modules across layers ({found} attention modules for {layers} layers, as ALBERT "
            "shares one), so a head belongs to no single layer"
        )
    return (
        f"has {found} attention modules for its {layers} layers (an encoder-decoder's self- and cross-attention?); "
        "the workbench numbers one per layer"
    )


def checkpoint_dtype(source: str, revision: str | None = None) -> str:
    """`dtype: auto`: config.json's dtype (torch_dtype in older files), else the safetensors weights'
    first floating tensor's, else float32 (what Transformers would compute in)."""
    from workbench.models.folder import FolderProblem, read_config

    folder = Path(source).expanduser()
    if folder.is_dir():
        try:
            config = read_config(folder)
        except FolderProblem as problem:
            raise ModelError(f"cannot load model {source}: {problem}") from None
    else:
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(source, revision=revision).to_dict()
        except Exception as error:  # noqa: BLE001 -- the same failure would stop the load itself
            raise ModelError(f"cannot read the config of model '{source}' ({type(error).__name__})") from None
    declared = config.get("dtype") or config.get("torch_dtype")
    name = str(declared).removeprefix("torch.") if declared else _weights_dtype(folder) if folder.is_dir() else None
    name = name or "float32"
    if name not in DTYPES:
        raise ModelError(
            f"model.dtype is auto, and the checkpoint of {source} is {name}, which the workbench does not compute in",
            hint="set model.dtype to float32, float16 or bfloat16",
        )
    return name


def _weights_dtype(folder: Path) -> str | None:
    """The dtype of the first floating tensor in the folder's safetensors (headers only)."""
    import json

    from safetensors import safe_open

    from workbench.models.folder import SAFETENSORS, SAFETENSORS_INDEX

    path = folder / SAFETENSORS
    if not path.is_file() and (folder / SAFETENSORS_INDEX).is_file():
        try:
            shards = sorted(set(json.loads((folder / SAFETENSORS_INDEX).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError):
            return None
        path = folder / shards[0] if shards else path
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():
                kind = weights.get_slice(name).get_dtype()
                if kind.startswith(("F", "BF")):
                    return _SAFETENSORS_DTYPES.get(kind, kind.lower())
    except Exception:  # noqa: BLE001 -- a broken file is reported by the load itself
        return None
    return None


def _placement_options(
    model_class: type, source: str, revision: str | None, placement: Placement, device: torch.device, offload_folder: str | None
) -> dict[str, object]:
    """from_pretrained's device_map, max_memory and offload_folder; an explicit map checked on an empty model."""
    from workbench.models.placement import explicit_map, memory_limits

    options: dict[str, object] = {}
    if placement.strategy is not None:
        options["device_map"] = placement.strategy
        limits = memory_limits(placement, device)
        if limits is not None:
            options["max_memory"] = limits
    else:
        import transformers

        config = transformers.AutoConfig.from_pretrained(source, revision=revision)
        with torch.device("meta"):
            skeleton = model_class.from_config(config)
        options["device_map"] = explicit_map(skeleton, placement.device_map, device)  # type: ignore[arg-type]
    if offload_folder is not None:
        options["offload_folder"] = offload_folder
    return options


def _new_tensors_on_disk(model: torch.nn.Module, report: dict, device: torch.device) -> dict[str, Any] | None:
    """The device map again, with cpu for the modules placed on disk whose tensors the checkpoint lacks.

    Transformers draws tensors missing from the checkpoint (a new task head, a pooler) on the CPU,
    but accelerate reads a disk-offloaded module's weights from the checkpoint's own files, where
    these are not: the first forward would fail (KeyError: 'classifier.weight'). Such modules stay
    on cpu (offloaded there beside a GPU); None when there are none.
    """
    from workbench.models.placement import explicit_map, module_of

    device_map = _placed_map(model)
    missing = [key for key in report.get("missing_keys") or [] if module_of(key, device_map) is not None]
    owners = {key.rpartition(".")[0] for key in missing if device_map[module_of(key, device_map)] == "disk"}  # type: ignore[index]
    if not owners:
        return None
    return explicit_map(model, {**device_map, **dict.fromkeys(owners, "cpu")}, device)


def _drawn_off_cpu(place: Any) -> bool:
    """Whether transformers materialises (and so draws) a missing tensor placed here elsewhere than on the CPU."""
    return place not in ("cpu", "disk")


def _draw_new_tensors_on_cpu(
    model: torch.nn.Module,
    report: dict,
    model_class: type,
    source: str,
    options: dict,
    attention: str,
    random_state: torch.Tensor,
    device: torch.device,
) -> None:
    """Give the tensors the checkpoint lacks, placed on a GPU, the values an unplaced load draws.

    Transformers draws them where the map puts them: on a GPU from the CUDA generator, so a new task
    head would differ from the one a model loaded whole on the CPU (then moved) gets. They are drawn
    again as that load draws them, from the same CPU generator state, by a second load that leaves
    every module on disk (nothing is read into memory) but the ones holding those tensors, on cpu.
    """
    from workbench.models.placement import explicit_map, module_of

    device_map = _placed_map(model)
    missing = [key for key in report.get("missing_keys") or [] if module_of(key, device_map) is not None]
    elsewhere = [key for key in missing if _drawn_off_cpu(device_map[module_of(key, device_map)])]  # type: ignore[index]
    if not elsewhere:
        return
    owners = {key.rpartition(".")[0] for key in missing}
    donor_map = explicit_map(model, {"": "disk", **dict.fromkeys(owners, "cpu")}, device)
    folder = _offload_folder()
    try:
        torch.random.set_rng_state(random_state)
        donor_options = {key: value for key, value in options.items() if key != "max_memory"}
        donor_options.update(device_map=donor_map, offload_folder=folder)
        donor, _, _ = _from_pretrained(model_class, source, donor_options, attention)
        with torch.no_grad():  # all of them: the ones drawn on the CPU came in another order
            for key in missing:
                drawn, target = donor.get_parameter_or_buffer(key), model.get_parameter_or_buffer(key)
                if drawn.device.type != "meta" and target.device.type != "meta":  # tied, or offloaded: as drawn
                    target.copy_(drawn.to(target.device))
        del donor
    finally:
        _remove_folder(folder)


def _settle_placement(
    model: torch.nn.Module, placement: Placement | None, device: torch.device, offload_folder: str | None
) -> tuple[dict[str, Any] | None, tuple[str, ...], torch.device | None]:
    """(device map, offloaded modules, input device) of a placed model; an unplaced one moves to `device`."""
    from workbench.models.placement import input_device, offloaded_modules

    if placement is None:
        model.to(device)
        return None, (), None
    device_map = _placed_map(model)
    if offload_folder is not None:
        if "disk" in device_map.values():
            import shutil
            import weakref

            weakref.finalize(model, shutil.rmtree, offload_folder, True)  # with the model, or at exit
        else:
            _remove_folder(offload_folder)
    inputs_at = input_device(model)
    return device_map, offloaded_modules(device_map, inputs_at), inputs_at


def _placed_map(model: torch.nn.Module) -> dict[str, Any]:
    """Where a placed model's modules are: accelerate's map, or {'': device} when all landed on one."""
    device_map = dict(getattr(model, "hf_device_map", None) or {})  # set by accelerate's dispatch_model
    if not device_map:  # one device and no disk: transformers loaded it there and dispatched nothing
        where = next(model.parameters()).device
        device_map = {"": where.index if where.type == "cuda" and where.index is not None else where.type}
    return device_map


def _offload_folder() -> str:
    """A private folder for weights offloaded to disk (under TMPDIR); removed with the model."""
    import tempfile

    return tempfile.mkdtemp(prefix="workbench-offload-")


def _remove_folder(folder: str | None) -> None:
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


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
    # A pruned model is rebuilt from these files by load_pruned_model, which reads the tensors under the
    # model's own names: not Transformers' original checkpoint layout (Mixtral's per-expert w1/w2/w3).
    layout = {"save_original_format": False} if pruned else {}
    try:
        loaded.model.save_pretrained(folder, safe_serialization=True, **layout)
    finally:
        delattr(config, WORKBENCH_CONFIG_KEY)
    if loaded.head == "sequence-classification":
        _write_labels(folder / "config.json", config)
    loaded.tokenizer.save_pretrained(folder)


def _write_labels(path: Path, config: Any) -> None:
    """Write id2label/label2id into a saved config.json that lacks them.

    Transformers 5 leaves them out when they are its defaults for 2 labels, and a config class with
    another default (BART: num_labels 3) then loads the model back with a classifier of the wrong
    shape. Written explicitly, they give the number of labels back whatever the class's default.
    """
    import json

    saved = json.loads(path.read_text())
    if saved.get("id2label"):
        return
    saved["id2label"] = {str(index): name for index, name in config.id2label.items()}
    saved["label2id"] = {name: int(index) for name, index in config.label2id.items()}
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def _from_pretrained(
    model_class: type, source: str, options: dict, attention: str = ATTENTION_NAME
) -> tuple[torch.nn.Module, bool, dict]:
    """(model, whether it dispatches through the workbench attention, transformers' loading report)."""
    if attention != ATTENTION_NAME:  # asked for by the recipe: its failure is the recipe's to fix
        try:
            model, report = model_class.from_pretrained(source, attn_implementation=attention, **options)
        except (ValueError, ImportError) as error:
            if "attn" not in str(error).lower() and "attention" not in str(error).lower():
                raise
            raise ModelError(
                f"model.attn_implementation '{attention}' cannot load {source}: {_first_line(error)}",
                hint="leave model.attn_implementation unset (sdpa through the workbench function), or use eager or sdpa",
            ) from None
        return model, False, report
    if not _trusted_class(model_class, source, options):
        # Its attention modules would not call the workbench function, or the workbench does not trust what
        # they hand it; some read `config._attn_implementation` themselves and fail on a name they do not know
        # (GPT-Neo, Falcon: KeyError) or build another mask for it (BLOOM: a boolean mask added as if additive).
        # Loaded with Transformers' own eager attention, it computes what Transformers computes, and the workbench
        # reaches its heads through the output projections (probabilities from `output_attentions`).
        model, report = model_class.from_pretrained(source, attn_implementation="eager", **options)
        return model, False, report
    try:
        model, report = model_class.from_pretrained(source, attn_implementation=ATTENTION_NAME, **options)
        return model, _dispatches(model), report
    except KeyError as error:  # an attention-class table indexed by the implementation's name
        if error.args != (ATTENTION_NAME,):
            raise
    except ValueError as error:
        if "attn_implementation" not in str(error) and "attention" not in str(error).lower():
            raise
    # The architecture does not support custom attention functions: load it with its own eager attention.
    model, report = model_class.from_pretrained(source, attn_implementation="eager", **options)
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


def load_pruned_model(
    folder: str | Path,
    model_class: type,
    pruned: Mapping[int | str, Iterable[int]],
    attn_implementation: str,
    dtype: torch.dtype = torch.float32,
) -> torch.nn.Module:
    """Rebuild a pruned model saved by `save_model(..., extra={"pruned_heads": ...})`.

    Builds the architecture from config.json, prunes it to the saved shapes (the saved map fully
    determines them, see workbench/models/pruning.py), then loads the safetensors weights strictly (only
    weights tied to loaded ones may be absent from the files).
    """
    import transformers

    from workbench.models.pruning import _attention_layers, _normalise_map, _record

    folder = Path(folder)
    if attn_implementation == ATTENTION_NAME:
        register_workbench_attention()
    config = transformers.AutoConfig.from_pretrained(folder)
    if hasattr(config, WORKBENCH_CONFIG_KEY):
        delattr(config, WORKBENCH_CONFIG_KEY)
    model = model_class.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    model.eval()
    model, layers = _attention_layers(model)
    saved = _normalise_map(pruned, len(layers), layers[0].num_original_heads)
    for index, heads in saved.items():
        layer = layers[index]
        layer.apply([h for h in layer.head_ids if h not in set(heads)])
    _record(model, layers)
    _load_weights_strictly(model, folder)
    return model


def _load_weights_strictly(model: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    index_file = folder / "model.safetensors.index.json"
    if index_file.is_file():
        files = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ModelError(f"no safetensors weights in {folder}")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: saved {tuple(state[key].shape)}, pruned model {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    loaded_storage = {expected[key].data_ptr() for key in state if key in expected and expected[key].numel()}
    missing = sorted(
        key for key in set(expected) - set(state)
        if expected[key].numel() and expected[key].data_ptr() not in loaded_storage  # tied weights are fine
    )
    if unexpected or mismatched or missing:
        problems = [*(f"unexpected {k}" for k in unexpected[:5]), *mismatched[:5]]
        problems += [f"missing {k}" for k in missing[:5]]
        raise ModelError(f"the pruned model in {folder} does not match its saved weights: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
