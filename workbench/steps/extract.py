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

        from workbench.analysis.features import pool
        from workbench.data.batching import batch_order, collate, encode_dataset

        loaded = ctx.model(params.model, head_access=False)
        dataset = ctx.dataset(params.dataset)
        if dataset.kind in ("treebank", "code"):
            return _extract_words(ctx, params, loaded, dataset)
        encodings = encode_dataset(loaded.tokenizer, dataset, token_types=loaded.uses_token_types)
        target = HiddenStates.prepare(ctx, params, loaded)
        layers, statistics, out_dtype = target.layers, target.statistics, target.dtype
        # Shards in dataset order, each cut into length-sorted batches as in one process; a rank
        # takes its share of every shard's batches (the same batches, so the same features).
        plan = [
            (start, end, ctx.world.shard([[start + i for i in batch] for batch in batch_order(encodings.lengths[start:end], params.batch_size)]))
            for start, end in _shard_ranges(len(encodings), params.shard_size)
        ]
        shards = []
        with torch.inference_mode(), ctx.bar(sum(len(i) for _, _, mine in plan for i in mine), "extract") as advance:
            for start, end, batches in plan:
                rows: dict[int, torch.Tensor] = {}  # example in the shard -> [layers, dim] or [layers, tokens, dim]
                for indices in batches:
                    batch = collate(encodings, indices, loaded.device)
                    selected = target.select(batch.model_inputs())  # [layers, batch, seq, dim]
                    if params.pooling == "none":
                        real = batch.attention_mask.bool()
                        vectors = selected[:, real]  # [layers, tokens, dim]
                        for row, index in enumerate(indices):
                            rows[index - start] = selected[:, row, real[row]].to("cpu", out_dtype)
                    else:
                        vectors = torch.stack([pool(h, batch.attention_mask, params.pooling) for h in selected])
                        for row, index in enumerate(indices):
                            rows[index - start] = vectors[:, row].to("cpu", out_dtype)
                    statistics.add(vectors)
                    advance(len(batch))
                shards.append(target.save(len(shards), end - start, rows, _pooled_tensors(layers, params.pooling)))
        target.finish(ctx.world, len(shards), _pooled_tensors(layers, params.pooling))
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

    world: Any  # workbench.distributed.World: whose shard files are parts to be merged

    @classmethod
    def prepare(cls, ctx: "StepContext", params: ExtractParams, loaded: "LoadedModel") -> "HiddenStates":
        import torch

        from workbench.analysis.features import LayerStatistics

        layers = resolve_layers(params.layers, loaded.layout.num_layers)
        dim = loaded.model.config.hidden_size
        folder = ctx.shared_output_dir / FEATURES_FOLDER  # every rank writes its parts into rank 0's folder
        folder.mkdir(parents=True, exist_ok=True)
        statistics = LayerStatistics(len(layers), dim, loaded.device)
        return cls(layers, loaded.model.base_model, dim, statistics, getattr(torch, params.dtype), folder, ctx.world)

    def save(self, number: int, size: int, rows: dict[int, Any], to_tensors: Any) -> str:
        """Write shard `number` (examples 0..size-1 of it, all in `rows`); in a data-parallel run,
        this rank's part of it (the rows it computed), merged by rank 0 in `finish`."""
        from safetensors.torch import save_file

        name = f"features-{number:05d}.safetensors"
        if self.world.distributed:
            save_file(_part_tensors(rows), str(self.folder / _part_name(name, self.world.rank)))
        else:
            save_file(to_tensors([rows[i] for i in range(size)]), str(self.folder / name))
        return name

    def finish(self, world: Any, shards: int, to_tensors: Any) -> None:
        """Add up the statistics of every rank; rank 0 merges the ranks' parts into the shards."""
        from safetensors.torch import load_file, save_file

        self.statistics.combine(world)
        if not world.distributed:
            return
        world.barrier()  # every part is written
        if not world.is_main:
            return
        for number in range(shards):
            name = f"features-{number:05d}.safetensors"
            rows: dict[int, Any] = {}
            for rank in range(world.size):
                part = self.folder / _part_name(name, rank)
                rows.update(_part_rows(load_file(str(part))))
                part.unlink()
            save_file(to_tensors([rows[i] for i in sorted(rows)]), str(self.folder / name))

    def select(self, inputs: dict) -> "torch.Tensor":
        """The kept layers' hidden states of one batch, [layers, batch, seq, dim]."""
        import torch

        hidden = self.backbone(**inputs, output_hidden_states=True).hidden_states
        # On a model spread over devices each layer's states stay where the layer ran: gather them.
        return torch.stack([hidden[layer].to(inputs["input_ids"].device) for layer in self.layers])


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


