"""The task a model head defines: its inputs, its per-example loss and its predictions.

Shared by finetune, evaluate, importance, mask search and pruning curves, so that "the loss" and
"the score" mean the same thing everywhere:

    sequence-classification  cross-entropy (num_labels > 1) or MSE (num_labels == 1)
    causal-lm                next-token cross-entropy over real tokens
    masked-lm                cross-entropy on 15% of the tokens, masked with a fixed seed
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from workbench.analysis.metrics import classification_metrics, lm_metrics, regression_metrics
from workbench.data.batching import Batch, Encodings, encode_dataset
from workbench.data.loaded import LoadedDataset
from workbench.distributed import World, current_world
from workbench.errors import StepError
from workbench.models.loading import LoadedModel

MLM_PROBABILITY = 0.15


@dataclass
class TaskData:
    encodings: Encodings
    labels: torch.Tensor | None  # [examples]; None for language modelling
    kind: str  # classification | regression | lm
    num_labels: int = 1  # classes of a classification head

    def __len__(self) -> int:
        return len(self.encodings)


def prepare_task(loaded: LoadedModel, dataset: LoadedDataset) -> TaskData:
    """Tokenize a text dataset for the model's head; map its labels through the model's vocabulary."""
    from workbench.data.labels import label_ids, regression_targets

    if not dataset.supports("texts"):
        raise StepError(f"dataset '{dataset.name}' is a {dataset.kind} dataset; this step needs text")
    kind = loaded.problem_type
    if kind == "none":
        raise StepError("the model has no task head; set model.head to sequence-classification, causal-lm or masked-lm")
    labels = dataset.labels() if kind != "lm" else None
    if kind != "lm" and labels is None:
        raise StepError(f"dataset '{dataset.name}' has no label column (set `label:` in the recipe)")
    encodings = encode_dataset(loaded.tokenizer, dataset, token_types=loaded.uses_token_types)  # once per run
    if kind == "lm":
        return TaskData(encodings, None, "lm")
    if kind == "regression":
        return TaskData(encodings, torch.tensor(regression_targets(labels, dataset.name), dtype=torch.float32), kind)
    ids = label_ids(labels, dataset.name, loaded.num_labels, loaded.labels)
    return TaskData(encodings, torch.tensor(ids, dtype=torch.long), kind, loaded.num_labels)


@dataclass
class BatchLoss:
    losses: torch.Tensor  # [batch] per-example loss (mean over the example's predicted tokens for LMs)
    tokens: torch.Tensor  # [batch] number of predicted tokens (1 per example for classification)
    outputs: torch.Tensor  # [batch] predicted class / value; [batch] summed NLL for LMs


def batch_loss(loaded: LoadedModel, batch: Batch, task: TaskData, seed: int = 0) -> BatchLoss:
    """Forward one batch and compute every example's loss, keeping the graph for backward."""
    inputs = batch.model_inputs()
    if task.kind == "lm" and loaded.head == "masked-lm":
        inputs, targets = _mask_tokens(loaded, batch, seed)
    elif task.kind == "lm":
        targets = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    logits = loaded.model(**inputs).logits
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # losses in full precision
    if task.kind == "classification":
        labels = task.labels[batch.indices].to(logits.device)  # type: ignore[index]
        losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return BatchLoss(losses, torch.ones_like(losses), logits.argmax(-1))
    if task.kind == "regression":
        labels = task.labels[batch.indices].to(logits.device, logits.dtype)  # type: ignore[index]
        predictions = logits.squeeze(-1)
        return BatchLoss((predictions - labels) ** 2, torch.ones_like(predictions), predictions)
    if loaded.head == "causal-lm":
        logits, targets = logits[:, :-1], targets[:, 1:]  # position t predicts token t+1
    token_nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=-100, reduction="none"
    )  # [batch, seq]
    tokens = (targets != -100).sum(-1)
    summed = token_nll.sum(-1)
    return BatchLoss(summed / tokens.clamp(min=1), tokens, summed)


