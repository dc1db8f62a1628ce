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

Presets. `workbench` scores the plain syntax tree of Python's `ast` (tokenize leaves). `paper` is
CodeAttention's setting: tree-sitter's concrete tree (`parser: tree_sitter`), the upgraded tree
(`upgraded_tree`: edges between consecutive leaves and from each identifier to its previous
occurrence), the token-type filter (`type_filter: 8`: per layer, a first pass over the data finds the
8 leaf types most often at an end of a high-attention pair, and only leaves of those types are
scored, in both matrices) and 256 sub-tokens per function. The published numbers (RoBERTa 0.205,
CodeBERT 0.224 in the last layer) come from checkpoints fine-tuned on code summarisation.

Structurally pruned models (`model: <a prune step>`): maps are placed at their ORIGINAL head ids, the
per-layer score averages the attention of the heads the layer still has (NaN for a layer with none),
pruned heads are NaN in the per-head scores and never the best head; `data.pruned_heads` lists them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from workbench.data.kinds import kind_for, paths_with
from workbench.steps.base import PresetParams, Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    from workbench.context import StepContext


class CatProbeParams(ModelDatasetParams, PresetParams):
    batch_size: int = Field(8, ge=1, le=4096, description="sentences per forward pass (full attention maps are kept per batch)")
    attention_quantile: float = Field(0.75, gt=0, lt=1, description="M_A = attention above this quantile")
    distance_quantile: float = Field(0.25, gt=0, lt=1, description="M_D = tree distance below this quantile")
    per_head: bool = Field(False, description="also score every head on its own (head scores `cat`)")
    exclude_diagonal: bool = Field(False, description="score pairs of distinct leaves only (the paper keeps i = j)")
    parser: Literal["ast", "tree_sitter"] = Field(
        "ast", description="the syntax tree: Python's ast with tokenize leaves, or tree-sitter's concrete tree (the paper's)"
    )
    upgraded_tree: bool = Field(
        False, description="add edges between consecutive leaves and from each identifier to its previous occurrence"
    )
    type_filter: int | None = Field(
        None, ge=1, le=1000, description="per layer, score only leaves of the N types most frequent in high-attention pairs"
    )
    max_length: int | None = Field(
        None, ge=2, le=100_000, description="sub-tokens per function (default: the dataset's max_length)"
    )

    # CodeAttention's defaults: tree-sitter leaves, upgraded_ast=1, frequent_type=1 (8 types), 256 tokens.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"parser": "tree_sitter", "upgraded_tree": True, "type_filter": 8, "max_length": 256},
    }
    PRESET_NOTES: ClassVar[dict[str, str]] = {
        "parser": "Python's own parser, no extra package; its tree is the language's abstract syntax",
        "upgraded_tree": "the plain tree asks what syntax alone explains; the extra edges mix in token order and data flow",
        "type_filter": "the types are chosen by the attention being scored, which raises CAT by construction",
        "max_length": "the dataset's truncation applies to every step that reads it",
    }

    def check(self, recipe):  # type: ignore[no-untyped-def]
        spec = recipe.datasets.get(self.dataset)
        if spec is not None and not kind_for(spec.path).supports("code_trees"):
            return [("dataset", f"cat_probe needs a {paths_with('code_trees')} dataset; '{self.dataset}' is {spec.path}")]
        return []


