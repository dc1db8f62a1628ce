"""`prune`: remove heads for real, check it equals masking them, and measure what it buys.

The heads come from a mask (a mask_search step), an explicit {layer: [heads]} map, or a
`fraction` of the least important heads. Before pruning, the model is run with those heads gated
to zero; after pruning, the logits must agree (max |difference| recorded). Parameters and
examples/s before and after (at the batch sizes of Michel et al.'s Table 4) are recorded, and the
pruned model is saved for later steps (`model: prune`). Speeds come from interleaved rounds of the
original and the pruned model (analysis/timing.py): medians with their IQR, and a warning in the
summary when a spread is too wide to trust.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from workbench.steps.base import Step, StepResult
from workbench.steps.importance import HeadSelectionOptions

if TYPE_CHECKING:
    import torch

    from workbench.analysis.tasks import TaskData
    from workbench.context import StepContext
    from workbench.models.loading import LoadedModel

TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


class PruneParams(HeadSelectionOptions):
    dataset: str | None = Field(  # type: ignore[assignment]
        None,
        description="the dataset to verify, score and time on; default: the dataset of the step its mask or importance comes from",
    )
    mask: str | None = Field(None, description="a mask_search step: prune the heads its mask removed")
    heads: dict[int, list[int]] | None = Field(None, description="explicit {layer: [head, ...]} to prune")
    fraction: float | None = Field(None, gt=0, lt=1, description="prune this fraction of all heads, least important first")
    importance: str | None = Field(None, description="an importance step ranking heads for `fraction` (default: compute)")
    gqa_policy: Literal["groups", "per_group"] = Field(
        "groups", description="grouped-query models: prune whole K/V groups, or the same number of heads per group"
    )
    partial_groups: Literal["error", "keep", "prune"] = Field(
        "error", description="groups policy, a mask covering part of a K/V group: error, keep the group, or prune it"
    )
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 4, 16, 64], description="examples/s measured at these")
    timing_examples: int = Field(256, ge=1, description="examples per speed measurement")
    timing_rounds: int = Field(
        5, ge=1, le=1000, description="interleaved rounds (original, pruned) per batch size, after a warm-up; median and IQR"
    )
    verify_examples: int = Field(64, ge=1, description="examples whose logits must agree masked vs pruned")

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"granularity": "token", "normalize_by_layer": True, "normalize_global": False},
    }
    references: ClassVar[dict[str, str]] = {"model": "model", "mask": "mask", "importance": "importance"}

    @model_validator(mode="after")
    def _one_source(self) -> "PruneParams":
        given = [name for name in ("mask", "heads", "fraction") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of mask, heads or fraction (got {', '.join(given) or 'none'})")
        if self.importance is not None and self.fraction is None:
            raise ValueError("importance ranks heads for `fraction`; it is not used with mask or heads")
        return self

    def with_defaults_from(self, steps):  # type: ignore[no-untyped-def]
        """Without a dataset, the one the mask (or the importance) was computed on: the heads were chosen there."""
        if self.dataset is not None:
            return self
        for source in (self.mask, self.importance):
            dataset = getattr(steps.get(source), "dataset", None) if source else None
            if isinstance(dataset, str):
                return self.model_copy(update={"dataset": dataset})
        return self

    def check(self, recipe):  # type: ignore[no-untyped-def]
        if self.dataset is None:
            return [("", "prune needs a dataset: set `dataset:` (it defaults to that of its mask or importance step)")]
        return super().check(recipe)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError("give positive batch sizes")
        return value


class Prune(Step):
    kind = "prune"
    version = 2  # speeds from interleaved rounds (median, IQR); presets; min_heads_per_layer
    Params = PruneParams
    produces = frozenset({"model"})
    summary = (
        "Structural pruning (every layout README.md's model table marks, GQA policies included): verifies masked == pruned logits, "
        "counts parameters, measures examples/s before/after in interleaved rounds (median, IQR); outputs the pruned model."
    )

    def run(self, ctx: "StepContext", params: PruneParams) -> StepResult:  # type: ignore[override]
        import torch

        from workbench.analysis.metrics import default_metric
        from workbench.analysis.tasks import evaluate_task, prepare_task
        from workbench.context import MODEL_FOLDER
        from workbench.errors import StepError
        from workbench.models.loading import save_model
        from workbench.models.pruning import count_parameters, heads_json, prune_heads, pruned_heads

        loaded = ctx.model(params.model, changes_weights=True)
        loaded.require_heads("pruning")
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        metric = default_metric(task.kind)
        reported = [metric, "perplexity"] if task.kind == "lm" else [metric]  # loss, and the perplexity people quote
        before_map = pruned_heads(loaded)
        requested = self._heads_to_prune(ctx, params, loaded, task, before_map)
        if not any(requested.values()):
            raise StepError("nothing to prune: the mask, map or fraction selects no head")
        _check_min_heads(requested, before_map, loaded.layout.num_heads, params.min_heads_per_layer)

        verify = list(range(min(params.verify_examples, len(task))))
        parameters_before = count_parameters(loaded)
        original = evaluate_task(loaded, task, params.batch_size, seed=ctx.seed).metrics

        reference = ctx.model(params.model)  # stays unpruned: masked logits, and the "before" speed
        after_map = prune_heads(loaded, requested, gqa_policy=params.gqa_policy, partial_groups=params.partial_groups)
        removed = {layer: sorted(set(heads) - set(before_map.get(layer, []))) for layer, heads in after_map.items()}
        gates = heads_to_gates(after_map, loaded.layout.shape).to(loaded.device)
        masked_logits = logits(reference, task, verify, params.batch_size, gates)
        masked_scores = evaluate_task(reference, task, params.batch_size, gates=gates, seed=ctx.seed).metrics
        pruned_logits = logits(loaded, task, verify, params.batch_size)
        difference = (masked_logits - pruned_logits).abs().max().item()
        tolerance = TOLERANCE[str(loaded.model.dtype).removeprefix("torch.")]
        if not difference <= tolerance:
            raise StepError(f"pruned logits differ from masked logits by {difference:.2e} (> {tolerance:g})")
        pruned_scores = evaluate_task(loaded, task, params.batch_size, seed=ctx.seed).metrics
        speed = measure_speed(ctx, reference, loaded, task, params)
        del reference
        parameters_after = count_parameters(loaded)
        save_model(loaded, ctx.output_dir / MODEL_FOLDER)  # with its pruned-head map

        total = loaded.layout.num_layers * loaded.layout.num_heads
        heads_before = total - sum(len(h) for h in before_map.values())
        heads_after = total - sum(len(h) for h in after_map.values())
        metrics: dict[str, float] = {
            "heads_pruned": heads_before - heads_after,
            "heads_remaining": heads_after,
            "parameters_before": parameters_before,
            "parameters_after": parameters_after,
            "max_abs_logit_difference": difference,
        }
        for name in reported:
            metrics.update({f"{name}_original": original[name], f"{name}_masked": masked_scores[name], f"{name}_pruned": pruned_scores[name]})
        warnings = []
        for row in speed:
            size = row["batch_size"]
            metrics[f"examples_per_s_bs{size}_before"] = row["before"]["median"]
            metrics[f"examples_per_s_bs{size}_before_iqr"] = row["before"]["iqr"]
            metrics[f"examples_per_s_bs{size}_after"] = row["after"]["median"]
            metrics[f"examples_per_s_bs{size}_after_iqr"] = row["after"]["iqr"]
            metrics[f"speedup_bs{size}"] = row["speedup"]["median"]
            metrics[f"speedup_bs{size}_iqr"] = row["speedup"]["iqr"]
            warnings += row.pop("warnings")
        data = {
            "metric": metric,
            "parameters_before": parameters_before,
            "parameters_after": parameters_after,
            "heads_before": heads_before,
            "heads_after": heads_after,
            "score_masked": masked_scores[metric],
            "score_pruned": pruned_scores[metric],
            "max_abs_logit_difference": difference,
            "speed": speed,
            "timing": f"examples/s: median over {params.timing_rounds} interleaved rounds of {min(params.timing_examples, len(task))} "
            "examples after a warm-up; speedup: median of the per-round ratios (after / before)",
            "pruned_heads": heads_json(after_map),
            "removed_now": heads_json(removed),
        }
        if warnings:
            data["warnings"] = warnings
        pruned_grid = torch.zeros(loaded.layout.shape)
        for layer, heads in after_map.items():
            pruned_grid[layer, heads] = 1.0
        return StepResult(metrics=metrics, data=data, head_scores={"pruned": pruned_grid})

    @staticmethod
    def _heads_to_prune(ctx, params, loaded, task, already) -> dict[int, list[int]]:  # type: ignore[no-untyped-def]
        from workbench.analysis.head_selection import select_heads_to_prune

        if params.heads is not None:
            return {int(layer): sorted(heads) for layer, heads in params.heads.items()}
        if params.mask is not None:
            mask = ctx.upstream(params.mask).tensors["mask"]
            return {layer: (mask[layer] == 0).nonzero().flatten().tolist() for layer in range(mask.shape[0])}
        if params.importance is not None:
            importance = ctx.upstream(params.importance).tensors["importance"]
        else:
            importance = params.estimate(ctx, loaded, params.ranking_task(ctx, loaded, task)).importance
        return select_heads_to_prune(
            importance,
            params.fraction,
            num_kv_heads=loaded.layout.num_kv_heads,
            gqa_policy=params.gqa_policy,
            already_pruned=already,
            min_per_layer=params.min_heads_per_layer,
        )


def heads_to_gates(heads: dict[int, list[int]], shape: tuple[int, int]) -> "torch.Tensor":
    """A {layer: [heads]} map -> gates [layers, heads] with 0 at those heads."""
    import torch

    gates = torch.ones(shape)
    for layer, removed in heads.items():
        gates[layer, removed] = 0.0
    return gates


def logits(loaded: "LoadedModel", task: "TaskData", indices: list[int], batch_size: int, gates=None) -> "torch.Tensor":  # type: ignore[no-untyped-def]
    """The model's output logits for the given examples, in order, as float32 on the CPU."""
    import torch

    from workbench.data.batching import collate
    from workbench.models.attention import head_hooks

    outputs = []
    with torch.inference_mode(), head_hooks(gates=gates):
        for start in range(0, len(indices), batch_size):
            batch = collate(task.encodings, indices[start : start + batch_size], loaded.device)
            out = loaded.model(**batch.model_inputs()).logits  # [batch, labels] or [batch, seq, vocab]
            for row, length in zip(out, batch.attention_mask.sum(1).tolist()):
                kept = row[:length] if out.dim() == 3 else row  # LM heads: the real tokens only
                outputs.append(kept.float().cpu().flatten())
    return torch.cat(outputs)