def _mask_tokens(loaded: LoadedModel, batch: Batch, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Replace 15% of real, non-special tokens with [MASK]; the same tokens for the same example and seed."""
    tokenizer = loaded.tokenizer
    if tokenizer.mask_token_id is None:  # type: ignore[attr-defined]
        raise StepError("a masked-lm head needs a tokenizer with a mask token")
    special = torch.tensor(tokenizer.all_special_ids, device=batch.input_ids.device)  # type: ignore[attr-defined]
    candidates = (batch.attention_mask == 1) & ~torch.isin(batch.input_ids, special)
    chosen = torch.zeros_like(candidates)
    for row, index in enumerate(batch.indices.tolist()):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        draws = torch.rand(batch.input_ids.shape[1], generator=generator).to(candidates.device)
        chosen[row] = candidates[row] & (draws < MLM_PROBABILITY)
        if not chosen[row].any() and candidates[row].any():
            chosen[row, candidates[row].nonzero()[0, 0]] = True  # every example predicts at least one token
    inputs = batch.model_inputs()
    inputs["input_ids"] = batch.input_ids.masked_fill(chosen, tokenizer.mask_token_id)  # type: ignore[attr-defined]
    return inputs, batch.input_ids.masked_fill(~chosen, -100)


class ScoreAccumulator:
    """Collects predictions over batches and turns them into the task's metrics."""

    def __init__(self, task: TaskData):
        self.task = task
        self.predictions: list[torch.Tensor] = []
        self.indices: list[torch.Tensor] = []
        self.total_nll = 0.0
        self.total_tokens = 0

    def add(self, batch: Batch, loss: BatchLoss) -> None:
        if self.task.kind == "lm":
            self.total_nll += float(loss.outputs.detach().sum())
            self.total_tokens += int(loss.tokens.sum())
        else:
            self.predictions.append(loss.outputs.detach().cpu())
            self.indices.append(batch.indices)

    def combine(self, world: World) -> None:
        """Take in every rank's predictions (a data-parallel run: each rank saw its own batches)."""
        if not world.distributed:
            return
        if self.task.kind == "lm":
            self.total_nll = float(world.sum_number(self.total_nll))
            self.total_tokens = int(world.sum_number(self.total_tokens))
            return
        mine = (torch.cat(self.predictions), torch.cat(self.indices)) if self.indices else None
        parts = [part for part in world.gather_by_rank(mine) if part is not None]
        self.predictions = [predictions for predictions, _ in parts]
        self.indices = [indices for _, indices in parts]

    def metrics(self) -> dict[str, float]:
        if self.task.kind == "lm":
            return lm_metrics(self.total_nll, self.total_tokens)
        predictions = torch.cat(self.predictions).numpy()
        labels = self.task.labels[torch.cat(self.indices)].numpy()  # type: ignore[index]
        if self.task.kind == "regression":
            return regression_metrics(labels.astype(np.float64), predictions.astype(np.float64))
        return classification_metrics(labels, predictions, self.task.num_labels)

    def predictions_in_order(self) -> torch.Tensor | None:
        """Predictions indexed by example (None for LMs)."""
        if self.task.kind == "lm":
            return None
        order = torch.cat(self.indices)
        predictions = torch.cat(self.predictions)
        result = torch.empty_like(predictions)
        result[order] = predictions
        return result


@dataclass
class Evaluation:
    metrics: dict[str, float]
    seconds: float
    examples: int
    predictions: torch.Tensor | None  # [examples] in dataset order (None for LMs)


def evaluate_task(
    loaded: LoadedModel,
    task: TaskData,
    batch_size: int,
    *,
    gates: torch.Tensor | None = None,
    seed: int = 0,
    track: Callable[[Iterable[Batch], int], Iterable[Batch]] | None = None,
    batches: list[Batch] | None = None,
    world: World | None = None,
) -> Evaluation:
    """Score the model on a task under optional head gates (a head mask is gates of 0/1).

    `batches`: the task's examples already collated (`collate_task`), for callers that score many
    gate settings on the same data. In a data-parallel run (`world`, by default this process's)
    each rank scores its share of the batches and the metrics are computed from all of them.
    """
    from workbench.models.attention import head_hooks

    world = world or current_world()
    loaded.model.eval()
    accumulator = ScoreAccumulator(task)
    if batches is None:
        batches = collate_task(loaded, task, batch_size, lazy=True, world=world)  # type: ignore[assignment]
    else:
        batches = world.shard(batches)
    if track is not None:
        batches = track(batches, math.ceil(math.ceil(len(task) / batch_size) / world.size))  # type: ignore[assignment,arg-type]
    synchronize(loaded.device)
    started = time.perf_counter()
    with torch.inference_mode(), head_hooks(gates=gates):
        for batch in batches:
            accumulator.add(batch, batch_loss(loaded, batch, task, seed))
    synchronize(loaded.device)
    seconds = time.perf_counter() - started
    accumulator.combine(world)
    return Evaluation(accumulator.metrics(), seconds, len(task), accumulator.predictions_in_order())


def collate_task(
    loaded: LoadedModel, task: TaskData, batch_size: int, *, lazy: bool = False, world: World | None = None
) -> Iterable[Batch]:
    """The task's examples in length-sorted batches on the model's device (a list, or a generator).

    With `world`, only this rank's share of the batches.
    """
    from workbench.data.batching import batch_order, collate

    order = batch_order(task.encodings.lengths, batch_size)
    if world is not None:
        order = world.shard(order)
    batches = (collate(task.encodings, indices, loaded.device) for indices in order)
    return batches if lazy else list(batches)


def inference_round(loaded: LoadedModel, batches: list[Batch], gates: torch.Tensor | None = None) -> Callable[[], int]:
    """One timing round of plain inference over `batches` (no loss): returns the examples it ran."""
    from workbench.models.attention import head_hooks

    examples = sum(len(batch) for batch in batches)

    def run() -> int:
        with torch.inference_mode(), head_hooks(gates=gates):
            for batch in batches:
                loaded.model(**batch.model_inputs())
        return examples

    return run


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so timings measure the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
