"""`extract`: hidden states of selected layers, written as safetensors shards to the cache.

Examples are processed in shards of `shard_size` in dataset order (each shard sorted by length
inside for little padding), so a dataset of any size streams through without being held in memory.
Per-layer summary statistics go to the store as layer scores.

Text datasets give one vector per example (`pooling: mean | first | last` over its tokens) or one
per token (`pooling: none`). Treebanks (`path: conllu`) and code (`path: python_code`, whose words
are the syntax-tree leaves) give one vector per WORD, pooled from its sub-tokens with
`workbench.data.alignment`: `first` = the word's first sub-token, `mean` = the mean of its
sub-tokens, `last` = its last sub-token; `none` is refused. A shard of such a dataset holds

    layer_<l>   [words, dim]   the kept words of the shard's sentences, in dataset order
    offsets     [sentences + 1] sentence i of the shard owns rows offsets[i]:offsets[i + 1]
    word_ids    [words]        the index of each row's word in its sentence

Words are kept when all their sub-tokens survive `max_length` (the leading words of a sentence)
and they have at least one sub-token; the rest are dropped and counted, and `word_ids` says which
words survived so that labels line up (`read_features` gives each row's example and word).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from workbench.steps.base import Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    import torch

    from workbench.context import StepContext
    from workbench.data.sources import LoadedDataset
    from workbench.models.loading import LoadedModel

FEATURES_FOLDER = "features"
WORD_DATASETS = {"conllu": "treebank", "python_code": "code"}  # recipe `path:` -> LoadedDataset.kind
WORD_POOLINGS = ("first", "mean", "last")


class ExtractParams(ModelDatasetParams):
    layers: Literal["all"] | list[int] = Field("all", description="0 = embeddings, L = last layer; negatives count back")
    pooling: Literal["none", "mean", "first", "last"] = Field(
        "mean",
        description="none keeps every token; mean/first/last give one vector per example "
        "(per word for treebanks and code: the mean, first or last of its sub-tokens)",
    )
    shard_size: int = Field(4096, ge=1, description="examples per shard file")
    dtype: Literal["float32", "float16"] = Field("float32", description="of the stored features")

    @field_validator("layers")
    @classmethod
    def _distinct(cls, value: str | list[int]) -> str | list[int]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("give a non-empty list of distinct layer numbers")
        return value

    def check(self, recipe):  # type: ignore[no-untyped-def]
        spec = recipe.datasets.get(self.dataset)
        if spec is not None and spec.path in WORD_DATASETS and self.pooling not in WORD_POOLINGS:
            return [("pooling", f"{spec.path} datasets give one vector per word: use first, mean or last sub-token")]
        return []


class Extract(Step):
    kind = "extract"
    Params = ExtractParams
    produces = frozenset({"features"})
    summary = "Hidden states of selected layers (pooled or per token), sharded in the cache; per-layer statistics."

    def run(self, ctx: "StepContext", params: ExtractParams) -> StepResult:  # type: ignore[override]
        import torch
        from safetensors.torch import save_file

        from workbench.analysis.features import pool
        from workbench.data.batching import batch_order, collate, encode_dataset

        loaded = ctx.model(params.model)
        dataset = ctx.dataset(params.dataset)
        if dataset.kind in ("treebank", "code"):
            return _extract_words(ctx, params, loaded, dataset)
        encodings = encode_dataset(loaded.tokenizer, dataset, token_types=loaded.uses_token_types)
        target = HiddenStates.prepare(ctx, params, loaded)
        layers, statistics, out_dtype, folder = target.layers, target.statistics, target.dtype, target.folder
        shards = []
        with torch.inference_mode(), ctx.bar(len(encodings), "extract") as advance:
            for start in range(0, len(encodings), params.shard_size):
                end = min(start + params.shard_size, len(encodings))
                per_layer: list[list[torch.Tensor]] = [[] for _ in layers]
                order: list[torch.Tensor] = []
                for indices in batch_order(encodings.lengths[start:end], params.batch_size):
                    batch = collate(encodings, [start + i for i in indices], loaded.device)
                    selected = target.select(batch.model_inputs())  # [layers, batch, seq, dim]
                    if params.pooling == "none":
                        real = batch.attention_mask.bool()
                        vectors = selected[:, real]  # [layers, tokens, dim]
                        for row in range(len(batch)):
                            for slot in range(len(layers)):
                                per_layer[slot].append(selected[slot, row, real[row]].to("cpu", out_dtype))
                    else:
                        vectors = torch.stack([pool(h, batch.attention_mask, params.pooling) for h in selected])
                        for slot in range(len(layers)):
                            per_layer[slot].extend(vectors[slot].to("cpu", out_dtype).unbind(0))
                    statistics.add(vectors)
                    order.append(batch.indices - start)
                    advance(len(batch))
                shards.append(_write_shard(folder, len(shards), per_layer, torch.cat(order), layers, params.pooling, save_file))
        layer_scores = {name: values for name, values in statistics.result().items()}
        data = {
            "layers": layers,
            "pooling": params.pooling,
            "dim": target.dim,
            "examples": len(encodings),
            "tokens": encodings.num_tokens,
            "shards": shards,
        }
        return StepResult(layer_scores=layer_scores, data=data, metrics={"examples": len(encodings)})


@dataclass
class HiddenStates:
    """What both extract paths share: which hidden states to keep, their statistics, where shards go."""

    layers: list[int]  # hidden-state indices, 0 = embeddings
    backbone: Any
    dim: int
    statistics: Any  # LayerStatistics over the kept layers
    dtype: Any  # of the stored features
    folder: Path

    @classmethod
    def prepare(cls, ctx: "StepContext", params: ExtractParams, loaded: "LoadedModel") -> "HiddenStates":
        import torch

        from workbench.analysis.features import LayerStatistics

        layers = resolve_layers(params.layers, loaded.layout.num_layers)
        dim = loaded.model.config.hidden_size
        folder = ctx.output_dir / FEATURES_FOLDER
        folder.mkdir(parents=True)
        statistics = LayerStatistics(len(layers), dim, loaded.device)
        return cls(layers, loaded.model.base_model, dim, statistics, getattr(torch, params.dtype), folder)

    def select(self, inputs: dict) -> "torch.Tensor":
        """The kept layers' hidden states of one batch, [layers, batch, seq, dim]."""
        import torch

        hidden = self.backbone(**inputs, output_hidden_states=True).hidden_states
        return torch.stack([hidden[layer] for layer in self.layers])


