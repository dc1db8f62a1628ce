"""`evaluate`: task metrics of a model on a dataset, and its speed."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from workbench.steps.base import Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    from workbench.context import StepContext


class EvaluateParams(ModelDatasetParams):
    batch_size: int = Field(64, ge=1, le=65536, description="examples per forward pass (padding is per batch)")
    mask: str | None = Field(None, description="a mask_search step: evaluate with its heads masked")

    references: ClassVar[dict[str, str]] = {"model": "model", "mask": "mask"}

    def check(self, recipe):  # type: ignore[no-untyped-def]
        if self.model is None and recipe.model.head == "base":
            return [("", "evaluate needs a task head: set model.head (sequence-classification, causal-lm, masked-lm)")]
        return []


class Evaluate(Step):
    kind = "evaluate"
    Params = EvaluateParams
    summary = (
        "Task metrics: accuracy, F1, MCC for classification; Pearson, Spearman, MSE for regression; "
        "perplexity for LM heads. Records examples/s."
    )

    def run(self, ctx: "StepContext", params: EvaluateParams) -> StepResult:  # type: ignore[override]
        from workbench.analysis.tasks import evaluate_task, prepare_task

        loaded = ctx.model(params.model)
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        gates = ctx.upstream(params.mask).tensors["mask"].to(loaded.device) if params.mask else None
        evaluation = evaluate_task(
            loaded, task, params.batch_size, gates=gates, seed=ctx.seed, track=lambda items, n: ctx.track(items, n, "evaluate")
        )
        metrics = {**evaluation.metrics, "examples_per_s": evaluation.examples_per_s, "examples": len(task)}
        tensors = {"predictions": evaluation.predictions} if evaluation.predictions is not None else {}
        return StepResult(metrics=metrics, tensors=tensors)
