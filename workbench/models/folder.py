"""A model folder checked without loading it: its config.json, its weight files, its tokenizer's files.

Cheap enough for `workbench validate` (no torch, no transformers: the list of model types transformers
knows is read from its source with `ast`), and run again before every load, because transformers
either fails on a broken folder with a message about something else, or does not fail at all:

- a config.json that is not JSON fails inside our own metadata read, before transformers says a word;
- a folder without tokenizer files still gives a tokenizer (BertTokenizer with 5 tokens, all [UNK]);
- a truncated safetensors file says "incomplete metadata, file not fully covered".

Weights that do not fit the config (missing layers, another architecture) are only visible once the
model is built: workbench/models/loading.py checks them from transformers' loading report.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
FOREIGN_WEIGHTS = ("tf_model.h5", "flax_model.msgpack", "model.ckpt.index")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on its JSON header
# Aliases under which configs store the same numbers (raw config.json, before attribute_map applies).
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
# Learned position embeddings indexed from padding_idx + 1 (RoBERTa's create_position_ids_from_input_ids):
# these models read max_position_embeddings - pad_token_id - 1 tokens (514 - 1 - 1 = 512 for RoBERTa).
POSITIONS_AFTER_PADDING = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "ibert",
     "roberta-prelayernorm", "mpnet", "luke", "markuplm", "layoutlmv3", "xmod", "bros"}
)


class FolderProblem(Exception):
    """What makes a model folder unloadable, in the user's words."""


def check_folder(folder: Path) -> str | None:
    """The first reason the folder cannot hold a loadable model, or None."""
    try:
        config = read_config(folder)
        _check_config(config)
        _check_weights(folder)
        _check_tokenizer(folder)
    except FolderProblem as problem:
        return str(problem)
    return None