def resolve_layers(requested: str | list[int], num_layers: int) -> list[int]:
    """'all' or a list with negatives -> hidden-state indices 0..num_layers (0 = embeddings)."""
    from workbench.errors import StepError

    if requested == "all":
        return list(range(num_layers + 1))
    resolved = []
    for layer in requested:
        index = layer + num_layers + 1 if layer < 0 else layer
        if not 0 <= index <= num_layers:
            raise StepError(f"layer {layer} does not exist: the model has layers 0..{num_layers} (0 = embeddings)")
        resolved.append(index)
    return resolved


def _write_shard(folder, number, per_layer, order, layers, pooling, save_file):  # type: ignore[no-untyped-def]
    """Put the shard's examples back in dataset order and write one safetensors file."""
    import torch

    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))  # rank[i] = where example i was produced
    tensors = {}
    for slot, layer in enumerate(layers):
        rows = [per_layer[slot][int(position)] for position in rank]
        if pooling == "none":
            tensors[f"layer_{layer}"] = torch.cat(rows)
        else:
            tensors[f"layer_{layer}"] = torch.stack(rows)
    if pooling == "none":
        lengths = torch.tensor([len(row) for row in (per_layer[0][int(p)] for p in rank)])
        tensors["offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    name = f"features-{number:05d}.safetensors"
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(folder / name))
    return name


# --- word-level features (treebanks, code) ----------------------------------------------------------


def dataset_words(dataset: "LoadedDataset") -> list[list[str]]:
    """The pre-split words of every example: a treebank's syntactic words, or code's syntax-tree leaves."""
    if dataset.kind == "treebank":
        return [list(sentence.words) for sentence in dataset.sentences]
    if dataset.kind == "code":
        return [list(example.tokens) for example in dataset.examples]
    from workbench.errors import StepError

    raise StepError(f"dataset '{dataset.name}' is a {dataset.kind} dataset; words come from treebanks or code")