def measure_speed(
    ctx: "StepContext", before: "LoadedModel", after: "LoadedModel", task: "TaskData", params: PruneParams
) -> list[dict[str, Any]]:
    """Examples/s of plain inference of both models at each batch size, in interleaved rounds.

    The same first examples (dataset order) are cut into batches once and fed to both models; each
    batch size gets a warm-up round per model, then `timing_rounds` rounds alternating the order.
    """
    from workbench.analysis.tasks import inference_round, synchronize
    from workbench.analysis.timing import interleaved_rates, ratio, spread_warning
    from workbench.data.batching import collate

    examples = list(range(min(params.timing_examples, len(task))))
    rows = []
    for size in ctx.track(params.batch_sizes, len(params.batch_sizes), "speed"):
        batches = [collate(task.encodings, examples[i : i + size], after.device) for i in range(0, len(examples), size)]
        rates = interleaved_rates(
            {"before": inference_round(before, batches), "after": inference_round(after, batches)},
            params.timing_rounds,
            synchronize=lambda: synchronize(after.device),
        )
        speedup = ratio(rates["after"], rates["before"])
        row: dict[str, Any] = {"batch_size": size}
        for name, spread in (*rates.items(), ("speedup", speedup)):
            q1, q3 = spread.quartiles
            row[name] = {"median": spread.median, "q1": q1, "q3": q3, "iqr": spread.iqr, "rounds": list(spread.values)}
        row["warnings"] = [
            warning
            for name, spread in (("before", rates["before"]), ("after", rates["after"]), ("speedup", speedup))
            if (warning := spread_warning(f"{name} at batch size {size}", spread))
        ]
        rows.append(row)
    return rows


def _check_min_heads(
    requested: dict[int, list[int]], already: dict[int, list[int]], num_heads: int, minimum: int
) -> None:
    """An explicit mask or map may not leave a layer with fewer than `min_heads_per_layer` heads."""
    from workbench.errors import StepError

    for layer, heads in requested.items():
        left = num_heads - len(set(heads) | set(already.get(layer, [])))
        if left < minimum:
            raise StepError(
                f"pruning leaves layer {layer} with {left} heads, fewer than min_heads_per_layer={minimum}"
            )
