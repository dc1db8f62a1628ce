"""`finetune`: train the model on a dataset; outputs the trained model for later steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from workbench.steps.base import Step, StepResult
from workbench.steps.common import ModelDatasetParams

if TYPE_CHECKING:
    from workbench.context import StepContext


class FinetuneParams(ModelDatasetParams):
    eval_dataset: str | None = Field(None, description="scored after training (metrics prefixed eval_)")
    epochs: float = Field(3.0, gt=0, le=1000, description="passes over the dataset (fractions allowed)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    lr: float = Field(5e-5, gt=0, le=1, description="peak learning rate of AdamW")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="fraction of steps with linear warmup, then linear decay")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay (not on biases and norms)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping")
    batch_size: int = Field(32, ge=1, le=4096, description="examples per forward pass")
    accumulate: int = Field(
        1, ge=1, le=1024,
        description="batches whose gradients are added up before each optimizer step (an effective batch of "
        "batch_size x accumulate, weighted by examples); max_steps counts optimizer steps",
    )
    freeze: list[str] = Field(
        default_factory=list, description="parameters whose name contains any of these stay fixed, e.g. [embeddings]"
    )

    dataset_fields: ClassVar[tuple[str, ...]] = ("dataset", "eval_dataset")
    added_options: ClassVar[dict[str, object]] = {"accumulate": 1}

    def check(self, recipe):  # type: ignore[no-untyped-def]
        if self.model is None and recipe.model.head == "base":
            return [("", "finetune needs a task head: set model.head (sequence-classification, causal-lm, masked-lm)")]
        return []


class Finetune(Step):
    kind = "finetune"
    version = 2  # the model's label vocabulary; half precision through autocast with float32 master weights
    Params = FinetuneParams
    produces = frozenset({"model"})
    summary = "Fine-tune with AdamW and linear warmup/decay (classification, regression or LM loss); outputs a model."

    def run(self, ctx: "StepContext", params: FinetuneParams) -> StepResult:  # type: ignore[override]
        import math

        import torch

        from workbench.analysis.tasks import batch_loss, evaluate_task, prepare_task
        from workbench.context import MODEL_FOLDER
        from workbench.data.batching import batch_order, collate
        from workbench.errors import StepError
        from workbench.models.loading import save_model

        ctx.reseed()
        # Half precision trains through autocast on float32 master weights (AdamW on fp16 weights with
        # no loss scaling loses small updates and overflows); fp16 also scales the loss (GradScaler).
        precision = ctx.recipe_dtype
        loaded = ctx.model(params.model, dtype="float32", head_access=False, changes_weights=True)
        autocast, scaler = mixed_precision(loaded.device, precision)
        task = prepare_task(loaded, ctx.dataset(params.dataset))
        model = loaded.model
        frozen = [name for name, p in model.named_parameters() if any(part in name for part in params.freeze)]
        if params.freeze and not frozen:
            raise StepError(f"freeze: no parameter name contains any of {params.freeze}")
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name not in frozen)
        trained_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        batches_per_epoch = math.ceil(len(task) / params.batch_size)
        steps_per_epoch = math.ceil(batches_per_epoch / params.accumulate)
        total_steps = params.max_steps or max(1, math.ceil(params.epochs * steps_per_epoch))
        optimizer = torch.optim.AdamW(_parameter_groups(model, params.weight_decay), lr=params.lr)
        warmup = int(params.warmup_ratio * total_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / max(warmup, 1), max(0.0, (total_steps - step) / max(total_steps - warmup, 1)))
        )

        model.train()
        world = ctx.world
        trained, no_sync = data_parallel(loaded, world)  # DDP through accelerate in a data-parallel run
        losses: list[float] = []  # per optimizer step: this rank's share of the group's mean loss
        step, epoch, batches_done = 0, 0, 0
        with ctx.bar(total_steps, "train") as advance:
            while step < total_steps:
                order = batch_order(task.encodings.lengths, params.batch_size, order="shuffle", seed=ctx.seed + epoch)
                groups = [order[start : start + params.accumulate] for start in range(0, len(order), params.accumulate)]
                for group in groups[: total_steps - step]:
                    # One optimizer step: the mean loss over the group's examples. Each rank takes its
                    # share of every batch and DDP averages the ranks' gradients, so a rank's loss is
                    # weighted by its share of the group (one process, one batch: a weight of 1).
                    examples = sum(len(indices) for indices in group)
                    optimizer.zero_grad(set_to_none=True)
                    step_loss = 0.0
                    for position, indices in enumerate(group):
                        share = indices[world.rank :: world.size]
                        batch = collate(task.encodings, share or indices[:1], loaded.device)  # a rank with none joins in with weight 0
                        weight = len(share) * world.size / examples
                        last = position == len(group) - 1
                        with no_sync(not last):  # gradients are all-reduced once, with the last batch's backward
                            with autocast():
                                loss = batch_loss(trained, batch, task, seed=ctx.seed + epoch).losses.mean() * weight
                            scaler.scale(loss).backward()
                        step_loss += loss.item()
                    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                    torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)
                    scaler.step(optimizer)  # skipped when fp16 gradients overflowed
                    scaler.update()
                    schedule.step()
                    losses.append(step_loss)
                    batches_done += len(group)
                    step += 1
                    advance(1)
                epoch += 1
        losses = _mean_over_ranks(losses, world)  # one exchange after training, not one per step
        curve = _loss_curve(losses)
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(True)

        metrics = {
            "train_loss": sum(losses[-20:]) / len(losses[-20:]),
            "steps": step,
            "epochs": batches_done / batches_per_epoch,
            "trained_parameters": trained_parameters,
        }
        if scaler.is_enabled():
            metrics["final_loss_scale"] = float(scaler.get_scale())
        if params.eval_dataset:
            eval_task = prepare_task(loaded, ctx.dataset(params.eval_dataset))
            with autocast():
                evaluation = evaluate_task(loaded, eval_task, params.batch_size * 2, seed=ctx.seed)
            metrics.update({f"eval_{name}": value for name, value in evaluation.metrics.items()})
        if world.is_main:  # the other ranks hold the same weights
            save_model(loaded, ctx.output_dir / MODEL_FOLDER)  # float32 master weights; readers load the recipe's dtype
        data = {"loss_curve": curve, "precision": f"{precision} autocast, float32 master weights" if precision != "float32" else "float32"}
        return StepResult(metrics=metrics, data=data)


def _mean_over_ranks(losses: list[float], world) -> list[float]:  # type: ignore[no-untyped-def]
    """Each step's loss of the whole group: the ranks' shares added up (DDP's average, undone)."""
    if not world.distributed:
        return losses
    import torch

    summed = world.sum(torch.tensor(losses, dtype=torch.float64, device=world.device_for_collectives()))
    return (summed / world.size).tolist()


def _loss_curve(losses: list[float]) -> list[list[float]]:
    """[step, mean of the last 20 steps' losses] at about 50 points and at the last step."""
    every = max(1, len(losses) // 50)
    return [
        [step, sum(losses[max(0, step - 20) : step]) / len(losses[max(0, step - 20) : step])]
        for step in range(1, len(losses) + 1)
        if step % every == 0 or step == len(losses)
    ]


def data_parallel(loaded, world):  # type: ignore[no-untyped-def]
    """(the model to train, no_sync(skip) -> context): the model itself in one process; wrapped in
    DistributedDataParallel by accelerate's `prepare` in a data-parallel run, where gradients are
    all-reduced during backward unless accelerate's `no_sync` holds them back (accumulation)."""
    import dataclasses
    from contextlib import nullcontext

    if not world.distributed:
        return loaded, lambda skip: nullcontext()
    from accelerate import Accelerator

    from workbench.errors import StepError

    placed_on = sorted({str(device) for device in (loaded.device_map or {}).values()})
    if len(placed_on) > 1:  # DDP keeps a whole replica per rank
        raise StepError(
            f"finetune in a data-parallel run needs the whole model on each rank's device; model.device_map spreads it over {', '.join(placed_on)}",
            hint="drop model.device_map for this recipe, or run it as one process",
        )

    accelerator = Accelerator(cpu=loaded.device.type == "cpu")
    wrapped = accelerator.prepare_model(loaded.model)
    return dataclasses.replace(loaded, model=wrapped), lambda skip: accelerator.no_sync(wrapped) if skip else nullcontext()


def _parameter_groups(model, weight_decay: float) -> list[dict]:  # type: ignore[no-untyped-def]
    """No weight decay on biases and normalisation weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def mixed_precision(device, precision: str):  # type: ignore[no-untyped-def]
    """(autocast context factory, GradScaler) for training in `precision` on float32 weights."""
    from contextlib import nullcontext

    import torch

    from workbench.models.loading import DTYPES

    if precision == "float32":
        return nullcontext, torch.amp.GradScaler(device.type, enabled=False)
    dtype = DTYPES[precision]
    return (
        lambda: torch.autocast(device_type=device.type, dtype=dtype),
        torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
    )