def word_batches(words: list[list[str]], indices: list[int], batch_size: int) -> list[list[int]]:
    """`indices` cut into batches of similar length (longest first), for little padding."""
    ordered = sorted(indices, key=lambda i: (-(len(words[i]) + sum(len(w) for w in words[i]) // 4), i))
    return [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]


def kept_words(aligned: Any, row: int) -> "torch.Tensor":
    """Indices of the words of batch row `row` that kept all their sub-tokens and have at least one."""
    count = int(aligned.num_words[row])
    return aligned.word_has_tokens[row, :count].nonzero().flatten()


def piece_matrix(word_index: "torch.Tensor", num_words: int, pooling: str) -> "torch.Tensor":
    """[batch, words, seq] pooling matrix: first, mean or last sub-token of each word."""
    from workbench.data.alignment import word_pooling_matrix

    if pooling != "last":
        return word_pooling_matrix(word_index, num_words, pooling)  # type: ignore[arg-type]
    member = word_pooling_matrix(word_index, num_words, "sum")  # [batch, words, seq]
    return member * (member.flip(-1).cumsum(-1).flip(-1) == 1)


def _extract_words(
    ctx: "StepContext", params: ExtractParams, loaded: "LoadedModel", dataset: "LoadedDataset"
) -> StepResult:
    """One vector per kept word (sub-tokens pooled), sharded in dataset order with per-sentence offsets."""
    import torch
    from safetensors.torch import save_file

    from workbench.data.alignment import encode_words
    from workbench.errors import StepError

    if params.pooling not in WORD_POOLINGS:
        raise StepError(
            f"pooling '{params.pooling}' does not give word features; '{params.dataset}' is a {dataset.kind} dataset",
            hint="use pooling: first (first sub-token), mean (mean of sub-tokens) or last (last sub-token)",
        )
    words = dataset_words(dataset)
    max_length = dataset.spec.max_length
    target = HiddenStates.prepare(ctx, params, loaded)
    layers, statistics, out_dtype, folder = target.layers, target.statistics, target.dtype, target.folder
    shards: list[str] = []
    counts = {"words": 0, "kept": 0, "truncated": 0, "empty": 0, "sentences_truncated": 0}
    with torch.inference_mode(), ctx.bar(len(words), "extract words") as advance:
        for start in range(0, len(words), params.shard_size):
            end = min(start + params.shard_size, len(words))
            rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # sentence -> ([layers, kept, dim], word ids)
            for indices in word_batches(words, list(range(start, end)), params.batch_size):
                aligned = encode_words(loaded.tokenizer, [words[i] for i in indices], max_length)
                inputs = {name: value.to(loaded.device) for name, value in aligned.model_inputs().items()}
                selected = target.select(inputs)  # [layers, batch, seq, dim]
                pooling = piece_matrix(aligned.word_index, aligned.max_words, params.pooling).to(selected)
                pooled = torch.einsum("bws,lbsd->lbwd", pooling, selected)  # [layers, batch, words, dim]
                for row, index in enumerate(indices):
                    ids = kept_words(aligned, row)  # [kept]
                    vectors = pooled[:, row, ids.to(pooled.device)]  # [layers, kept, dim]
                    statistics.add(vectors)
                    rows[index] = (vectors.to("cpu", out_dtype), ids)
                    total, whole = len(words[index]), int(aligned.num_words[row])
                    counts["words"] += total
                    counts["kept"] += len(ids)
                    counts["truncated"] += total - whole
                    counts["empty"] += whole - len(ids)
                    counts["sentences_truncated"] += whole < total
                advance(len(indices))
            shards.append(_write_word_shard(folder, len(shards), [rows[i] for i in range(start, end)], layers, save_file))
    if counts["kept"] == 0:
        raise StepError(f"no word of '{params.dataset}' kept its sub-tokens", hint="raise the dataset's max_length")
    if counts["truncated"]:
        ctx.log(
            f"{counts['truncated']} words in {counts['sentences_truncated']} sentences were cut by "
            f"max_length={max_length} and dropped"
        )
    data = {
        "layers": layers,
        "pooling": params.pooling,
        "dim": target.dim,
        "unit": "word",
        "dataset_kind": dataset.kind,
        "examples": len(words),
        "words": counts["words"],
        "words_kept": counts["kept"],
        "words_truncated": counts["truncated"],
        "words_without_tokens": counts["empty"],
        "sentences_truncated": counts["sentences_truncated"],
        "max_length": max_length,
        "shards": shards,
    }
    metrics = {
        "examples": len(words),
        "words_kept": counts["kept"],
        "words_dropped": counts["words"] - counts["kept"],
    }
    return StepResult(layer_scores=statistics.result(), data=data, metrics=metrics)


def _write_word_shard(folder, number, sentences, layers, save_file):  # type: ignore[no-untyped-def]
    """sentences: per sentence of the shard, in dataset order, ([layers, kept, dim], word ids [kept])."""
    import torch

    tensors = {f"layer_{layer}": torch.cat([vectors[slot] for vectors, _ in sentences]) for slot, layer in enumerate(layers)}
    lengths = torch.tensor([len(ids) for _, ids in sentences], dtype=torch.long)
    tensors["offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    tensors["word_ids"] = torch.cat([ids.long() for _, ids in sentences])
    name = f"features-{number:05d}.safetensors"
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(folder / name))
    return name


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


def read_features(result: StepResult, layers: list[int] | None = None) -> WordFeatures:
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
