"""A pruned model as a plain dense checkpoint that any `transformers` install loads, no workbench needed.

The compact form (workbench/models/pruning.py) removes heads for real: smaller projection weights
and a `workbench.pruned_heads` map in config.json, which only `load_model` understands. The dense
form puts every projection back to its full shape and zeroes what the pruned heads owned:

  * BERT / RoBERTa / ELECTRA: the head's rows of `attention.self.query/key/value` (weights and
    biases) and its columns of `attention.output.dense`;
  * GPT-2: the head's columns in each q | k | v block of the fused `c_attn` Conv1D (weight
    [in, 3 * heads * head_dim]) and its rows of `c_proj` (weight [heads * head_dim, out]);
  * Llama / Qwen2 / Mistral (grouped-query attention included), DistilBERT: the head's rows of
    `q_proj` and columns of `o_proj`; the rows of `k_proj/v_proj` of every K/V group that lost all
    its query heads.

A zeroed head still attends (uniformly: its query is zero) but its output-projection columns are
zero, so it adds exactly nothing: the dense model computes what the pruned one does, up to float
summation order. That is checked on a probe batch before anything is written. The family is
recognised from the attention modules (pruning.py's adapters), never from a name; others are refused.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from workbench.errors import ModelError

if TYPE_CHECKING:
    from workbench.db.records import RunDetail
    from workbench.store_location import StoreLocation

MODEL_FOLDER = "model"
MAX_DIFFERENCE = 1e-4  # on the probe batch; float32 reordering gives ~1e-7
SUPPORTED = "every layout structural pruning supports (see README.md's model table)"


@dataclass(frozen=True)
class DenseExport:
    path: Path
    family: str
    pruned_heads: dict[int, list[int]] = field(default_factory=dict)
    max_abs_difference: float = 0.0  # dense vs pruned outputs on the probe batch


def export_dense_model(
    run: "RunDetail", step: str, output_dir: Path, *, store: "StoreLocation | Path", overwrite: bool = False
) -> DenseExport:
    """The model a step of `run` produced (prune, finetune) written to `output_dir` as a dense checkpoint."""
    from workbench.cache import Cache, CorruptEntry
    from workbench.store_location import StoreLocation

    record = run.step(step)
    if record is None:
        known = ", ".join(s.step_id for s in run.steps)
        raise ModelError(f"run {run.summary.id} has no step '{step}'", hint=f"its steps: {known}")
    cache = Cache(store.cache_dir if isinstance(store, StoreLocation) else Path(store) / "cache")
    if not cache.has(record.key):
        raise ModelError(
            f"step '{step}': its cache entry {record.key[:12]} is not in the store's cache",
            hint="run the recipe again to recompute it",
        )
    try:
        cache.verify(record.key)  # a damaged model is not exported
    except CorruptEntry as error:
        raise ModelError(f"step '{step}': {error}", hint="`workbench verify`, then run the recipe again") from None
    folder = cache.entry_dir(record.key) / "files" / MODEL_FOLDER
    if not (folder / "config.json").is_file():
        raise ModelError(f"step '{step}' ({record.kind}) produced no model")
    return write_dense_model(folder, Path(output_dir), overwrite=overwrite)


def write_dense_model(pruned_folder: Path, output_dir: Path, *, overwrite: bool = False) -> DenseExport:
    """Read a model folder the workbench saved (pruned or not) and write its dense form to `output_dir`."""
    from workbench.models.loading import WORKBENCH_CONFIG_KEY, load_model

    _check_output(output_dir, overwrite)
    loaded = load_model(str(pruned_folder), head="base")  # the saved head wins over "base"
    pruned = loaded.model
    family, replaced = _dense_parameters(loaded)
    state = pruned.state_dict()
    names = {id(parameter): name for name, parameter in pruned.named_parameters(remove_duplicate=False)}
    for parameter, value in replaced:
        state[names[id(parameter)]] = value

    import transformers

    config = transformers.AutoConfig.from_pretrained(pruned_folder)
    if hasattr(config, WORKBENCH_CONFIG_KEY):
        delattr(config, WORKBENCH_CONFIG_KEY)
    dense = type(pruned)(config)  # transformers' own modules, default attention: nothing of ours
    missing, unexpected = dense.load_state_dict(state, strict=False)
    missing = [key for key in missing if not _tied(dense, key)]
    if missing or unexpected:
        raise ModelError(f"the dense model does not take the pruned model's weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    dense.eval()
    difference = _max_difference(pruned, dense, loaded.tokenizer)
    if difference > MAX_DIFFERENCE:
        raise ModelError(f"the dense model differs from the pruned one by {difference:.3g} on a probe batch; nothing was written")
    partial = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        dense.save_pretrained(partial, safe_serialization=True)
        loaded.tokenizer.save_pretrained(partial)
        _clean_config(partial / "config.json")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        partial.replace(output_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    from workbench.models.pruning import pruned_heads

    return DenseExport(output_dir, family, pruned_heads(loaded), difference)


def _check_output(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ModelError(f"{output_dir} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ModelError(f"{output_dir} exists and is not empty", hint="pass --force to replace it, or choose another -o")


def _dense_parameters(loaded: Any) -> tuple[str, list[tuple[nn.Parameter, torch.Tensor]]]:
    """(layouts, [(parameter of the pruned model, its full-shape value with zeros for pruned heads)]).

    Each layout adapter says where every head sits in its weights (workbench/models/families/): the
    features of the heads left, at their original positions, are scattered into full-width zeros."""
    from workbench.models import pruning
    from workbench.models.families import Heads

    try:
        _, layers = pruning._attention_layers(loaded, for_pruning=True)  # the adapters pruning used
    except ModelError as error:
        raise ModelError(f"cannot export {type(loaded.model).__name__} as a dense model: {error.message}", hint=f"supported: {SUPPORTED}") from None
    replaced: list[tuple[nn.Parameter, torch.Tensor]] = []
    layouts = set()
    for layer in layers:
        adapter = layer.adapter
        layouts.add(adapter.layout)
        total, kv_total = layer.num_original_heads, layer.num_original_heads // layer.rep
        left = Heads(layer.head_ids, layer.groups(layer.head_ids), total, kv_total, adapter.head_dim)
        full = Heads(list(range(total)), list(range(kv_total)), total, kv_total, adapter.head_dim)
        for piece in adapter.slices():
            parameter = getattr(piece.owner, piece.name)
            width = len(piece.features(full))
            replaced.append((parameter, _scatter(parameter, piece.dim, piece.features(left), width)))
    return "/".join(sorted(layouts)), replaced


def _scatter(tensor: torch.Tensor, dim: int, index: torch.Tensor, full: int) -> torch.Tensor:
    """A zero tensor `full` wide along `dim`, with `tensor`'s slices at positions `index`."""
    shape = list(tensor.shape)
    shape[dim] = full
    out = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
    return out.index_copy_(dim, index.to(tensor.device), tensor.detach())


