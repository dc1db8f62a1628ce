"""`importance`: head importance from gate gradients (Michel et al. 2019), and attention entropy."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from workbench.steps.base import Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    import torch

    from workbench.context import StepContext


class ImportanceOptions(ModelDatasetParams):
    """How importance is estimated; shared by importance, mask_search, prune_curve and prune."""

    granularity: Literal["example", "batch", "token"] = Field(
        "example", description="example: the paper's E_x|dL/dxi|; batch: the reference script's; token: per token"
    )
    normalize_by_layer: bool = Field(True, description="divide each layer's scores by their L2 norm (reference default)")
    normalize_global: bool = Field(True, description="then min-max all heads to [0, 1] (reference default)")

    def check(self, recipe):  # type: ignore[no-untyped-def]
        if self.model is None and recipe.model.head == "base":
            return [("", f"{self.kind} needs a loss: set model.head (sequence-classification, causal-lm, masked-lm)")]
        return []

    def estimate(self, ctx, loaded, task, *, mask=None, entropy: bool = False, label: str = "importance"):  # type: ignore[no-untyped-def]
        """Head importance on `task` with these options (and a progress bar labelled `label`)."""
        from workbench.analysis.importance import head_importance

        return head_importance(
            loaded,
            task,
            self.batch_size,
            granularity=self.granularity,
            mask=mask,
            compute_entropy=entropy,
            normalize_by_layer=self.normalize_by_layer,
            normalize_global=self.normalize_global,
            seed=ctx.seed,
            track=lambda items, n: ctx.track(items, n, label),
        )


class ImportanceParams(ImportanceOptions):
    entropy: bool = Field(True, description="also accumulate attention entropy in the same pass (eager attention)")
    mask: str | None = Field(None, description="a mask_search step: estimate importance under its head mask")

    references: ClassVar[dict[str, str]] = {"model": "model", "mask": "mask"}


class Importance(Step):
    kind = "importance"
    Params = ImportanceParams
    produces = frozenset({"importance"})
    summary = (
        "Head importance I_h = E|dL/dxi_h| from gate gradients in one backward per batch (parameters frozen), "
        "granularity example/batch/token, reference normalisation; attention entropy; ranks."
    )

    def run(self, ctx: "StepContext", params: ImportanceParams) -> StepResult:  # type: ignore[override]
        from workbench.analysis.tasks import prepare_task

        loaded = ctx.model(params.model)
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        mask = ctx.upstream(params.mask).tensors["mask"] if params.mask else None
        result = params.estimate(ctx, loaded, task, mask=mask, entropy=params.entropy)
        head_scores = {"importance": result.importance, "importance_raw": result.raw, "rank": importance_ranks(result.importance)}
        if result.entropy is not None:
            head_scores["entropy"] = result.entropy
        metrics = {
            **result.metrics,
            "examples": result.examples,
            "tokens": result.tokens,
            "examples_per_s": result.examples / result.seconds,
        }
        return StepResult(head_scores=head_scores, tensors={"importance": result.importance}, metrics=metrics)


def importance_ranks(importance: "torch.Tensor") -> "torch.Tensor":
    """Rank of every head, 1 = most important; NaN for heads without a score (pruned)."""
    import torch

    flat = importance.flatten()
    known = ~torch.isnan(flat)
    order = torch.argsort(torch.where(known, flat, -torch.inf), descending=True, stable=True)
    ranks = torch.full_like(flat, torch.nan)
    ranks[order[: int(known.sum())]] = torch.arange(1, int(known.sum()) + 1, dtype=flat.dtype)
    return ranks.view_as(importance)
