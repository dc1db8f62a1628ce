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
words survived so that labels line up (`read_features` gives each row's example and word). The
shard format and its reader are `workbench/feature_shards.py`; the word helpers, `workbench/data/words.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from workbench.data.kinds import kind_for
from workbench.data.words import dataset_words, kept_words, piece_matrix, word_batches
from workbench.feature_shards import FEATURES_FOLDER, part_name, part_rows, part_tensors, pooled_tensors, shard_name, word_tensors
from workbench.steps.base import Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    import torch

    from workbench.context import StepContext
    from workbench.data.loaded import LoadedDataset
    from workbench.models.loading import LoadedModel

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
        if spec is not None and kind_for(spec.path).supports("words") and self.pooling not in WORD_POOLINGS:
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
        if dataset.supports("words"):
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
                shards.append(target.save(len(shards), end - start, rows, pooled_tensors(layers, params.pooling)))
        target.finish(ctx.world, len(shards), pooled_tensors(layers, params.pooling))
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

        name = shard_name(number)
        if self.world.distributed:
            save_file(part_tensors(rows), str(self.folder / part_name(name, self.world.rank)))
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
            name = shard_name(number)
            rows: dict[int, Any] = {}
            for rank in range(world.size):
                part = self.folder / part_name(name, rank)
                rows.update(part_rows(load_file(str(part))))
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


# --- word-level features (treebanks, code) ----------------------------------------------------------


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
            shards.append(target.save(len(shards), end - start, rows, word_tensors(layers)))
    target.finish(ctx.world, len(shards), word_tensors(layers))
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