def _tied(model: nn.Module, key: str) -> bool:
    """A parameter absent from the state dict because it is tied to one that is there (lm_head.weight)."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    return key in tied


@torch.no_grad()
def _max_difference(pruned: nn.Module, dense: nn.Module, tokenizer: Any) -> float:
    """Largest |output difference| on a fixed probe batch (with padding, so masks are exercised)."""
    generator = torch.Generator().manual_seed(0)
    vocab = min(int(getattr(pruned.config, "vocab_size", 100) or 100), len(tokenizer))
    ids = torch.randint(low=min(5, vocab - 1), high=vocab, size=(2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    ids[1, 8:] = tokenizer.pad_token_id or 0
    a = _output(pruned, ids, mask)
    b = _output(dense, ids, mask)
    keep = mask.bool()
    if a.dim() == 3 and a.shape[:2] == ids.shape:  # per-token outputs: compare the real tokens only
        a, b = a[keep], b[keep]
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _output(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
    value = getattr(out, "logits", None)
    if value is None:
        value = out.last_hidden_state
    return value.detach().cpu()


def _clean_config(path: Path) -> None:
    """No trace of the workbench in config.json: neither its metadata key nor its attention name."""
    config = json.loads(path.read_text())
    changed = config.pop("workbench", None) is not None
    for key in ("attn_implementation", "_attn_implementation"):
        if config.get(key) == "workbench":
            config.pop(key)
            changed = True
    if changed:
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
