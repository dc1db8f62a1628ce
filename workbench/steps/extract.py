"""`extract`: hidden states of selected layers, written as safetensors shards to the cache.

Examples are processed in shards of `shard_size` in dataset order (each shard sorted by length
inside for little padding), so a dataset of any size streams through without being held in memory.
Per-layer summary statistics go to the store as layer scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from workbench.steps.base import Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    from workbench.context import StepContext

FEATURES_FOLDER = "features"


class ExtractParams(ModelDatasetParams):
    layers: Literal["all"] | list[int] = Field("all", description="0 = embeddings, L = last layer; negatives count back")
    pooling: Literal["none", "mean", "first", "last"] = "mean"
    shard_size: int = Field(4096, ge=1, description="examples per shard file")
    dtype: Literal["float32", "float16"] = "float32"

    @field_validator("layers")
    @classmethod
    def _distinct(cls, value: str | list[int]) -> str | list[int]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("give a non-empty list of distinct layer numbers")
        return value


class Extract(Step):
    kind = "extract"
    Params = ExtractParams
    produces = frozenset({"features"})
    summary = "Hidden states of selected layers (pooled or per token), sharded in the cache; per-layer statistics."

    def run(self, ctx: "StepContext", params: ExtractParams) -> StepResult:  # type: ignore[override]
        import torch
        from safetensors.torch import save_file

        from workbench.analysis.features import LayerStatistics, pool
        from workbench.data.batching import batch_order, collate, encode_texts
        from workbench.errors import StepError

        loaded = ctx.model(params.model)
        dataset = ctx.dataset(params.dataset)
        if dataset.kind != "text":
            raise StepError(f"extract reads text datasets; '{params.dataset}' is a {dataset.kind} dataset")
        encodings = encode_texts(loaded.tokenizer, dataset.texts(), dataset.spec.max_length)
        num_layers = loaded.layout.num_layers
        layers = resolve_layers(params.layers, num_layers)
        backbone = loaded.model.base_model
        dim = loaded.model.config.hidden_size
        statistics = LayerStatistics(len(layers), dim, loaded.device)
        out_dtype = getattr(torch, params.dtype)
        folder = ctx.output_dir / FEATURES_FOLDER
        folder.mkdir(parents=True)
        shards = []
        with torch.inference_mode(), ctx.bar(len(encodings), "extract") as advance:
            for start in range(0, len(encodings), params.shard_size):
                end = min(start + params.shard_size, len(encodings))
                per_layer: list[list[torch.Tensor]] = [[] for _ in layers]
                order: list[torch.Tensor] = []
                for indices in batch_order(encodings.lengths[start:end], params.batch_size):
                    batch = collate(encodings, [start + i for i in indices], loaded.device)
                    hidden = backbone(**batch.model_inputs(), output_hidden_states=True).hidden_states
                    selected = torch.stack([hidden[layer] for layer in layers])  # [layers, batch, seq, dim]
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
            "dim": dim,
            "examples": len(encodings),
            "tokens": encodings.num_tokens,
            "shards": shards,
        }
        return StepResult(layer_scores=layer_scores, data=data, metrics={"examples": len(encodings)})


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
