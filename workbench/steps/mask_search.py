"""`mask_search`: the reference script's iterative head masking, without its defects.

Score the unmasked model; then repeatedly mask the `amount` fraction of heads that are least
important among those left, re-estimate importance under the new mask (optional), and re-score,
until the score falls below `threshold` x the original. The result is the last mask that met it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from workbench.steps.base import Step, StepResult
from workbench.steps.importance import ImportanceOptions

if TYPE_CHECKING:
    from workbench.context import StepContext

METRICS = Literal["accuracy", "f1", "mcc", "pearson", "spearman", "mse", "perplexity", "loss"]


class MaskSearchParams(ImportanceOptions):
    threshold: float = Field(0.9, gt=0, le=1, description="keep masking while score >= threshold x original")
    amount: float = Field(0.1, gt=0, lt=1, description="fraction of all heads masked per iteration")
    reestimate: bool = Field(True, description="re-estimate importance under each new mask (the reference does)")
    metric: METRICS | None = Field(None, description="default: accuracy, pearson or perplexity by model head")


class MaskSearch(Step):
    kind = "mask_search"
    version = 2  # works on pruned models; scores by inference when importance is not re-estimated
    Params = MaskSearchParams
    produces = frozenset({"mask"})
    summary = "Iterative masking of the least important heads while the score stays above threshold x original."

    def run(self, ctx: "StepContext", params: MaskSearchParams) -> StepResult:  # type: ignore[override]
        import torch

        from workbench.analysis.importance import mask_least_important
        from workbench.models.pruning import present_heads
        from workbench.analysis.metrics import default_metric, metric_value, still_acceptable
        from workbench.analysis.tasks import evaluate_task, prepare_task

        loaded = ctx.model(params.model)
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        metric = params.metric or default_metric(task.kind)
        alive = present_heads(loaded)  # [layers, heads]; a pruned model has fewer heads
        num_heads = int(alive.sum())
        per_iteration = max(1, int(num_heads * params.amount))

        def masked_count(mask: torch.Tensor) -> int:
            return int(((mask == 0) & alive).sum())

        def score(mask: torch.Tensor, label: str) -> tuple[torch.Tensor | None, float]:
            """(importance under the mask if it is re-estimated, score) from the same passes."""
            if params.reestimate:
                result = params.estimate(ctx, loaded, task, mask=mask, label=label)
                return result.importance, metric_value(result.metrics, metric)
            evaluation = evaluate_task(loaded, task, params.batch_size, gates=mask.to(loaded.device), seed=ctx.seed)
            return None, metric_value(evaluation.metrics, metric)  # inference only: no gradients needed

        mask = alive.float()  # pruned heads stay at 0
        first = params.estimate(ctx, loaded, task, mask=mask, label="unmasked")
        importance, original = first.importance, metric_value(first.metrics, metric)
        iterations = [{"iteration": 0, "heads_masked": 0, "percent_masked": 0.0, "score": original}]
        kept_mask, kept_score = mask, original
        while num_heads - masked_count(mask) > per_iteration:  # at least one head always stays
            mask = mask_least_important(importance, mask, per_iteration)
            masked = masked_count(mask)
            new_importance, current = score(mask, f"{masked} masked")
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
            data={"metric": metric, "iterations": iterations, "threshold": params.threshold},
        )
