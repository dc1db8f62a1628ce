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
    Params = MaskSearchParams
    produces = frozenset({"mask"})
    summary = "Iterative masking of the least important heads while the score stays above threshold x original."

    def run(self, ctx: "StepContext", params: MaskSearchParams) -> StepResult:  # type: ignore[override]
        import torch

        from workbench.analysis.importance import mask_least_important
        from workbench.analysis.metrics import default_metric, metric_value, still_acceptable
        from workbench.analysis.tasks import prepare_task

        loaded = ctx.model(params.model)
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        metric = params.metric or default_metric(task.kind)
        num_heads = loaded.layout.num_layers * loaded.layout.num_heads
        per_iteration = max(1, int(num_heads * params.amount))

        def estimate(mask: torch.Tensor, label: str):  # importance and score from the same passes
            result = params.estimate(ctx, loaded, task, mask=mask, label=label)
            return result.importance, metric_value(result.metrics, metric)

        mask = torch.ones(loaded.layout.shape)
        importance, original = estimate(mask, "unmasked")
        iterations = [{"iteration": 0, "heads_masked": 0, "percent_masked": 0.0, "score": original}]
        kept_mask, kept_score = mask, original
        while int(mask.sum()) > per_iteration:  # at least one head always stays
            mask = mask_least_important(importance, mask, per_iteration)
            new_importance, score = estimate(mask, f"{int((mask == 0).sum())} masked")
            if params.reestimate:
                importance = new_importance
            masked = int((mask == 0).sum())
            iterations.append(
                {"iteration": len(iterations), "heads_masked": masked, "percent_masked": 100 * masked / num_heads, "score": score}
            )
            ctx.log(f"{masked} heads masked ({100 * masked / num_heads:.0f}%): {metric} {score:.4f}")
            if not still_acceptable(score, original, params.threshold, metric):
                break
            kept_mask, kept_score = mask, score

        masked = int((kept_mask == 0).sum())
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
