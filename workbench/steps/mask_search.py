"""`mask_search`: the reference script's iterative head masking, without its defects.

Score the unmasked model; then repeatedly mask the `amount` fraction of heads that are least
important among those left, re-estimate importance under the new mask (optional), and re-score,
until the score falls below `threshold` x the original. The result is the last mask that met it.

Importance may be estimated on another dataset than the one scored (`importance_dataset`: Michel
ranks heads on training data and scores on dev; run_bertology uses dev for both). Language models
are judged by their loss by default: masking goes on while loss <= loss_0 / threshold, the rule of
run_prune_gpt.py, whose score is 1 / loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from workbench.steps.base import Step, StepResult
from workbench.steps.importance import HeadSelectionOptions

if TYPE_CHECKING:
    from workbench.context import StepContext

METRICS = Literal["accuracy", "f1", "f1_macro", "f1_micro", "mcc", "pearson", "spearman", "mse", "perplexity", "loss"]
METRIC_HELP = "default: accuracy (classification), pearson (regression), loss (language models: loss <= loss_0 / threshold)"


class MaskSearchParams(HeadSelectionOptions):
    threshold: float = Field(0.9, gt=0, le=1, description="keep masking while score >= threshold x original")
    amount: float = Field(0.1, gt=0, lt=1, description="fraction of all heads masked per iteration")
    reestimate: bool = Field(True, description="re-estimate importance under each new mask (the reference does)")
    metric: METRICS | None = Field(None, description=METRIC_HELP)

    # The iterative search is run_bertology.py's: |gradient| of each batch (its batch size is 1).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"granularity": "batch", "normalize_by_layer": True, "normalize_global": True, "reestimate": True},
    }
    PRESET_NOTES: ClassVar[dict[str, str]] = {
        "granularity": "run_bertology takes |dL(batch)/dxi|, exact only at batch size 1; per-example gates give "
        "E_x |dL(x)/dxi| at any batch size",
    }


class MaskSearch(Step):
    kind = "mask_search"
    version = 3  # presets, importance_dataset, min_heads_per_layer; language models judged by their loss
    Params = MaskSearchParams
    produces = frozenset({"mask"})
    summary = "Iterative masking of the least important heads while the score stays above threshold x original."

    def run(self, ctx: "StepContext", params: MaskSearchParams) -> StepResult:  # type: ignore[override]
        import torch

        from workbench.analysis.importance import mask_least_important, maskable_heads
        from workbench.analysis.metrics import default_metric, metric_value, still_acceptable
        from workbench.analysis.tasks import evaluate_task, prepare_task
        from workbench.models.pruning import present_heads

        loaded = ctx.model(params.model)
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        ranking = params.ranking_task(ctx, loaded, task)
        metric = params.metric or default_metric(task.kind)
        alive = present_heads(loaded)  # [layers, heads]; a pruned model has fewer heads
        num_heads = int(alive.sum())
        per_iteration = max(1, int(num_heads * params.amount))

        def masked_count(mask: torch.Tensor) -> int:
            return int(((mask == 0) & alive).sum())

        def score(mask: torch.Tensor) -> float:
            evaluation = evaluate_task(loaded, task, params.batch_size, gates=mask.to(loaded.device), seed=ctx.seed)
            return metric_value(evaluation.metrics, metric)  # inference only: no gradients needed

        def importance_and_score(mask: torch.Tensor, label: str) -> tuple[torch.Tensor | None, float]:
            """Importance under the mask (when re-estimated) and the score; one pass when both use one dataset."""
            if not params.reestimate:
                return None, score(mask)
            result = params.estimate(ctx, loaded, ranking, mask=mask, label=label)
            current = metric_value(result.metrics, metric) if ranking is task else score(mask)
            return result.importance, current

        mask = alive.float()  # pruned heads stay at 0
        first = params.estimate(ctx, loaded, ranking, mask=mask, label="unmasked")
        importance = first.importance
        original = metric_value(first.metrics, metric) if ranking is task else score(mask)
        iterations = [{"iteration": 0, "heads_masked": 0, "percent_masked": 0.0, "score": original}]
        kept_mask, kept_score = mask, original
        # At least one head always stays, and min_heads_per_layer in every layer.
        while min(per_iteration, maskable_heads(mask, alive, params.min_heads_per_layer)) > 0 and (
            num_heads - masked_count(mask) > per_iteration
        ):
            mask = mask_least_important(importance, mask, per_iteration, min_per_layer=params.min_heads_per_layer)
            masked = masked_count(mask)
            new_importance, current = importance_and_score(mask, f"{masked} masked")
            if new_importance is not None:
                importance = new_importance
            iterations.append(
                {"iteration": len(iterations), "heads_masked": masked, "percent_masked": 100 * masked / num_heads, "score": current}
            )
            ctx.log(f"{masked} heads masked ({100 * masked / num_heads:.0f}%): {metric} {current:.4f}")
            if not still_acceptable(current, original, params.threshold, metric):
                break
            kept_mask, kept_score = mask, current

        masked = masked_count(kept_mask)
        return StepResult(
            metrics={
                f"original_{metric}": original,
                f"final_{metric}": kept_score,
                "heads_masked": masked,
                "percent_masked": 100 * masked / num_heads,
                "iterations": len(iterations) - 1,
            },
            head_scores={"mask": kept_mask},
            tensors={"mask": kept_mask},
            data={
                "metric": metric,
                "iterations": iterations,
                "threshold": params.threshold,
                "rule": _rule(metric, params.threshold),
                "ranked_on": params.importance_dataset or params.dataset,
                "scored_on": params.dataset,
            },
        )


def _rule(metric: str, threshold: float) -> str:
    from workbench.analysis.metrics import higher_is_better

    if higher_is_better(metric):
        return f"{metric} >= {threshold:g} x original"
    return f"{metric} <= original / {threshold:g}"