def read_config(folder: Path) -> dict[str, Any]:
    """config.json as a dict; FolderProblem when it is missing, not UTF-8, not JSON or not an object."""
    path = folder / CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FolderProblem(f"no {CONFIG}") from None
    except UnicodeDecodeError as error:
        raise FolderProblem(f"{CONFIG} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise FolderProblem(f"cannot read {CONFIG} ({type(error).__name__})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise FolderProblem(f"{CONFIG} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    if not isinstance(config, dict):
        raise FolderProblem(f"{CONFIG} holds a JSON {type(config).__name__}, not an object")
    return config


def _check_config(config: dict[str, Any]) -> None:
    from workbench.errors import did_you_mean

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise FolderProblem(f"{CONFIG} names no model_type (e.g. \"model_type\": \"bert\")")
    known = known_model_types()
    if known is not None and model_type not in known:
        hint = did_you_mean(model_type, known)
        raise FolderProblem(
            f"{CONFIG} names model_type '{model_type}', which transformers {_transformers_version()} does not know"
            + (f" ({hint})" if hint else "")
        )
    for key in (*LAYER_KEYS, *POSITION_KEYS, *HIDDEN_KEYS, *HEAD_KEYS, "vocab_size", "intermediate_size"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise FolderProblem(f"{CONFIG}: {key} should be a non-negative integer, got a JSON {_json_type(value)}")
    hidden, heads = first_int(config, HIDDEN_KEYS), first_int(config, HEAD_KEYS)
    if hidden and heads and "head_dim" not in config and hidden % heads:
        raise FolderProblem(f"{CONFIG}: the hidden size ({hidden}) is not a multiple of the number of attention heads ({heads})")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "negative number" if value < 0 else "number with a fraction"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def _check_weights(folder: Path) -> None:
    if (folder / SAFETENSORS_INDEX).is_file():
        for shard in _index_shards(folder / SAFETENSORS_INDEX):
            _check_safetensors(folder / shard, f"{shard} (listed in {SAFETENSORS_INDEX})")
        return
    if (folder / SAFETENSORS).is_file():
        _check_safetensors(folder / SAFETENSORS, SAFETENSORS)
        return
    if any((folder / name).is_file() for name in PICKLED):
        return  # loaded with torch's weights_only=True (workbench/models/loading.py)
    foreign = [name for name in FOREIGN_WEIGHTS if (folder / name).is_file()]
    if foreign:
        raise FolderProblem(
            f"only {', '.join(foreign)} (TensorFlow/Flax weights, which transformers 5 cannot load); "
            f"convert them to {SAFETENSORS}"
        )
    raise FolderProblem(f"no weights: expected {SAFETENSORS} (or {SAFETENSORS_INDEX} with its shards, or pytorch_model.bin)")


def _index_shards(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise FolderProblem(f"{index.name} is not a JSON object with a weight_map") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FolderProblem(f"{index.name} has no weight_map")
    return sorted({str(shard) for shard in weight_map.values()})


def _check_safetensors(path: Path, name: str) -> None:
    problem = safetensors_problem(path)
    if problem:
        raise FolderProblem(f"{name} {problem}")


def safetensors_problem(path: Path) -> str | None:
    """Why a file is not a complete safetensors file, from its header alone (8-byte length, JSON, offsets)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header_length = int.from_bytes(handle.read(8), "little")
            if size < 8 or header_length > min(size - 8, MAX_HEADER_BYTES):
                return (
                    f"is truncated or not a safetensors file ({size} bytes; "
                    f"its first 8 bytes announce a {header_length}-byte header)"
                )
            header = json.loads(handle.read(header_length))
    except FileNotFoundError:
        return "is missing"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "is not a safetensors file (its header is not JSON)"
    except OSError as error:
        return f"cannot be read ({type(error).__name__})"
    if not isinstance(header, dict):
        return "is not a safetensors file (its header is not a JSON object)"
    ends = [_data_end(entry) for key, entry in header.items() if key != "__metadata__"]
    if any(end is None for end in ends):
        return "is not a safetensors file (a tensor entry has no data_offsets)"
    needed = 8 + header_length + max([0, *ends])  # type: ignore[type-var]
    if size < needed:
        return f"is truncated: {size} bytes, but its header describes {needed}"
    return None


def _data_end(entry: Any) -> int | None:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets):
        return offsets[1]
    return None


def _check_tokenizer(folder: Path) -> None:
    """A vocabulary must be there: without one transformers builds a tokenizer that maps everything to [UNK]."""
    if not any(_is_vocabulary(path.name) for path in folder.iterdir() if path.is_file()):
        raise FolderProblem(
            "no tokenizer files (tokenizer.json, vocab.txt, vocab.json + merges.txt or a sentencepiece .model)"
        )


def _is_vocabulary(name: str) -> bool:
    return name == "tokenizer.json" or name.startswith("vocab") or name.endswith((".model", ".tiktoken")) or name == "merges.txt"


# --- numbers validate needs -------------------------------------------------------------------------


def first_int(config: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    """The first of `keys` the config sets to an integer (configs of different families name it differently)."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    text = config.get("text_config")
    return first_int(text, keys) if isinstance(text, dict) else None


def num_hidden_layers(config: dict[str, Any]) -> int | None:
    return first_int(config, LAYER_KEYS)


def max_positions(config: dict[str, Any]) -> int | None:
    """How many tokens one example may have: the position table, minus RoBERTa's padding offset."""
    positions = first_int(config, POSITION_KEYS)
    if positions is None:
        return None
    if config.get("model_type") in POSITIONS_AFTER_PADDING:
        pad = config.get("pad_token_id")
        positions -= (pad if isinstance(pad, int) else 1) + 1
    return positions


def config_num_labels(config: dict[str, Any]) -> int:
    """The classes of a checkpoint's head: its id2label, else num_labels, else transformers' default 2."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    value = config.get("num_labels")
    return value if isinstance(value, int) and value >= 1 else 2


# --- the model types transformers knows, without importing it ----------------------------------------


@lru_cache(maxsize=1)
def known_model_types() -> frozenset[str] | None:
    """The keys of transformers' CONFIG_MAPPING_NAMES, read from its source; None if that cannot be done.

    Importing transformers costs seconds and `validate` must not; the mapping is a literal in
    models/auto/auto_mappings.py (transformers 5) or configuration_auto.py (4.x), plus a few updates.
    """
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    auto = Path(list(spec.submodule_search_locations)[0]) / "models" / "auto"
    names: set[str] = set()
    for source in ("auto_mappings.py", "configuration_auto.py"):
        try:
            tree = ast.parse((auto / source).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        names |= _mapping_keys(tree, "CONFIG_MAPPING_NAMES")
    return frozenset(names) if len(names) > 50 else None  # a handful means the layout changed: do not judge


def _mapping_keys(tree: ast.AST, mapping: str) -> set[str]:
    """String keys given to `mapping` in assignments (OrderedDict([...]), {...}) and `.update({...})` calls."""
    keys: set[str] = set()
    for node in ast.walk(tree):
        value = None
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == mapping for t in node.targets):
            value = node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "update"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == mapping
        ):
            value = node
        if value is not None:
            keys |= _literal_keys(value)
    return keys


def _literal_keys(node: ast.AST) -> set[str]:
    keys: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Tuple) and child.elts and isinstance(child.elts[0], ast.Constant):
            if isinstance(child.elts[0].value, str):
                keys.add(child.elts[0].value)
        elif isinstance(child, ast.Dict):
            keys |= {k.value for k in child.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return keys


def _transformers_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return "(not installed)"
