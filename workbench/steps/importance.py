"""`importance`: head importance from gate gradients (Michel et al. 2019), and attention entropy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from workbench.steps.base import PresetParams, Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    import torch

    from workbench.context import StepContext


class ImportanceOptions(ModelDatasetParams, PresetParams):
    """How importance is estimated; shared by importance, mask_search, prune_curve and prune.

    `paper` is Michel et al.'s own code (run_classifier.py): |dL/dxi| per token, each layer
    L2-normalised, no global min-max. `workbench` takes the paper's definition E_x |dL(x)/dxi|
    exactly (one gate per example) and the reference script's two normalisations.
    """

    granularity: Literal["example", "batch", "token"] = Field(
        "example", description="example: the paper's E_x|dL/dxi|; batch: the reference script's; token: Michel's code"
    )
    normalize_by_layer: bool = Field(True, description="divide each layer's scores by their L2 norm (reference default)")
    normalize_global: bool = Field(True, description="then min-max all heads to [0, 1] (reference default)")
    micro_batch_size: int = Field(
        32, ge=1, le=65536,
        description="granularity batch: examples per forward pass inside a group of batch_size (exact; saves padding)",
    )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"granularity": "token", "normalize_by_layer": True, "normalize_global": False},
    }
    PRESET_NOTES: ClassVar[dict[str, str]] = {
        "granularity": "E_x |dL(x)/dxi| is the paper's definition; per-example gates give it exactly in one pass",
        "normalize_global": "min-max to [0, 1] (run_bertology) makes scores comparable between runs; "
        "it does not change the ranking",
    }
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
            micro_batch_size=self.micro_batch_size,
        )


class HeadSelectionOptions(ImportanceOptions):
    """Options of the steps that choose heads to mask or prune by importance."""

    importance_dataset: str | None = Field(
        None,
        description="estimate importance on this dataset (Michel: a sample of the training set) and score "
        "on `dataset`; default: `dataset` for both, as run_bertology does",
    )
    min_heads_per_layer: int = Field(
        0, ge=0, description="never mask or prune a layer below this many heads (Michel's at_least_x_heads_per_layer)"
    )

    dataset_fields: ClassVar[tuple[str, ...]] = ("dataset", "importance_dataset")

    def ranking_task(self, ctx, loaded, task):  # type: ignore[no-untyped-def]
        """The task importance is estimated on: `importance_dataset`, or the scored `dataset` itself."""
        from workbench.analysis.tasks import prepare_task

        if self.importance_dataset is None or self.importance_dataset == self.dataset:
            return task
        return prepare_task(loaded, ctx.dataset(self.importance_dataset))


class ImportanceParams(ImportanceOptions):
    entropy: bool = Field(True, description="also accumulate attention entropy in the same pass (eager attention)")
    mask: str | None = Field(None, description="a mask_search step: estimate importance under its head mask")

    references: ClassVar[dict[str, str]] = {"model": "model", "mask": "mask"}


class Importance(Step):
    kind = "importance"
    version = 2  # presets; the entropy head score is named entropy_per_token; no single-pass speed
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
            head_scores["entropy_per_token"] = result.entropy  # the reference's; attention's is entropy_smoothed
        metrics = {**result.metrics, "examples": result.examples, "tokens": result.tokens}
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
