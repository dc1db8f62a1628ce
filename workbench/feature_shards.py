"""The feature shards an `extract` step writes into its cache entry, and reading them back.

They live in the entry's `files/features/` folder, one safetensors file per shard of
`shard_size` examples in dataset order (`features-00000.safetensors`, ...). A text shard holds

    layer_<l>   [examples, dim]   pooled text (`pooling: mean | first | last`)
    layer_<l>   [tokens, dim]     every token (`pooling: none`), with
    offsets     [examples + 1]    example i owns rows offsets[i]:offsets[i + 1]

and a word shard (treebanks, code) holds

    layer_<l>   [words, dim]   the kept words of the shard's sentences, in dataset order
    offsets     [sentences + 1] sentence i of the shard owns rows offsets[i]:offsets[i + 1]
    word_ids    [words]        the index of each row's word in its sentence

In a data-parallel run every rank first writes its rows of a shard as a part file
(`features-00000.rank<r>.part.safetensors`, one tensor per example), which rank 0 merges.
`read_features` loads the shards with torch (probes); `workbench.api` maps them with numpy.
Nothing here imports torch at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from workbench.step_result import StepResult

FEATURES_FOLDER = "features"


def shard_name(number: int) -> str:
    return f"features-{number:05d}.safetensors"


def pooled_tensors(layers: list[int], pooling: str):  # type: ignore[no-untyped-def]
    """rows in dataset order ([layers, dim] each, or [layers, tokens, dim]) -> a text shard's tensors."""
    import torch

    def to_tensors(rows):  # type: ignore[no-untyped-def]
        tensors = {}
        for slot, layer in enumerate(layers):
            per_row = [row[slot] for row in rows]
            tensors[f"layer_{layer}"] = torch.cat(per_row) if pooling == "none" else torch.stack(per_row)
        if pooling == "none":
            lengths = torch.tensor([row.shape[1] for row in rows])
            tensors["offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        return {key: value.contiguous() for key, value in tensors.items()}

    return to_tensors


def word_tensors(layers: list[int]):  # type: ignore[no-untyped-def]
    """sentences in dataset order, each ([layers, kept, dim], word ids [kept]) -> a word shard's tensors."""
    import torch

    def to_tensors(sentences):  # type: ignore[no-untyped-def]
        tensors = {f"layer_{layer}": torch.cat([vectors[slot] for vectors, _ in sentences]) for slot, layer in enumerate(layers)}
        lengths = torch.tensor([len(ids) for _, ids in sentences], dtype=torch.long)
        tensors["offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        tensors["word_ids"] = torch.cat([ids.long() for _, ids in sentences])
        return {key: value.contiguous() for key, value in tensors.items()}

    return to_tensors


def part_name(shard: str, rank: int) -> str:
    return shard.replace(".safetensors", f".rank{rank}.part.safetensors")


def part_tensors(rows: dict[int, Any]) -> dict:
    """A rank's rows of one shard, one tensor per example ("<example>", plus "<example>.ids" for words)."""
    tensors = {}
    for index, row in rows.items():
        if isinstance(row, tuple):
            tensors[str(index)], tensors[f"{index}.ids"] = row[0].contiguous(), row[1].contiguous()
        else:
            tensors[str(index)] = row.contiguous()
    return tensors


def part_rows(tensors: dict) -> dict[int, Any]:
    """The inverse of part_tensors."""
    return {
        int(key): (value, tensors[f"{key}.ids"]) if f"{key}.ids" in tensors else value
        for key, value in tensors.items()
        if not key.endswith(".ids")
    }


# --- reading features back ------------------------------------------------------------------------


class WordFeatures:
    """The features an extract step cached, read back: `[layers, rows, dim]` plus where each row came from.

    For word-level shards `sentence[r]` and `word[r]` say which word of which example row r is;
    for pooled text shards every example is one row (`word` is 0).
    """

    def __init__(self, layers: list[int], features: "torch.Tensor", sentence: "torch.Tensor", word: "torch.Tensor"):
        self.layers = layers  # hidden-state indices (0 = embeddings)
        self.features = features  # [layers, rows, dim]
        self.sentence = sentence  # [rows] example index in the dataset
        self.word = word  # [rows] word index in its example

    def __len__(self) -> int:
        return self.features.shape[1]

    def row_lookup(self) -> dict[tuple[int, int], int]:
        """(example, word) -> row."""
        return {(s, w): row for row, (s, w) in enumerate(zip(self.sentence.tolist(), self.word.tolist()))}


def read_features(result: "StepResult", layers: list[int] | None = None) -> WordFeatures:
    """Load an extract step's shards (all its layers, or the given hidden-state indices)."""
    import torch
    from safetensors.torch import load_file

    from workbench.errors import StepError

    data = result.data
    available = list(data["layers"])
    wanted = available if layers is None else layers
    missing = [layer for layer in wanted if layer not in available]
    if missing:
        raise StepError(f"layers {missing} were not extracted (the extract step has layers {available})")
    if data.get("pooling") == "none":
        raise StepError("the extract step kept every token (pooling: none); probes need one vector per word or example")
    per_layer: list[list[torch.Tensor]] = [[] for _ in wanted]
    sentences, word_ids = [], []
    first_example = 0
    for name in data["shards"]:
        shard = load_file(str(result.file(FEATURES_FOLDER) / name))
        for slot, layer in enumerate(wanted):
            per_layer[slot].append(shard[f"layer_{layer}"])
        if "word_ids" in shard:
            offsets = shard["offsets"]
            counts = offsets[1:] - offsets[:-1]  # [sentences in shard]
            sentences.append(torch.arange(first_example, first_example + len(counts)).repeat_interleave(counts))
            word_ids.append(shard["word_ids"])
            first_example += len(counts)
        else:
            rows = shard[f"layer_{available[0]}"].shape[0]
            sentences.append(torch.arange(first_example, first_example + rows))
            word_ids.append(torch.zeros(rows, dtype=torch.long))
            first_example += rows
    features = torch.stack([torch.cat(parts) for parts in per_layer])  # [layers, rows, dim]
    return WordFeatures(wanted, features, torch.cat(sentences), torch.cat(word_ids))
