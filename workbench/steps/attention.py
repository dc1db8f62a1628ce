"""`attention`: per-head attention statistics streamed over a dataset (Clark et al. 2019).

Attention weights are observed inside the workbench attention function batch by batch and folded
into running sums, so memory does not grow with the number of examples. `save_maps: N` also keeps
the full maps of the first N examples, for plots, as [layers, heads, seq, seq] per example.

On a structurally pruned model (`model: <a prune step>`) heads keep their ORIGINAL ids: statistics of
pruned heads are NaN, their saved maps are zeros, and `data.pruned_heads` lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from workbench.steps.base import Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    from workbench.context import StepContext

MAPS_FILE = "attention_maps.safetensors"


class AttentionParams(ModelDatasetParams):
    save_maps: int = Field(0, ge=0, le=10_000, description="keep the full maps of the first N examples")


class Attention(Step):
    kind = "attention"
    version = 2  # saved maps of pruned models at the original head ids; data.pruned_heads
    Params = AttentionParams
    summary = (
        "Per-head attention statistics (entropy; attention to self, previous, next, first/[CLS], [SEP]/EOS, "
        "punctuation) streamed over the dataset; optional full maps of the first examples."
    )

    def run(self, ctx: "StepContext", params: AttentionParams) -> StepResult:  # type: ignore[override]
        import torch
        from safetensors.torch import save_file

        from workbench.analysis.attention_stats import HeadStatistics
        from workbench.data.batching import batch_order, collate, encode_texts
        from workbench.models.attention import head_hooks
        from workbench.models.pruning import heads_json, pruned_heads

        loaded = ctx.model(params.model)
        loaded.require_heads("the attention step")
        dataset = ctx.dataset(params.dataset, "text")
        tokenizer = loaded.tokenizer
        encodings = encode_texts(tokenizer, dataset.texts(), dataset.spec.max_length, token_types=loaded.uses_token_types)
        statistics = HeadStatistics(*loaded.layout.shape, device=loaded.device)
        separators = torch.tensor(separator_ids(tokenizer), device=loaded.device)
        punctuation = torch.tensor(punctuation_ids(tokenizer), device=loaded.device)
        maps = MapKeeper(params.save_maps, *loaded.layout.shape)

        order = batch_order(encodings.lengths, params.batch_size)
        with torch.inference_mode(), head_hooks(observers=[statistics.observe, maps.observe]):
            for indices in ctx.track(order, len(order), "attention"):
                batch = collate(encodings, indices, loaded.device)
                statistics.set_batch(
                    batch.attention_mask,
                    torch.isin(batch.input_ids, separators),
                    torch.isin(batch.input_ids, punctuation),
                )
                maps.set_batch(batch.indices, batch.attention_mask.sum(1))
                loaded.model(**batch.model_inputs())

        result = StepResult(head_scores=statistics.result(), metrics={"examples": len(encodings)})
        pruned = pruned_heads(loaded)
        if pruned:  # their statistics are NaN and their saved maps zeros
            result.data["pruned_heads"] = heads_json(pruned)
        if maps.kept:
            save_file(maps.tensors(), str(ctx.output_dir / MAPS_FILE))
            result.data["maps"] = {
                str(index): tokenizer.convert_ids_to_tokens(encodings.input_ids[index]) for index in sorted(maps.kept)
            }
        return result


class MapKeeper:
    """Keeps the attention maps of examples 0..n-1, as [layers, heads, seq, seq] each.

    Heads are the ORIGINAL heads: a structurally pruned layer observes fewer heads, with their
    original ids; each map goes to its id, and the maps of pruned heads stay zero.
    """

    def __init__(self, n: int, num_layers: int, num_heads: int):
        self.n = n
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.kept: dict[int, list] = {}
        self._rows: list[tuple[int, int, int]] = []  # (row in batch, example index, length)

    def set_batch(self, indices, lengths) -> None:  # type: ignore[no-untyped-def]
        self._rows = [
            (row, int(index), int(length))
            for row, (index, length) in enumerate(zip(indices.tolist(), lengths.tolist()))
            if index < self.n
        ]

    def observe(self, layer: int, head_ids, probs) -> None:  # type: ignore[no-untyped-def]
        import torch

        ids = head_ids.to(device="cpu", dtype=torch.long)
        for row, index, length in self._rows:
            layers = self.kept.setdefault(index, [None] * self.num_layers)
            full = torch.zeros(self.num_heads, length, length, dtype=torch.float32)
            full[ids] = probs[row, :, :length, :length].float().cpu()
            layers[layer] = full

    def tensors(self) -> dict:
        import torch

        return {f"example_{index}": torch.stack(layers).contiguous() for index, layers in self.kept.items()}


def separator_ids(tokenizer) -> list[int]:  # type: ignore[no-untyped-def]
    """[SEP] for BERT-style tokenizers, EOS (or </s>) otherwise."""
    ids = {tokenizer.sep_token_id, tokenizer.eos_token_id}
    ids.discard(None)
    return sorted(ids)  # a decoder padding with EOS is fine: padding is masked out separately


def punctuation_ids(tokenizer) -> list[int]:  # type: ignore[no-untyped-def]
    """Vocabulary ids of '.' and ',' in the spellings of WordPiece, byte-level BPE and SentencePiece."""
    from workbench.analysis.attention_stats import PUNCTUATION

    vocabulary = tokenizer.get_vocab()
    return sorted({vocabulary[spelling] for mark in PUNCTUATION for spelling in (mark, "Ġ" + mark, "▁" + mark) if spelling in vocabulary})
