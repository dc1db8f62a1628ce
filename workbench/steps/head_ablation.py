"""`head_ablation`: Michel et al.'s side experiments (2019, section 3, Table 1, Figure 1 and Table 2).

1. Ablate one head at a time: the score with head (l, h) masked, minus the original score, is the
   head score `score_delta` (positive = the model does better without the head).
2. Keep only one head in a layer: for every layer l and head h, mask every OTHER head of layer l
   and score; `score_delta_only` is that score minus the original, and the table
   `keep_best_per_layer` gives, per layer, the head whose sole survival scores best (Table 2).

Heads are masked with gates on their attention output (Michel masks the attention probabilities,
which zeroes the same output), so nothing is reloaded: the data is tokenised and batched once and
each setting is one inference pass (sdpa, no gradients). That is 1 + L*H passes, plus L*H with
`keep_one`. Heads a pruned model no longer has are NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from workbench.steps.base import PresetParams, Step, StepResult
from workbench.steps.common import ModelDatasetParams
from workbench.steps.mask_search import METRIC_HELP, METRICS

if TYPE_CHECKING:
    from workbench.context import StepContext


class HeadAblationParams(ModelDatasetParams, PresetParams):
    batch_size: int = Field(64, ge=1, le=65536, description="examples per forward pass (padding is per batch)")
    metric: METRICS | None = Field(None, description=METRIC_HELP)
    keep_one: bool = Field(True, description="also score every layer with only one of its heads left (Table 2)")

    # Michel's heads_ablation.sh scores the dev set with one head masked; nothing differs between presets.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def check(self, recipe):  # type: ignore[no-untyped-def]
        if self.model is None and recipe.model.head == "base":
            return [("", "head_ablation needs a score: set model.head (sequence-classification, causal-lm, masked-lm)")]
        return []


class HeadAblation(Step):
    kind = "head_ablation"
    Params = HeadAblationParams
    summary = (
        "Michel et al.'s ablations: the score with each single head masked (head score score_delta) and, per layer, "
        "with only one head kept (score_delta_only, table keep_best_per_layer)."
    )

    def run(self, ctx: "StepContext", params: HeadAblationParams) -> StepResult:  # type: ignore[override]
        import math

        import torch

        from workbench.analysis.metrics import default_metric, higher_is_better, metric_value
        from workbench.analysis.tasks import collate_task, evaluate_task, prepare_task
        from workbench.models.pruning import heads_json, present_heads, pruned_heads

        loaded = ctx.model(params.model)
        loaded.require_heads("head_ablation")
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        metric = params.metric or default_metric(task.kind)
        present = present_heads(loaded)  # [layers, heads]
        num_layers, num_heads = loaded.layout.shape
        batches = collate_task(loaded, task, params.batch_size)  # once, for every setting

        def score(gates: torch.Tensor) -> float:
            evaluation = evaluate_task(loaded, task, params.batch_size, gates=gates.to(loaded.device), seed=ctx.seed, batches=batches)  # type: ignore[arg-type]
            return metric_value(evaluation.metrics, metric)

        base = present.float()  # pruned heads are gone already
        original = score(base)
        heads = [(layer, head) for layer in range(num_layers) for head in range(num_heads) if present[layer, head]]
        total = len(heads) * (2 if params.keep_one else 1)
        masked = torch.full((num_layers, num_heads), math.nan)
        only = torch.full((num_layers, num_heads), math.nan)
        with ctx.bar(total, "ablations") as advance:
            for layer, head in heads:
                gates = base.clone()
                gates[layer, head] = 0.0
                masked[layer, head] = score(gates)
                advance(1)
            if params.keep_one:
                for layer, head in heads:
                    gates = base.clone()
                    gates[layer] = 0.0
                    gates[layer, head] = 1.0
                    only[layer, head] = score(gates)
                    advance(1)

        better = higher_is_better(metric)
        delta = masked - original  # [layers, heads]
        harmful = delta < 0 if better else delta > 0  # ablating the head hurts
        known = ~torch.isnan(delta)
        metrics: dict[str, float] = {
            f"original_{metric}": original,
            "heads_ablated": len(heads),
            "ablations_that_hurt": int((harmful & known).sum()),
            "ablations_that_help": int(((delta > 0 if better else delta < 0) & known).sum()),
            "mean_delta": float(delta[known].mean()),
            "worst_delta": float(delta[known].min() if better else delta[known].max()),
            "best_delta": float(delta[known].max() if better else delta[known].min()),
        }
        head_scores = {"score_delta": delta, "score_masked": masked}
        data: dict[str, Any] = {
            "metric": metric,
            "original": original,
            "definition": "score_delta = score with the head masked - original score; "
            "score_delta_only = score with only that head left in its layer - original score",
        }
        if params.keep_one:
            head_scores["score_delta_only"] = only - original
            table = []
            for layer in range(num_layers):
                scores = only[layer]
                if torch.isnan(scores).all():
                    continue
                filled = torch.where(torch.isnan(scores), -math.inf if better else math.inf, scores)
                best = int(filled.argmax() if better else filled.argmin())
                table.append({"layer": layer, "head": best, "score": float(scores[best]), "delta": float(scores[best] - original)})
            data["keep_best_per_layer"] = table
            deltas = [row["delta"] for row in table]
            metrics["keep_best_min_delta"] = min(deltas)
            metrics["keep_best_max_delta"] = max(deltas)
        if not bool(present.all()):
            data["pruned_heads"] = heads_json(pruned_heads(loaded))
        return StepResult(metrics=metrics, head_scores=head_scores, data=data)
