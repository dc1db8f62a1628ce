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
    timing_rounds: int = Field(
        5, ge=0, le=1000, description="rounds of inference over timing_examples for examples/s (median, IQR); 0 = off"
    )
    timing_examples: int = Field(256, ge=1, description="examples per timing round (the first ones, dataset order)")

    references: ClassVar[dict[str, str]] = {"model": "model", "mask": "mask"}

    def check(self, recipe):  # type: ignore[no-untyped-def]
        if self.model is None and recipe.model.head == "base":
            return [("", "evaluate needs a task head: set model.head (sequence-classification, causal-lm, masked-lm)")]
        return []


class Evaluate(Step):
    kind = "evaluate"
    version = 2  # the model's label vocabulary; f1 only for two classes, f1_macro and f1_micro; timed rounds
    Params = EvaluateParams
    summary = (
        "Task metrics: accuracy, F1, MCC for classification; Pearson, Spearman, MSE for regression; "
        "perplexity for LM heads. Records examples/s."
    )

    def run(self, ctx: "StepContext", params: EvaluateParams) -> StepResult:  # type: ignore[override]
        from workbench.analysis.tasks import evaluate_task, prepare_task

        loaded = ctx.model(params.model, head_access=params.mask is not None)  # a mask needs the workbench gates
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        gates = ctx.upstream(params.mask).tensors["mask"].to(loaded.device) if params.mask else None
        evaluation = evaluate_task(
            loaded, task, params.batch_size, gates=gates, seed=ctx.seed, track=lambda items, n: ctx.track(items, n, "evaluate")
        )
        metrics = {**evaluation.metrics, "examples": len(task)}
        tensors = {"predictions": evaluation.predictions} if evaluation.predictions is not None else {}
        result = StepResult(metrics=metrics, tensors=tensors)
        if params.timing_rounds:
            speed = inference_speed(loaded, task, params.batch_size, params.timing_examples, params.timing_rounds, gates)
            metrics["examples_per_s"], metrics["examples_per_s_iqr"] = speed.median, speed.iqr
            result.data["timing"] = (
                f"examples/s: median over {params.timing_rounds} rounds of plain inference on "
                f"{min(params.timing_examples, len(task))} examples at batch size {params.batch_size}, after a warm-up"
            )
            from workbench.analysis.timing import spread_warning

            warning = spread_warning("examples_per_s", speed)
            if warning:
                result.data["warnings"] = [warning]
        return result


def inference_speed(loaded, task, batch_size: int, examples: int, rounds: int, gates=None):  # type: ignore[no-untyped-def]
    """Examples/s of plain inference (no loss), over rounds after a warm-up: a timing.Spread."""
    from workbench.analysis.tasks import inference_round, synchronize
    from workbench.analysis.timing import interleaved_rates
    from workbench.data.batching import collate

    chosen = list(range(min(examples, len(task))))
    batches = [collate(task.encodings, chosen[i : i + batch_size], loaded.device) for i in range(0, len(chosen), batch_size)]
    run = inference_round(loaded, batches, gates)
    return interleaved_rates({"model": run}, rounds, synchronize=lambda: synchronize(loaded.device))["model"]