def _shard_ranges(total: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, total)) for start in range(0, total, shard_size)]


def _pooled_tensors(layers: list[int], pooling: str):  # type: ignore[no-untyped-def]
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


def _word_tensors(layers: list[int]):  # type: ignore[no-untyped-def]
    """sentences in dataset order, each ([layers, kept, dim], word ids [kept]) -> a word shard's tensors."""
    import torch

    def to_tensors(sentences):  # type: ignore[no-untyped-def]
        tensors = {f"layer_{layer}": torch.cat([vectors[slot] for vectors, _ in sentences]) for slot, layer in enumerate(layers)}
        lengths = torch.tensor([len(ids) for _, ids in sentences], dtype=torch.long)
        tensors["offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        tensors["word_ids"] = torch.cat([ids.long() for _, ids in sentences])
        return {key: value.contiguous() for key, value in tensors.items()}

    return to_tensors


def _part_name(shard: str, rank: int) -> str:
    return shard.replace(".safetensors", f".rank{rank}.part.safetensors")


def _part_tensors(rows: dict[int, Any]) -> dict:
    """A rank's rows of one shard, one tensor per example ("<example>", plus "<example>.ids" for words)."""
    tensors = {}
    for index, row in rows.items():
        if isinstance(row, tuple):
            tensors[str(index)], tensors[f"{index}.ids"] = row[0].contiguous(), row[1].contiguous()
        else:
            tensors[str(index)] = row.contiguous()
    return tensors


def _part_rows(tensors: dict) -> dict[int, Any]:
    """The inverse of _part_tensors."""
    return {
        int(key): (value, tensors[f"{key}.ids"]) if f"{key}.ids" in tensors else value
        for key, value in tensors.items()
        if not key.endswith(".ids")
    }


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
    layers, statistics, out_dtype = target.layers, target.statistics, target.dtype
    plan = [
        (start, end, ctx.world.shard(word_batches(words, list(range(start, end)), params.batch_size)))
        for start, end in _shard_ranges(len(words), params.shard_size)
    ]
    shards: list[str] = []
    counts = {"words": 0, "kept": 0, "truncated": 0, "empty": 0, "sentences_truncated": 0}
    with torch.inference_mode(), ctx.bar(sum(len(i) for _, _, mine in plan for i in mine), "extract words") as advance:
        for start, end, batches in plan:
            rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # sentence in shard -> ([layers, kept, dim], word ids)
            for indices in batches:
                aligned = encode_words(loaded.tokenizer, [words[i] for i in indices], max_length)
                inputs = {name: value.to(loaded.device) for name, value in aligned.model_inputs().items()}
                selected = target.select(inputs)  # [layers, batch, seq, dim]
                pooling = piece_matrix(aligned.word_index, aligned.max_words, params.pooling).to(selected)
                pooled = torch.einsum("bws,lbsd->lbwd", pooling, selected)  # [layers, batch, words, dim]
                for row, index in enumerate(indices):
                    ids = kept_words(aligned, row)  # [kept]
                    vectors = pooled[:, row, ids.to(pooled.device)]  # [layers, kept, dim]
                    statistics.add(vectors)
                    rows[index - start] = (vectors.to("cpu", out_dtype), ids)
                    total, whole = len(words[index]), int(aligned.num_words[row])
                    counts["words"] += total
                    counts["kept"] += len(ids)
                    counts["truncated"] += total - whole
                    counts["empty"] += whole - len(ids)
                    counts["sentences_truncated"] += whole < total
                advance(len(indices))
            shards.append(target.save(len(shards), end - start, rows, _word_tensors(layers)))
    target.finish(ctx.world, len(shards), _word_tensors(layers))
    counts = {name: sum(part[name] for part in ctx.world.gather_by_rank(counts)) for name in counts}
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
