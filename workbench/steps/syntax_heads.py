"""`syntax_heads`: which attention heads follow dependency syntax (Clark et al. 2019, sec. 4 and 6).

Sentences of a treebank go through the model in batches of pre-split words (`encode_words`); the
attention probabilities of every layer are observed inside the workbench attention function, turned
into word-level maps one sentence at a time (attention TO a split word = sum over its sub-tokens,
FROM it = mean; special tokens dropped) and scored by `analysis.syntax.DependencyHeadScorer`: for
every head and relation, how often the most-attended other word is the dependent's head
(`dep->head`) and how often the head is the word attending most to the dependent (`head->dep`),
against the best fixed-offset baseline. Root and punct arcs and arcs from or to punctuation are not
scored (unless `punctuation: true`). Sentences that `max_length` truncates, or with a word that has
no sub-token, are skipped and counted: their trees would be incomplete.

Head similarity: the Jensen-Shannon divergence between heads' token-level attention over the first
`js_sentences` sentences (0 = off), per query token, and its 2-D MDS embedding for a plot.

Outputs: head scores `dep->head:<relation>` and `head->dep:<relation>` for `all` and every relation
with at least `min_count` scored arcs; a table of the best head per relation vs the baseline;
metrics `best:<relation>` (best head, either direction) and `baseline:all`. Layers in the
head scores and the table count from 0 = the first attention layer, as in every head heatmap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from workbench.steps.base import Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    import torch

    from workbench.context import StepContext

DIRECTIONS = {"dep_to_head": "dep->head", "head_to_dep": "head->dep"}


class SyntaxHeadsParams(ModelDatasetParams):
    batch_size: int = Field(16, ge=1, le=4096, description="sentences per forward pass (full attention maps are kept per batch)")
    min_count: int = Field(100, ge=1, description="relations with fewer scored arcs are listed as rare, without head scores")
    offsets: list[int] = Field([-3, -2, -1, 0, 1, 2], description="the fixed offsets the baseline tries")
    relations: list[str] | None = Field(None, description="only these relations (default: every frequent one)")
    subtypes: bool = Field(False, description="score nsubj:pass apart from nsubj")
    punctuation: bool = Field(False, description="also score arcs from or to punctuation words")
    js_sentences: int = Field(200, ge=0, description="sentences for the Jensen-Shannon head distances; 0 = off")

    @field_validator("offsets")
    @classmethod
    def _offsets(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError("give a non-empty list of distinct offsets")
        return value

    def check(self, recipe):  # type: ignore[no-untyped-def]
        spec = recipe.datasets.get(self.dataset)
        if spec is not None and spec.path != "conllu":
            return [("dataset", f"syntax_heads needs a conllu treebank; '{self.dataset}' is {spec.path}")]
        return []


class AttentionCollector:
    """Observer keeping the attention of every layer for ONE forward pass: [batch, heads, q, k] each."""

    def __init__(self, num_layers: int):
        self.layers: list[torch.Tensor | None] = [None] * num_layers

    def observe(self, layer: int, head_ids: "torch.Tensor", probs: "torch.Tensor") -> None:
        self.layers[layer] = probs

    def take(self) -> "torch.Tensor":
        """[batch, layers, heads, seq, seq] of the last forward pass; the collector is emptied."""
        import torch

        if any(layer is None for layer in self.layers):
            raise RuntimeError("attention was not observed at every layer")
        stacked = torch.stack(self.layers, dim=1).float()  # type: ignore[arg-type]
        self.layers = [None] * len(self.layers)
        return stacked


class SyntaxHeads(Step):
    kind = "syntax_heads"
    Params = SyntaxHeadsParams
    summary = (
        "Clark et al.: per head and dependency relation, accuracy of attending from dependent to head and "
        "from head to dependent vs the best fixed-offset baseline; Jensen-Shannon head distances and MDS."
    )

    def run(self, ctx: "StepContext", params: SyntaxHeadsParams) -> StepResult:  # type: ignore[override]
        import numpy as np
        import torch

        from workbench.analysis.syntax import DependencyHeadScorer, HeadJSDivergence, word_level_attention
        from workbench.data.alignment import encode_words
        from workbench.errors import StepError
        from workbench.models.attention import head_hooks
        from workbench.steps.extract import dataset_words, word_batches

        loaded = ctx.model(params.model)
        loaded.require_heads("the syntax_heads step")
        dataset = ctx.dataset(params.dataset)
        if dataset.kind != "treebank":
            raise StepError(f"syntax_heads needs a treebank (path: conllu); '{params.dataset}' is a {dataset.kind} dataset")
        num_layers, num_heads = loaded.layout.shape
        scorer = DependencyHeadScorer(
            num_layers,
            num_heads,
            relations=params.relations,
            min_count=params.min_count,
            strip_subtypes=not params.subtypes,
            offsets=params.offsets,
        )
        js = HeadJSDivergence(num_layers, num_heads) if params.js_sentences else None
        collector = AttentionCollector(num_layers)
        words = dataset_words(dataset)
        skipped = {"truncated": 0, "empty_word": 0}
        js_used = 0
        batches = word_batches(words, list(range(len(words))), params.batch_size)
        with torch.inference_mode(), head_hooks(observers=[collector.observe]):
            for indices in ctx.track(batches, len(batches), "attention vs syntax"):
                aligned = encode_words(loaded.tokenizer, [words[i] for i in indices], dataset.spec.max_length)
                loaded.model(**{name: value.to(loaded.device) for name, value in aligned.model_inputs().items()})
                attention = collector.take()  # [batch, layers, heads, seq, seq]
                lengths = aligned.attention_mask.sum(1).tolist()
                for row, index in enumerate(indices):
                    sentence = dataset.sentences[index]
                    kept = int(aligned.num_words[row])
                    if kept < len(sentence):
                        skipped["truncated"] += 1
                        continue
                    if not bool(aligned.word_has_tokens[row, :kept].all()):
                        skipped["empty_word"] += 1
                        continue
                    tokens = attention[row, :, :, : lengths[row], : lengths[row]]  # [layers, heads, seq, seq]
                    word_index = aligned.word_index[row, : lengths[row]]
                    word_attention = word_level_attention(tokens, word_index.to(tokens.device), kept)
                    upos = None if params.punctuation else sentence.upos  # upos: drop arcs from/to PUNCT
                    scorer.add(word_attention, sentence.heads, sentence.deprels, upos)
                    if js is not None and index < params.js_sentences:
                        js.add(tokens)
                        js_used += 1
        scores = scorer.result()
        result = _scores_result(scores, (num_layers, num_heads))
        result.metrics.update(
            {
                "sentences": len(words),
                "sentences_scored": len(words) - sum(skipped.values()),
                "sentences_truncated": skipped["truncated"],
                "sentences_with_empty_words": skipped["empty_word"],
            }
        )
        if skipped["truncated"]:
            ctx.log(f"{skipped['truncated']} sentences longer than max_length={dataset.spec.max_length} were skipped")
        if js is not None and js_used:
            from workbench.analysis.syntax import mds_embedding

            distances = js.result(per_token=True)  # [L*H, L*H]
            if np.any(distances > 0):
                coordinates = mds_embedding(distances, seed=ctx.seed)  # [L*H, 2]
            else:  # every head attends alike: all at one point (MDS would divide by zero)
                coordinates = np.zeros((len(distances), 2))
            result.tensors["js_divergence"] = torch.tensor(distances, dtype=torch.float32)
            result.data["mds"] = {
                "sentences": js_used,
                "tokens": js.num_tokens,
                "points": [
                    {"layer": k // num_heads, "head": k % num_heads, "x": float(x), "y": float(y)}
                    for k, (x, y) in enumerate(np.asarray(coordinates))
                ],
            }
            result.metrics["js_sentences"] = js_used
        return result


def _scores_result(scores: Any, shape: tuple[int, int]) -> StepResult:
    """Head scores, the best-head table and metrics from DependencyScores."""
    import torch

    head_scores: dict[str, torch.Tensor] = {}
    metrics: dict[str, float] = {"arcs": scores.overall.count}
    table = []
    for name, score in [("all", scores.overall), *scores.frequent.items()]:
        row: dict[str, Any] = {"relation": name, "count": score.count}
        for direction, label in DIRECTIONS.items():
            grid = getattr(score, direction)  # [layers, heads]
            head_scores[f"{label}:{name}"] = torch.tensor(grid, dtype=torch.float32).reshape(shape)
            layer, head, accuracy = score.best_head(direction)
            row[direction] = {"layer": layer, "head": head, "accuracy": accuracy}
        direction, layer, head, accuracy = score.best
        offset, baseline = score.baseline
        row["best"] = {"direction": DIRECTIONS[direction], "layer": layer, "head": head, "accuracy": accuracy}
        row["baseline"] = {"offset": offset, "accuracy": baseline}
        row["offsets"] = {str(o): a for o, a in score.offset_accuracy.items()}
        table.append(row)
        metrics[f"best:{name}"] = accuracy
        if name == "all":
            metrics["baseline:all"] = baseline  # per relation: in the table
    data = {
        "table": table,
        "rare": {name: score.count for name, score in scores.rare.items()},
        "counts": {name: score.count for name, score in scores.relations.items()},
        "layer_numbering": "0 = first attention layer",
    }
    return StepResult(metrics=metrics, head_scores=head_scores, data=data)
