"""`prune_curve`: score vs the percentage of least important heads masked (Michel et al., Fig. 3b)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from workbench.steps.base import Step, StepResult
from workbench.steps.importance import HeadSelectionOptions
from workbench.steps.mask_search import METRIC_HELP, METRICS

if TYPE_CHECKING:
    from workbench.context import StepContext


class PruneCurveParams(HeadSelectionOptions):
    percents: list[float] = Field(
        default_factory=lambda: [0, 10, 20, 30, 40, 50, 60, 70, 80, 90], description="% of heads masked at each point"
    )
    importance: str | None = Field(None, description="an importance step to rank heads by (default: compute it here)")
    reestimate: bool = Field(False, description="re-estimate importance under each mask before masking more")
    metric: METRICS | None = Field(None, description=METRIC_HELP)

    # Michel's Figure 3 (run_classifier.py): token-level |gradient|, ranked once (--exact_pruning re-ranks).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"granularity": "token", "normalize_by_layer": True, "normalize_global": False, "reestimate": False},
    }

    references: ClassVar[dict[str, str]] = {"model": "model", "importance": "importance"}

    @field_validator("percents")
    @classmethod
    def _valid_percents(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 <= p < 100 for p in value) or value != sorted(set(value)):
            raise ValueError("give increasing, distinct percentages in [0, 100)")
        return value


class PruneCurve(Step):
    kind = "prune_curve"
    version = 3  # presets, importance_dataset, min_heads_per_layer; language models judged by their loss
    Params = PruneCurveParams
    summary = "Mask the k% least important heads for each k and score the model: the pruning curve."

    def run(self, ctx: "StepContext", params: PruneCurveParams) -> StepResult:  # type: ignore[override]
        import torch

        from workbench.analysis.importance import mask_least_important
        from workbench.models.pruning import present_heads
        from workbench.analysis.metrics import default_metric, metric_value
        from workbench.analysis.tasks import evaluate_task, prepare_task

        loaded = ctx.model(params.model)
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        ranking = params.ranking_task(ctx, loaded, task)
        metric = params.metric or default_metric(task.kind)
        alive = present_heads(loaded)  # [layers, heads]; percentages are of the heads that exist
        num_heads = int(alive.sum())

        def estimate(mask: torch.Tensor) -> torch.Tensor:
            return params.estimate(ctx, loaded, ranking, mask=mask).importance

        def masked_count(mask: torch.Tensor) -> int:
            return int(((mask == 0) & alive).sum())

        mask = alive.float()
        importance = ctx.upstream(params.importance).tensors["importance"] if params.importance else estimate(mask)
        curve = []
        for percent in ctx.track(params.percents, len(params.percents), "curve"):
            masked, target = masked_count(mask), round(num_heads * percent / 100)
            if params.reestimate and 0 < masked < target:
                importance = estimate(mask)  # rank the remaining heads under the current mask
            mask = mask_least_important(importance, mask, target - masked, min_per_layer=params.min_heads_per_layer)
            if masked_count(mask) < target:
                ctx.log(f"{percent:g}%: min_heads_per_layer={params.min_heads_per_layer} leaves no more heads to mask")
                break
            evaluation = evaluate_task(loaded, task, params.batch_size, gates=mask.to(loaded.device), seed=ctx.seed)
            score = metric_value(evaluation.metrics, metric)
            curve.append({"percent": percent, "heads_masked": masked_count(mask), "score": score})
        metrics = {f"{metric}@{point['percent']:g}%": point["score"] for point in curve}
        data = {
            "metric": metric,
            "curve": curve,
            "ranked_on": (
                ctx.upstream_params(params.importance).dataset  # type: ignore[attr-defined]
                if params.importance and not params.reestimate
                else params.importance_dataset or params.dataset
            ),
            "scored_on": params.dataset,
        }
        return StepResult(metrics=metrics, data=data)
