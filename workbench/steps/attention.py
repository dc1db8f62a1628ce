"""`attention`: per-head attention statistics streamed over a dataset (Clark et al. 2019).

Attention weights are observed inside the workbench attention function batch by batch and folded
into running sums, so memory does not grow with the number of examples. `save_maps: N` also keeps
the full maps of the first N examples, for plots, as [layers, heads, seq, seq] per example.

Clark's other panels come from the same pass: per layer, attention [SEP]->[SEP] and other->[SEP]
(mean over heads), the entropy of uniform attention as a baseline, and (`gradients: true`, when the
model has a task head) the mean |dL/dA| of attention to [SEP], punctuation and other tokens: one
backward per batch to the attention probabilities only (parameters frozen). A masked-LM head
computes its statistics on the real text and its gradients on the masked text of its loss.

On a structurally pruned model (`model: <a prune step>`) heads keep their ORIGINAL ids: statistics of
pruned heads are NaN, their saved maps are zeros, and `data.pruned_heads` lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from workbench.steps.base import PresetParams, Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    from workbench.context import StepContext

MAPS_FILE = "attention_maps.safetensors"


class AttentionParams(ModelDatasetParams, PresetParams):
    save_maps: int = Field(0, ge=0, le=10_000, description="keep the full maps of the first N examples")
    denominators: Literal["exact", "clark"] = Field(
        "exact",
        description="exact: each statistic over the queries it is defined for (prev: n - 1); "
        "clark: Clark's notebook (prev/next over n, [SEP]->[SEP] / 2, other->[SEP] / (n - 2))",
    )
    gradients: bool = Field(
        True,
        description="Clark's gradient-based importance of attention to [SEP], punctuation and other tokens per layer, "
        "when the model has a task head (one backward per batch)",
    )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {"denominators": "clark"}}
    PRESET_NOTES: ClassVar[dict[str, str]] = {
        "denominators": "the first query has no previous token and the last no next one; Clark's / 2 assumes "
        "exactly two [SEP]s (a sentence pair)",
    }


class Attention(Step):
    kind = "attention"
    version = 3  # presets; entropy_smoothed; Clark's [SEP] statistics, uniform entropy, attention gradients
    Params = AttentionParams
    summary = (
        "Per-head attention statistics (smoothed entropy; attention to self, previous, next, first/[CLS], [SEP]/EOS, "
        "punctuation; [SEP]->[SEP], other->[SEP]) streamed over the dataset; the uniform-attention entropy; "
        "gradient-based importance of attention to [SEP]; optional full maps of the first examples."
    )

    def run(self, ctx: "StepContext", params: AttentionParams) -> StepResult:  # type: ignore[override]
        import torch
        from safetensors.torch import save_file

        from workbench.analysis.attention_stats import AttentionGradients, HeadStatistics, uniform_entropy
        from workbench.data.batching import batch_order, collate, encode_dataset
        from workbench.models.attention import head_hooks
        from workbench.models.pruning import heads_json, present_heads, pruned_heads

        loaded = ctx.model(params.model)
        loaded.require_heads("the attention step")
        dataset = ctx.dataset(params.dataset, needs="texts")
        tokenizer = loaded.tokenizer
        task, why_not = _gradient_task(loaded, dataset) if params.gradients else (None, "gradients: false")
        if task is not None:
            encodings = task.encodings
        else:
            encodings = encode_dataset(tokenizer, dataset, token_types=loaded.uses_token_types)
        statistics = HeadStatistics(*loaded.layout.shape, device=loaded.device, denominators=params.denominators)
        gradients = AttentionGradients(loaded.layout.num_layers, device=loaded.device) if task is not None else None
        separators = torch.tensor(separator_ids(tokenizer), device=loaded.device)
        punctuation = torch.tensor(punctuation_ids(tokenizer), device=loaded.device)
        maps = MapKeeper(params.save_maps, *loaded.layout.shape)

        order = ctx.world.shard(batch_order(encodings.lengths, params.batch_size))  # this rank's batches
        observers = [statistics.observe, maps.observe]
        for indices in ctx.track(order, len(order), "attention"):
            batch = collate(encodings, indices, loaded.device)
            is_sep = torch.isin(batch.input_ids, separators)
            is_punct = torch.isin(batch.input_ids, punctuation)
            statistics.set_batch(batch.attention_mask, is_sep, is_punct)
            maps.set_batch(batch.indices, batch.attention_mask.sum(1))
            if gradients is None or loaded.head == "masked-lm":  # MLM: the loss sees masked text, statistics must not
                with torch.inference_mode(), head_hooks(observers=observers):
                    loaded.model(**batch.model_inputs())
            if gradients is not None:
                _add_gradients(ctx, loaded, batch, task, gradients, is_sep, is_punct, [] if loaded.head == "masked-lm" else observers)

        statistics.combine(ctx.world)
        if gradients is not None:
            gradients.combine(ctx.world)
        maps.combine(ctx.world)
        scores = statistics.result()
        present = present_heads(loaded)  # [layers, heads]
        layer_means = {name: _mean_over_present(scores[name], present) for name in ("sep_to_sep", "other_to_sep", "entropy_smoothed")}
        baseline = uniform_entropy(torch.tensor(encodings.lengths))
        layer_means["entropy_uniform"] = torch.full((loaded.layout.num_layers,), baseline)
        result = StepResult(
            head_scores=scores,
            layer_scores=layer_means,
            metrics={"examples": len(encodings), "entropy_uniform": baseline},
            data={
                "denominators": params.denominators,
                "layer_scores": "sep_to_sep, other_to_sep, entropy_smoothed: mean over the layer's heads; "
                "entropy_uniform: log n averaged over examples (Clark's baseline)",
            },
        )
        if gradients is not None:
            result.layer_scores.update(gradients.result())
            result.data["gradients"] = f"mean |dL/dA| of the weights to [SEP], punctuation and other tokens ({task.kind} loss)"
        else:
            result.data["gradients"] = f"not computed: {why_not}"
        pruned = pruned_heads(loaded)
        if pruned:  # their statistics are NaN and their saved maps zeros
            result.data["pruned_heads"] = heads_json(pruned)
        if maps.kept:
            save_file(maps.tensors(), str(ctx.output_dir / MAPS_FILE))
            result.data["maps"] = {
                str(index): tokenizer.convert_ids_to_tokens(encodings.input_ids[index]) for index in sorted(maps.kept)
            }
        return result


def _gradient_task(loaded, dataset):  # type: ignore[no-untyped-def]
    """(the task whose loss is differentiated, None) or (None, why there is none)."""
    from workbench.analysis.tasks import prepare_task

    if loaded.problem_type == "none":
        return None, "the model has no task head"
    if loaded.problem_type != "lm" and dataset.labels() is None:
        return None, f"dataset '{dataset.name}' has no labels for the {loaded.problem_type} loss"
    return prepare_task(loaded, dataset), None


def _add_gradients(ctx, loaded, batch, task, gradients, is_sep, is_punct, observers) -> None:  # type: ignore[no-untyped-def]
    """One forward with the attention probabilities in the graph, one backward to them only."""
    import torch

    from workbench.analysis.importance import frozen_parameters
    from workbench.analysis.tasks import batch_loss
    from workbench.models.attention import head_hooks

    with frozen_parameters(loaded.model), torch.enable_grad(), head_hooks(observers=observers, tap=True) as hooks:
        loss = batch_loss(loaded, batch, task, seed=ctx.seed).losses.sum()  # each example's own loss
        grads = torch.autograd.grad(loss, [probs for _, _, probs in hooks.tapped])
    real = batch.attention_mask.bool()
    for (layer, _, _), gradient in zip(hooks.tapped, grads):  # [batch, heads, q, k]
        gradients.add(layer, gradient, real, is_sep & real, is_punct & real)


def _mean_over_present(grid, present):  # type: ignore[no-untyped-def]
    """[layers, heads] -> [layers]: the mean over the heads a (pruned) model still has."""
    import torch

    values = torch.where(present, grid, torch.zeros_like(grid)).sum(1)
    counts = present.sum(1)
    return torch.where(counts > 0, values / counts.clamp(min=1), torch.full_like(values, float("nan")))


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

    def combine(self, world) -> None:  # type: ignore[no-untyped-def]
        """The maps every rank kept (each example was seen by exactly one rank)."""
        if world.distributed:
            self.kept = {index: layers for part in world.gather_by_rank(self.kept) for index, layers in part.items()}

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
