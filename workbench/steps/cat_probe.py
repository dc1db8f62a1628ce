"""`cat_probe`: does attention follow the syntax tree of code? (CAT-probing, Chen et al. 2022).

Functions of a python_code dataset are read as the leaves of their syntax trees (comments and layout
left out); the leaves go through the model as pre-split words (`encode_words`), so every sub-token
knows its leaf, for WordPiece, byte-level BPE and SentencePiece alike. The attention of every layer
is observed in the workbench attention function; per example it is pooled to leaf pairs (mean over
the sub-token pairs) and `analysis.cat.CatAccumulator` scores, per layer with heads averaged (and
per head with `per_head: true`),

    CAT = |M_A and M_D| / |M_A or M_D|,  M_A = A > quantile(A, attention_quantile),
                                         M_D = D < quantile(D, distance_quantile)

with D the leaves' distances in the syntax tree, averaged over examples. Leaves cut by
`max_length` are dropped with their rows and columns of D (the paper truncates too); a leaf with
no sub-token (rare: characters a tokenizer discards) is dropped the same way; an example left with
fewer than two leaves is not scored (metric `examples_too_short`). Layer scores count from 0 = the
first attention layer.

Structurally pruned models (`model: <a prune step>`): maps are placed at their ORIGINAL head ids, the
per-layer score averages the attention of the heads the layer still has (NaN for a layer with none),
pruned heads are NaN in the per-head scores and never the best head; `data.pruned_heads` lists them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field

from workbench.steps.base import Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    from workbench.context import StepContext


class CatProbeParams(ModelDatasetParams):
    batch_size: int = Field(8, ge=1, le=4096, description="sentences per forward pass (full attention maps are kept per batch)")
    attention_quantile: float = Field(0.75, gt=0, lt=1, description="M_A = attention above this quantile")
    distance_quantile: float = Field(0.25, gt=0, lt=1, description="M_D = tree distance below this quantile")
    per_head: bool = Field(False, description="also score every head on its own (head scores `cat`)")
    exclude_diagonal: bool = Field(False, description="score pairs of distinct leaves only (the paper keeps i = j)")

    def check(self, recipe):  # type: ignore[no-untyped-def]
        spec = recipe.datasets.get(self.dataset)
        if spec is not None and spec.path != "python_code":
            return [("dataset", f"cat_probe needs a python_code dataset; '{self.dataset}' is {spec.path}")]
        return []


class CatProbe(Step):
    kind = "cat_probe"
    version = 2  # pruned models: maps at original head ids, layer means over present heads; examples_too_short
    Params = CatProbeParams
    summary = "CAT-probing: overlap of high attention and short syntax-tree distance between code tokens, per layer."

    def run(self, ctx: "StepContext", params: CatProbeParams) -> StepResult:  # type: ignore[override]
        import torch

        from workbench.analysis.cat import CatAccumulator, token_pair_attention
        from workbench.errors import StepError
        from workbench.models.pruning import heads_json, present_heads, pruned_heads
        from workbench.steps.extract import dataset_words, kept_words
        from workbench.steps.word_attention import word_attention

        loaded = ctx.model(params.model)
        loaded.require_heads("the cat_probe step")
        dataset = ctx.dataset(params.dataset, "code")
        num_layers, num_heads = loaded.layout.shape
        present = present_heads(loaded)  # [layers, heads]
        accumulator = CatAccumulator(
            num_layers,
            num_heads,
            per_head=params.per_head,
            attention_quantile=params.attention_quantile,
            distance_quantile=params.distance_quantile,
            exclude_diagonal=params.exclude_diagonal,
            present=present.numpy(),
        )
        leaves = dataset_words(dataset)
        counts = {"truncated": 0, "leaves": 0, "leaves_dropped": 0, "too_short": 0}
        for aligned, row, index, tokens in word_attention(
            ctx, loaded, leaves, params.batch_size, dataset.spec.max_length, "CAT"
        ):  # tokens: [layers, heads, seq, seq]
            example = dataset.examples[index]
            keep = kept_words(aligned, row)  # [kept] leaf ids
            counts["leaves"] += len(example)
            counts["leaves_dropped"] += len(example) - len(keep)
            counts["truncated"] += int(aligned.num_words[row]) < len(example)
            if len(keep) < 2:
                counts["too_short"] += 1
                continue
            leaf_index = _compact(aligned.word_index[row, : tokens.shape[-1]], keep, int(aligned.num_words[row]))
            pairs = token_pair_attention(tokens, leaf_index.to(tokens.device), len(keep))  # [L, H, n, n]
            distances = example.distances[keep.numpy()][:, keep.numpy()]  # [n, n]
            accumulator.add(pairs, distances)
        cat = accumulator.result()
        if cat.num_examples == 0:
            raise StepError(f"no example of '{params.dataset}' has two leaves to score", hint="raise max_length")
        per_layer = [float(value) for value in cat.per_layer]
        finite = [(layer, value) for layer, value in enumerate(per_layer) if math.isfinite(value)]
        best_layer, best = max(finite, key=lambda item: item[1]) if finite else (-1, math.nan)
        metrics = {
            "cat_first_layer": per_layer[0],
            "cat_last_layer": per_layer[-1],
            "cat_mean": sum(v for _, v in finite) / len(finite) if finite else math.nan,
            "cat_max": best,
            "cat_max_layer": best_layer,
            "examples": len(leaves),
            "examples_scored": cat.num_examples,
            "examples_truncated": counts["truncated"],
            "examples_too_short": counts["too_short"],
            "leaves_dropped": counts["leaves_dropped"],
        }
        if counts["truncated"]:
            ctx.log(
                f"{counts['truncated']} functions were cut by max_length={dataset.spec.max_length}; "
                "their tail leaves are not scored"
            )
        data = {
            "cat": [value if math.isfinite(value) else None for value in per_layer],
            "num_scored": [int(n) for n in cat.num_scored],
            "attention_quantile": params.attention_quantile,
            "distance_quantile": params.distance_quantile,
            "exclude_diagonal": params.exclude_diagonal,
            "leaves": counts["leaves"],
            "layer_numbering": "0 = first attention layer",
        }
        if not bool(present.all()):
            data["pruned_heads"] = heads_json(pruned_heads(loaded))
        result = StepResult(metrics=metrics, layer_scores={"cat": torch.tensor(per_layer)}, data=data)
        if cat.per_head is not None:
            result.head_scores["cat"] = torch.tensor(cat.per_head, dtype=torch.float32)
            grid = cat.per_head  # NaN: a pruned head, or one no example could score
            scored = [k for k in range(grid.size) if not math.isnan(grid.flat[k])]
            if scored:
                flat = max(scored, key=lambda k: grid.flat[k])  # ties: the lowest index
                data["best_head"] = {"layer": flat // num_heads, "head": flat % num_heads, "cat": float(grid.flat[flat])}
        return result


def _compact(word_index, keep, num_words):  # type: ignore[no-untyped-def]
    """Sub-token -> position of its leaf among the kept leaves (-1 for special tokens and dropped leaves)."""
    import torch

    position = torch.full((max(num_words, 1),), -1, dtype=torch.long)
    position[keep] = torch.arange(len(keep))
    return torch.where(word_index >= 0, position[word_index.clamp(min=0)], -1)