class CatProbe(Step):
    kind = "cat_probe"
    version = 3  # presets: tree-sitter trees, the upgraded tree (identifier chains), the token-type filter
    Params = CatProbeParams
    summary = "CAT-probing: overlap of high attention and short syntax-tree distance between code tokens, per layer."

    def run(self, ctx: "StepContext", params: CatProbeParams) -> StepResult:  # type: ignore[override]
        import numpy as np
        import torch

        from workbench.analysis.cat import CatAccumulator, TypeRates
        from workbench.errors import StepError
        from workbench.models.pruning import heads_json, present_heads, pruned_heads

        loaded = ctx.model(params.model)
        loaded.require_heads("the cat_probe step")
        dataset = ctx.dataset(params.dataset, needs="code_trees")
        num_layers, num_heads = loaded.layout.shape
        present = present_heads(loaded)  # [layers, heads]
        examples, unparsed = code_trees(dataset.examples, params)
        if not examples:
            raise StepError(f"no function of '{params.dataset}' could be parsed by {params.parser}")
        max_length = params.max_length or dataset.spec.max_length
        accumulator = CatAccumulator(
            num_layers,
            num_heads,
            per_head=params.per_head,
            attention_quantile=params.attention_quantile,
            distance_quantile=params.distance_quantile,
            exclude_diagonal=params.exclude_diagonal,
            present=present.numpy(),
        )
        type_sets = None
        if params.type_filter:  # a first pass picks each layer's types, the second scores them
            rates = TypeRates(num_layers, params.attention_quantile)
            for example, leaf_attention in leaf_attentions(ctx, loaded, examples, params, max_length, "leaf types"):
                rates.add(_head_mean(leaf_attention, present), [example.kinds[i] for i in leaf_attention.kept])
            ctx.world.add_up_attributes(rates, *TypeRates.TOTALS)  # every rank's examples
            type_sets = rates.frequent(params.type_filter)

        counts = {"truncated": 0, "leaves": 0, "leaves_dropped": 0, "too_short": 0}
        for example, leaf_attention in leaf_attentions(ctx, loaded, examples, params, max_length, "CAT", counts):
            keep = leaf_attention.kept
            distances = example.distances[keep][:, keep]  # [n, n]
            layer_keep = None
            if type_sets is not None:
                kinds = np.asarray(example.kinds)[keep]
                layer_keep = [np.isin(kinds, types) for types in type_sets]
            accumulator.add(leaf_attention.attention, distances, layer_keep)
        ctx.world.add_up_attributes(accumulator, *CatAccumulator.TOTALS)  # every rank's examples
        counts = ctx.world.add_up(counts)
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
            "examples": len(dataset.examples),
            "examples_scored": cat.num_examples,
            "examples_unparsed": unparsed,
            "examples_truncated": counts["truncated"],
            "examples_too_short": counts["too_short"],
            "leaves_dropped": counts["leaves_dropped"],
        }
        if counts["truncated"]:
            ctx.log(f"{counts['truncated']} functions were cut by max_length={max_length}; their tail leaves are not scored")
        data: dict[str, Any] = {
            "cat": [value if math.isfinite(value) else None for value in per_layer],
            "num_scored": [int(n) for n in cat.num_scored],
            "attention_quantile": params.attention_quantile,
            "distance_quantile": params.distance_quantile,
            "exclude_diagonal": params.exclude_diagonal,
            "tree": f"{params.parser}{', upgraded (sequence and identifier-chain edges)' if params.upgraded_tree else ''}",
            "max_length": max_length,
            "leaves": counts["leaves"],
            "layer_numbering": "0 = first attention layer",
        }
        if type_sets is not None:
            data["type_filter"] = {str(layer): types for layer, types in enumerate(type_sets)}
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


class LeafAttention:
    """One example's attention between its kept leaves: `attention` [layers, heads, n, n], `kept` [n] leaf ids."""

    def __init__(self, attention, kept):  # type: ignore[no-untyped-def]
        self.attention = attention
        self.kept = kept


def leaf_attentions(ctx, loaded, examples, params, max_length, description, counts=None):  # type: ignore[no-untyped-def]
    """(example, LeafAttention) for every example with at least two leaves that fit `max_length`."""
    from workbench.analysis.cat import token_pair_attention
    from workbench.data.words import kept_words
    from workbench.analysis.word_attention import word_attention

    words = [example.tokens for example in examples]
    for aligned, row, index, tokens in word_attention(ctx, loaded, words, params.batch_size, max_length, description):
        example = examples[index]  # tokens: [layers, heads, seq, seq]
        keep = kept_words(aligned, row).numpy()  # [kept] leaf ids
        if counts is not None:
            counts["leaves"] += len(example)
            counts["leaves_dropped"] += len(example) - len(keep)
            counts["truncated"] += int(aligned.num_words[row]) < len(example)
        if len(keep) < 2:
            if counts is not None:
                counts["too_short"] += 1
            continue
        leaf_index = _compact(aligned.word_index[row, : tokens.shape[-1]], keep, int(aligned.num_words[row]))
        pairs = token_pair_attention(tokens, leaf_index.to(tokens.device), len(keep))  # [L, H, n, n]
        yield example, LeafAttention(pairs, keep)


def code_trees(examples, params):  # type: ignore[no-untyped-def]
    """The examples' trees as the step asks for them, and how many sources that parser refused.

    The dataset already holds the plain `ast` trees; other trees are parsed again from the source.
    """
    from workbench.data.python_code import parse_code
    from workbench.errors import DataError

    if params.parser == "ast" and not params.upgraded_tree:
        return list(examples), 0
    trees, refused = [], 0
    for example in examples:
        try:
            if params.parser == "tree_sitter":
                from workbench.data.tree_sitter_code import parse_with_tree_sitter

                trees.append(parse_with_tree_sitter(example.source, example.name, upgraded=params.upgraded_tree))
            else:
                trees.append(parse_code(example.source, example.name, add_sequence_edges=True, add_dataflow_edges=True))
        except DataError:
            refused += 1
    return trees, refused


def _head_mean(leaf_attention, present):  # type: ignore[no-untyped-def]
    """[layers, heads, n, n] -> [layers, n, n] numpy, the mean over the heads the model has."""
    import numpy as np

    attention = leaf_attention.attention.detach().cpu().double().numpy()
    weights = present.numpy().astype(np.float64)  # [layers, heads]
    return np.einsum("lhij,lh->lij", attention, weights) / np.maximum(weights.sum(1), 1)[:, None, None]


def _compact(word_index, keep, num_words):  # type: ignore[no-untyped-def]
    """Sub-token -> position of its leaf among the kept leaves (-1 for special tokens and dropped leaves)."""
    import torch

    position = torch.full((max(num_words, 1),), -1, dtype=torch.long)
    position[keep] = torch.arange(len(keep))
    return torch.where(word_index >= 0, position[word_index.clamp(min=0)], -1)
