"""`syntax_heads`: which attention heads follow dependency syntax (Clark et al. 2019, sec. 4 and 6).

Sentences of a treebank go through the model in batches of pre-split words (`encode_words`); the
attention probabilities of every layer are observed inside the workbench attention function, turned
into word-level maps one sentence at a time (attention TO a split word = sum over its sub-tokens,
FROM it = mean; special tokens dropped) and scored by `analysis.syntax.DependencyHeadScorer`: for
every head and relation, how often the most-attended other word is the dependent's head
(`dep_to_head`) and how often the head is the word attending most to the dependent (`head_to_dep`),
against the best fixed-offset baseline. Root and punct arcs and arcs from or to punctuation are not
scored (unless `punctuation: true`). Sentences that `max_length` truncates, or with a word that has
no sub-token, are skipped and counted: their trees would be incomplete.

Head similarity: the Jensen-Shannon divergence between heads' token-level attention over the first
`js_sentences` sentences (0 = off), per query token, and its 2-D MDS embedding for a plot.

Outputs: head scores `dep_to_head:<relation>` and `head_to_dep:<relation>` for `all` and every relation
with at least `min_count` scored arcs (with `relations:`, every named relation that has an arc, those
under `min_count` flagged `rare` in the table); a table of the best head per relation vs the baseline;
metrics `best:<relation>` (best head, either direction) and `baseline:all`. Layers in the
head scores and the table count from 0 = the first attention layer, as in every head heatmap.

Structurally pruned models (`model: <a prune step>`): every layer's maps are placed at their ORIGINAL
head ids, pruned heads score NaN in every head score and in the Jensen-Shannon distances, are left out
of the MDS map and are never a best head; `data.pruned_heads` lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from workbench.data.kinds import kind_for, paths_with
from workbench.steps.base import PresetParams, Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    import torch

    from workbench.context import StepContext

DIRECTIONS = ("dep_to_head", "head_to_dep")


class SyntaxHeadsParams(ModelDatasetParams, PresetParams):
    batch_size: int = Field(16, ge=1, le=4096, description="sentences per forward pass (full attention maps are kept per batch)")
    min_count: int = Field(100, ge=1, description="relations with fewer scored arcs are listed as rare, without head scores (unless named in relations)")
    offsets: list[int] = Field([-3, -2, -1, 0, 1, 2], description="the fixed offsets the baseline tries")
    relations: list[str] | None = Field(
        None,
        description=(
            "only these relations (default: every frequent one); a named relation is always reported, "
            "flagged rare when it has fewer than min_count arcs"
        ),
    )
    subtypes: bool = Field(False, description="score nsubj:pass apart from nsubj")
    punctuation: bool = Field(False, description="also score arcs from or to punctuation words")
    js_sentences: int = Field(200, ge=0, description="sentences for the Jensen-Shannon head distances; 0 = off")
    pooling: Literal["first", "mean", "max"] = Field(
        "mean", description="attention FROM a split word: its first sub-token, the mean or the max of its sub-tokens"
    )
    all_row: Literal["scored_arcs", "every_word"] = Field(
        "scored_arcs",
        description="what the 'all' row counts: the scored arcs, or every word (root and punctuation too, as Clark)",
    )

    # Clark's released code: first sub-token pooling, "all" over every word, labels as annotated.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"pooling": "first", "all_row": "every_word", "subtypes": True},
    }
    PRESET_NOTES: ClassVar[dict[str, str]] = {
        "pooling": "the paper's text says mean; the released code pools with the first sub-token",
        "all_row": "root words can never be an attention prediction and punctuation is rarely one; counting "
        "them lowers 'all' for every head alike",
        "subtypes": "UD subtypes split relations into rare ones (nsubj:pass); the paper's poss is nmod:poss",
    }

    @field_validator("offsets")
    @classmethod
    def _offsets(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError("give a non-empty list of distinct offsets")
        return value

    def check(self, recipe):  # type: ignore[no-untyped-def]
        spec = recipe.datasets.get(self.dataset)
        if spec is not None and not kind_for(spec.path).supports("dependency_trees"):
            return [("dataset", f"syntax_heads needs a {paths_with('dependency_trees')} treebank; '{self.dataset}' is {spec.path}")]
        return []


class SyntaxHeads(Step):
    kind = "syntax_heads"
    version = 3  # presets: word pooling, the 'all' row over every word
    Params = SyntaxHeadsParams
    summary = (
        "Clark et al.: per head and dependency relation, accuracy of attending from dependent to head and "
        "from head to dependent vs the best fixed-offset baseline; Jensen-Shannon head distances and MDS."
    )

    def run(self, ctx: "StepContext", params: SyntaxHeadsParams) -> StepResult:  # type: ignore[override]
        import numpy as np
        import torch

        from workbench.analysis.syntax import DependencyHeadScorer, HeadJSDivergence, word_level_attention
        from workbench.models.pruning import heads_json, present_heads, pruned_heads
        from workbench.data.words import dataset_words
        from workbench.analysis.word_attention import word_attention

        loaded = ctx.model(params.model)
        loaded.require_heads("the syntax_heads step")
        dataset = ctx.dataset(params.dataset, needs="dependency_trees")
        num_layers, num_heads = loaded.layout.shape
        present = present_heads(loaded)  # [layers, heads]
        scorer = DependencyHeadScorer(
            num_layers,
            num_heads,
            relations=params.relations,
            min_count=params.min_count,
            strip_subtypes=not params.subtypes,
            offsets=params.offsets,
            present=present.numpy(),
            all_words=params.all_row == "every_word",
        )
        js = HeadJSDivergence(num_layers, num_heads) if params.js_sentences else None
        words = dataset_words(dataset)
        skipped = {"truncated": 0, "empty_word": 0}
        js_used = 0
        examples = word_attention(ctx, loaded, words, params.batch_size, dataset.spec.max_length, "attention vs syntax")
        for aligned, row, index, tokens in examples:  # tokens: [layers, heads, seq, seq]
            sentence = dataset.sentences[index]
            kept = int(aligned.num_words[row])
            if kept < len(sentence):
                skipped["truncated"] += 1
                continue
            if not bool(aligned.word_has_tokens[row, :kept].all()):
                skipped["empty_word"] += 1
                continue
            word_index = aligned.word_index[row, : tokens.shape[-1]]
            word_attention_map = word_level_attention(tokens, word_index.to(tokens.device), kept, params.pooling)
            upos = None if params.punctuation else sentence.upos  # upos: drop arcs from/to PUNCT
            scorer.add(word_attention_map, sentence.heads, sentence.deprels, upos)
            if js is not None and index < params.js_sentences:
                js.add(tokens)
                js_used += 1
        world = ctx.world  # totals of every rank's sentences
        world.add_up_attributes(scorer, *DependencyHeadScorer.TOTALS)
        if js is not None:
            world.add_up_attributes(js, *HeadJSDivergence.TOTALS)
        skipped, js_used = world.add_up(skipped), world.add_up(js_used)
        scores = scorer.result()
        result = _scores_result(scores, (num_layers, num_heads), params.relations, params.all_row == "every_word")
        result.data["pooling"] = params.pooling
        missing = [name for name in result.data["rare"] if result.data["rare"][name] == 0]
        if missing:
            ctx.log(f"no scored arc of the named relations {', '.join(missing)}")
        if not bool(present.all()):
            result.data["pruned_heads"] = heads_json(pruned_heads(loaded))
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
            kept = present.flatten().numpy()  # [L*H] heads the model has
            among = distances[np.ix_(kept, kept)]  # [K, K]
            if len(among) > 1 and np.any(among > 0):
                coordinates = mds_embedding(among, seed=ctx.seed)  # [K, 2]
            else:  # every head attends alike: all at one point (MDS would divide by zero)
                coordinates = np.zeros((len(among), 2))
            distances[~kept, :] = np.nan  # a pruned head has no distance to anything
            distances[:, ~kept] = np.nan
            result.tensors["js_divergence"] = torch.tensor(distances, dtype=torch.float32)
            result.data["mds"] = {
                "sentences": js_used,
                "tokens": js.num_tokens,
                "points": [
                    {"layer": int(k) // num_heads, "head": int(k) % num_heads, "x": float(x), "y": float(y)}
                    for k, (x, y) in zip(np.flatnonzero(kept), np.asarray(coordinates))
                ],
            }
            result.metrics["js_sentences"] = js_used
        return result


def _scores_result(scores: Any, shape: tuple[int, int], named: list[str] | None = None, all_words: bool = False) -> StepResult:
    """Head scores, the best-head table and metrics from DependencyScores.

    Reported: `all`, and every frequent relation or, when relations are `named`, every named one
    with an arc (rows under min_count carry `rare: true`). `data.rare` lists the rare relations
    left without head scores, and named relations without any scored arc (count 0).
    """
    import torch

    from workbench.naming import safe_name

    reported = scores.frequent if named is None else scores.relations  # the scorer kept only named ones
    head_scores: dict[str, torch.Tensor] = {}
    metrics: dict[str, float] = {"arcs": scores.overall.count}
    table = []
    for name, score in [("all", scores.overall), *reported.items()]:
        row: dict[str, Any] = {"relation": name, "count": score.count}
        if score is not scores.overall:
            row["rare"] = not score.frequent
        for direction in DIRECTIONS:
            grid = getattr(score, direction)  # [layers, heads]
            head_scores[f"{direction}:{safe_name(name)}"] = torch.tensor(grid, dtype=torch.float32).reshape(shape)
            layer, head, accuracy = score.best_head(direction)
            row[direction] = {"layer": layer, "head": head, "accuracy": accuracy}
        direction, layer, head, accuracy = score.best
        offset, baseline = score.baseline
        row["best"] = {"direction": direction, "layer": layer, "head": head, "accuracy": accuracy}
        row["baseline"] = {"offset": offset, "accuracy": baseline}
        row["offsets"] = {str(o): a for o, a in score.offset_accuracy.items()}
        table.append(row)
        metrics[f"best:{safe_name(name)}"] = accuracy
        if name == "all":
            metrics["baseline:all"] = baseline  # per relation: in the table
    data = {
        "table": table,
        "rare": {
            **{name: score.count for name, score in scores.rare.items() if name not in reported},
            **{name: 0 for name in named or () if name not in scores.relations},
        },
        "counts": {name: score.count for name, score in scores.relations.items()},
        "layer_numbering": "0 = first attention layer",
    }
    if all_words:
        data["all_row"] = "every word (root, punctuation and excluded relations too), as Clark's evaluate_predictor"
    else:
        data["all_row"] = "the scored arcs (no root, punct, or arcs from or to punctuation)"
    return StepResult(metrics=metrics, head_scores=head_scores, data=data)
