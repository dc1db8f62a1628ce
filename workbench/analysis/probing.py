"""Probing classifiers on frozen features: layer-wise, scalar-mix, cumulative and control probes.

Definitions follow Tenney, Das & Pavlick (2019, "BERT Rediscovers the Classical NLP Pipeline",
arXiv 1905.05950) and Hewitt & Liang (2019, "Designing and Interpreting Probes with Control Tasks"):

- scalar mix: h = gamma * sum_l softmax(a)_l h_l, learned jointly with the probe on top;
  s = softmax(a) are the mixing weights and sum_l l * s_l is their center of gravity.
- cumulative probes: P(l) sees a scalar mix of layers 0..l; Delta(l) = score(P(l)) - score(P(l-1))
  for l >= 1; expected layer = sum_l l * Delta(l) / sum_l Delta(l).
- control task: every word type gets one fixed random label drawn from the empirical distribution
  of the real labels; selectivity = task accuracy - control accuracy.

Features arrive already extracted as `[layers, examples, dim]`, layer 0 being the embeddings. When
only some hidden states were extracted, `layers` (the hidden-state index of each slot, e.g. [0, 4, 8])
puts the center of gravity and the expected layer in layer units rather than slot units. An
example is a word (token tasks) or a word pair whose two feature vectors the caller concatenated
(edge tasks). Features are standardised with train statistics; probes are trained with AdamW
(full batch by default) and early-stopped on dev accuracy, restoring the best weights. Everything
is deterministic given `ProbeConfig.seed`. Nothing here prints: progress goes through `on_progress`.
Results are plain dataclasses of floats, ready for `dataclasses.asdict`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from sklearn.metrics import f1_score
from torch import Tensor, nn

from workbench.errors import StepError

ProbeKind = Literal["linear", "mlp"]
Objective = Literal["softmax", "sigmoid"]
Metric = Literal["accuracy", "macro_f1", "micro_f1"]
SplitName = Literal["dev", "test"]
Progress = Callable[[int], None]
"""Called once per trained probe with the layer index it belongs to."""


@dataclass(frozen=True)
class ProbeConfig:
    """How one probe is trained; the same config is reused for every layer."""

    kind: ProbeKind = "linear"
    hidden: int = 256  # MLP hidden width; unused by linear probes
    lr: float = 3e-2  # suits full batch; lower it for mini-batches
    weight_decay: float = 0.0  # AdamW decay on weight matrices only (not biases, not the mix)
    max_epochs: int = 300
    batch_size: int | None = None  # None: full batch, i.e. one optimiser step per epoch
    patience: int = 20  # epochs without a better dev accuracy before stopping
    seed: int = 0
    objective: Objective = "softmax"  # sigmoid: one-vs-rest cross-entropy, as jiant's edge probes
    standardize_mix: bool = True  # False: a scalar mix of the RAW layers (jiant's do_layer_norm=False)


@dataclass(frozen=True)
class Splits:
    """Train / dev / test examples, each an index tensor or a boolean mask over the N examples."""

    train: Tensor
    dev: Tensor
    test: Tensor


@dataclass
class TrainedProbe:
    """A trained probe. `module` maps raw features `[N, dim]` (or `[layers, N, dim]` for a scalar
    mix probe) to logits `[N, classes]`; standardisation is part of it."""

    module: nn.Module
    objective: Objective
    best_dev_accuracy: float
    best_epoch: int  # 0-based epoch whose weights were restored
    steps: int  # optimiser steps actually run
    dev_curve: list[float]  # dev accuracy after every epoch


@dataclass(frozen=True)
class ProbeScores:
    """Test scores of one probe per layer, index 0 = embeddings (the probe step makes each metric a
    `workbench.scores.LayerScores` line over the hidden-state indices)."""

    accuracy: list[float]  # [layers]
    macro_f1: list[float]  # [layers]
    dev_accuracy: list[float]  # [layers], the early-stopping criterion
    micro_f1: list[float] | None = None  # [layers]


@dataclass(frozen=True)
class ScalarMixResult:
    """A probe on a learned scalar mix of layers 0..L (Tenney et al. 2019, eq. 1)."""

    weights: list[float]  # s_l = softmax(a)_l, [layers]
    gamma: float
    center_of_gravity: float  # sum_l l * s_l, l the hidden-state index of each mixed slot
    accuracy: float  # test
    macro_f1: float  # test
    dev_accuracy: float


@dataclass(frozen=True)
class CumulativeResult:
    """Cumulative scalar-mix probes P(0..L) and the expected layer (Tenney et al. 2019, sec. 3)."""

    scores: list[float]  # score(P(l)) in `metric` on `split`, [layers]
    deltas: list[float]  # Delta(l) for l = 1..L, [layers - 1]
    expected_layer: float  # in hidden-state indices; NaN when sum_l Delta(l) <= 0
    mixes: list[ScalarMixResult]  # the probe P(l) for each l; mixes[-1] mixes every layer
    metric: Metric
    split: SplitName


# ----------------------------------------------------------------------------- public API


def train_probe(
    features: Tensor,
    labels: Tensor,
    train_idx: Tensor,
    dev_idx: Tensor,
    config: ProbeConfig = ProbeConfig(),
) -> TrainedProbe:
    """Train a linear or MLP probe on one layer's features `[N, dim]` to predict `labels` `[N]`.

    Trains on `train_idx`, early-stops on dev accuracy over `dev_idx` (indices or boolean masks)
    and restores the weights of the best dev epoch.
    """
    if features.dim() != 2:
        raise StepError(f"train_probe expects features [examples, dim], got shape {list(features.shape)}")
    return _train(features, labels, train_idx, dev_idx, config, mix=False)


def evaluate_probe(probe: TrainedProbe, features: Tensor, labels: Tensor, idx: Tensor) -> dict[str, float]:
    """Accuracy, macro-F1 and micro-F1 of `probe` on the examples `idx` (indices or boolean mask).

    `features` has the shape the probe was trained on: `[N, dim]`, or `[layers, N, dim]` for a
    scalar-mix probe. Accuracy and macro-F1 judge the argmax class. Micro-F1 is jiant's for
    sigmoid probes: every (example, class) with sigmoid > 0.5 is a predicted label, and
    F1 = 2 TP / (2 TP + FP + FN) over all of them; for softmax probes it is the micro-F1 of the
    argmax, which equals the accuracy.
    """
    idx = _as_index(idx, labels.numel(), "idx")
    with torch.no_grad():
        logits = probe.module(features.index_select(-2, idx).float())  # [len(idx), classes]
    predicted = logits.argmax(dim=-1)  # [len(idx)]
    gold = labels[idx]
    scores = {
        "accuracy": (predicted == gold).double().mean().item(),
        "macro_f1": float(f1_score(gold.numpy(), predicted.numpy(), average="macro", zero_division=0)),
    }
    if probe.objective == "sigmoid":
        chosen = torch.sigmoid(logits) > 0.5  # [len(idx), classes]
        truth = nn.functional.one_hot(gold, logits.shape[-1]).bool()
        true_positive = (chosen & truth).sum().item()
        errors = (chosen ^ truth).sum().item()  # false positives + false negatives
        scores["micro_f1"] = 2 * true_positive / (2 * true_positive + errors) if true_positive + errors else 0.0
    else:
        scores["micro_f1"] = scores["accuracy"]
    return scores


def layerwise_probes(
    features: Tensor,
    labels: Tensor,
    splits: Splits,
    config: ProbeConfig = ProbeConfig(),
    on_progress: Progress | None = None,
) -> ProbeScores:
    """Train one probe per layer on `features` `[layers, N, dim]`; score each on the test split."""
    _check_layered(features, labels)
    accuracy, macro_f1, micro_f1, dev_accuracy = [], [], [], []
    for layer in range(features.shape[0]):
        probe = train_probe(features[layer], labels, splits.train, splits.dev, config)
        scores = evaluate_probe(probe, features[layer], labels, splits.test)
        accuracy.append(scores["accuracy"])
        macro_f1.append(scores["macro_f1"])
        micro_f1.append(scores["micro_f1"])
        dev_accuracy.append(probe.best_dev_accuracy)
        if on_progress is not None:
            on_progress(layer)
    return ProbeScores(accuracy=accuracy, macro_f1=macro_f1, dev_accuracy=dev_accuracy, micro_f1=micro_f1)


def scalar_mix_probe(
    features: Tensor,
    labels: Tensor,
    splits: Splits,
    config: ProbeConfig = ProbeConfig(),
    *,
    layers: Sequence[int] | None = None,
) -> ScalarMixResult:
    """Learn h = gamma * sum_l softmax(a)_l h_l jointly with a probe on top (Tenney et al. 2019).

    `features` is `[layers, N, dim]`; with `config.standardize_mix` each layer is standardised
    with its own train statistics before mixing, so the weights compare layers rather than their
    scales; without it the layers are mixed raw, as jiant's ScalarMix(do_layer_norm=False) does.
    `layers` gives the hidden-state index of each slot (default: 0, 1, ...) for the center of gravity.
    """
    return _scalar_mix(features, labels, splits, config, _slot_layers(layers, features))[1]


def cumulative_probes(
    features: Tensor,
    labels: Tensor,
    splits: Splits,
    config: ProbeConfig = ProbeConfig(),
    *,
    metric: Metric = "accuracy",
    split: SplitName = "test",
    on_progress: Progress | None = None,
    layers: Sequence[int] | None = None,
) -> CumulativeResult:
    """Cumulative probes (Tenney et al. 2019): P(l) is a scalar-mix probe over layers 0..l.

    Delta(l) = score(P(l)) - score(P(l-1)) and expected layer = sum_l l * Delta(l) / sum_l Delta(l).
    Tenney et al. score on dev F1; here the score is `metric` on `split` (default test accuracy).
    `layers` gives the hidden-state index of each slot (default: 0, 1, ...): l in the expected
    layer and in every mix's center of gravity is that index, P(l) still mixes slots 0..l.
    """
    _check_layered(features, labels)
    layers = _slot_layers(layers, features)
    if metric not in ("accuracy", "macro_f1", "micro_f1") or split not in ("dev", "test"):
        raise StepError(
            f"cannot score cumulative probes by {metric!r} on {split!r}",
            hint="metric: accuracy, macro_f1 or micro_f1; split: dev or test",
        )
    mixes, scores = [], []
    for layer in range(features.shape[0]):
        seen = features[: layer + 1]  # [layer + 1, N, dim]
        probe, mix = _scalar_mix(seen, labels, splits, config, layers[: layer + 1])
        mixes.append(mix)
        scores.append(evaluate_probe(probe, seen, labels, getattr(splits, split))[metric])
        if on_progress is not None:
            on_progress(layer)
    deltas = [after - before for before, after in zip(scores, scores[1:])]
    return CumulativeResult(
        scores=scores,
        deltas=deltas,
        expected_layer=expected_layer(deltas, layers),
        mixes=mixes,
        metric=metric,
        split=split,
    )


def center_of_gravity(weights: Sequence[float], layers: Sequence[int] | None = None) -> float:
    """sum_l l * s_l over scalar-mix weights s (Tenney et al. 2019): the mix's average layer.

    `layers[i]` is the hidden-state index of slot i (default: i), so a mix of a subset of the
    layers still answers in layer units.
    """
    indices = range(len(weights)) if layers is None else _check_length(layers, len(weights), "weights")
    return float(sum(layer * weight for layer, weight in zip(indices, weights)))


def expected_layer(deltas: Sequence[float], layers: Sequence[int] | None = None) -> float:
    """sum_l l * Delta(l) / sum_l Delta(l), where deltas[0] is Delta(1) (Tenney et al. 2019).

    `layers[i]` is the hidden-state index of slot i (default: i); deltas[i] belongs to slot i + 1,
    so `layers` has one entry more than `deltas`. Negative deltas are kept as they are, as in the
    paper. When sum_l Delta(l) <= 0 no layer adds information over the first one and the
    expectation is undefined: the result is NaN.
    """
    indices = range(1, len(deltas) + 1) if layers is None else _check_length(layers, len(deltas) + 1, "deltas + 1")[1:]
    total = sum(deltas)
    if total <= 0:
        return math.nan
    return sum(layer * delta for layer, delta in zip(indices, deltas)) / total


def control_labels(keys: Sequence[Hashable], labels: Tensor, seed: int = 0, train: Tensor | None = None) -> Tensor:
    """Control task labels (Hewitt & Liang 2019), `[N]`.

    Every distinct key (a word type such as the lower-cased form, or a pair of types for edge
    tasks) gets one label drawn from the empirical distribution of the TRAINING labels
    (`labels[train]`; all of `labels` when `train` is None); every example with that key gets it,
    whichever split the example is in. Types are drawn in order of first appearance, so the result
    depends only on `keys`, `labels`, `train` and `seed`.
    """
    if len(keys) != labels.numel():
        raise StepError(f"control_labels got {len(keys)} keys for {labels.numel()} labels")
    if not keys:
        raise StepError("control_labels needs at least one example")
    type_ids: dict[Hashable, int] = {}
    example_types = torch.tensor([type_ids.setdefault(key, len(type_ids)) for key in keys])  # [N]
    drawn_from = labels if train is None else labels[_as_index(train, labels.numel(), "train")]
    label_counts = torch.bincount(drawn_from, minlength=int(labels.max()) + 1).double()  # [classes], train distribution
    generator = torch.Generator().manual_seed(seed)
    type_labels = torch.multinomial(label_counts, len(type_ids), replacement=True, generator=generator)
    return type_labels[example_types]  # [N]


def selectivity(task: ProbeScores, control: ProbeScores) -> list[float]:
    """Per-layer task accuracy minus control-task accuracy (Hewitt & Liang 2019)."""
    return [real - fake for real, fake in zip(task.accuracy, control.accuracy, strict=True)]


# ----------------------------------------------------------------------------- modules


class ScalarMix(nn.Module):
    """h = gamma * sum_l softmax(a)_l h_l over layers `[layers, batch, dim]` -> `[batch, dim]`."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))  # a, uniform mix at the start
        self.gamma = nn.Parameter(torch.ones(()))

    def weights(self) -> Tensor:
        """s = softmax(a), `[layers]`."""
        return torch.softmax(self.logits.detach(), dim=0)

    def forward(self, layers: Tensor) -> Tensor:
        return self.gamma * torch.einsum("l,lbd->bd", torch.softmax(self.logits, dim=0), layers)


class Standardize(nn.Module):
    """(x - mean) / std with train statistics per dimension (and per layer for stacked input).

    `enabled=False` keeps the features as they are (mean 0, std 1), for a mix of raw layers.
    """

    def __init__(self, train_features: Tensor, enabled: bool = True):
        super().__init__()
        shape = (*train_features.shape[:-2], 1, train_features.shape[-1])
        mean = train_features.mean(dim=-2, keepdim=True) if enabled else torch.zeros(shape)
        std = train_features.std(dim=-2, keepdim=True).clamp_min(1e-6) if enabled else torch.ones(shape)
        self.register_buffer("mean", mean)  # [..., 1, dim]
        self.register_buffer("std", std)

    def forward(self, features: Tensor) -> Tensor:
        return (features - self.mean) / self.std


class _Core(nn.Module):
    """Optional scalar mix followed by the classifier; works on standardised features."""

    def __init__(self, mix: ScalarMix | None, classifier: nn.Module):
        super().__init__()
        self.mix = mix
        self.classifier = classifier

    def forward(self, features: Tensor) -> Tensor:
        return self.classifier(features if self.mix is None else self.mix(features))


class _Probe(nn.Module):
    """Raw features -> logits: standardisation, then the trained core."""

    def __init__(self, standardize: Standardize, core: _Core):
        super().__init__()
        self.standardize = standardize
        self.core = core

    def forward(self, features: Tensor) -> Tensor:
        return self.core(self.standardize(features))


# ----------------------------------------------------------------------------- training


def _scalar_mix(
    features: Tensor, labels: Tensor, splits: Splits, config: ProbeConfig, layers: Sequence[int] | None = None
) -> tuple[TrainedProbe, ScalarMixResult]:
    """Train a scalar-mix probe on `[layers, N, dim]` and summarise it on the test split.

    `layers`: the hidden-state index of each slot, for the center of gravity (default: 0, 1, ...).
    """
    _check_layered(features, labels)
    probe = _train(features, labels, splits.train, splits.dev, config, mix=True)
    mix: ScalarMix = probe.module.core.mix
    weights = mix.weights().tolist()
    scores = evaluate_probe(probe, features, labels, splits.test)
    return probe, ScalarMixResult(
        weights=weights,
        gamma=mix.gamma.item(),
        center_of_gravity=center_of_gravity(weights, layers),
        accuracy=scores["accuracy"],
        macro_f1=scores["macro_f1"],
        dev_accuracy=probe.best_dev_accuracy,
    )


def _train(
    features: Tensor, labels: Tensor, train_idx: Tensor, dev_idx: Tensor, config: ProbeConfig, *, mix: bool
) -> TrainedProbe:
    """Fit a probe on features `[N, dim]` (mix=False) or `[layers, N, dim]` (mix=True)."""
    _check_config(config)
    _check_labels(features, labels)
    n = labels.numel()
    train_idx = _as_index(train_idx, n, "train")
    dev_idx = _as_index(dev_idx, n, "dev")
    generator = torch.Generator().manual_seed(config.seed)

    standardize = Standardize(features.index_select(-2, train_idx).float(), enabled=not mix or config.standardize_mix)
    with torch.no_grad():
        x_train = standardize(features.index_select(-2, train_idx).float())  # [(layers,) train, dim]
        x_dev = standardize(features.index_select(-2, dev_idx).float())  # [(layers,) dev, dim]
    num_classes = int(labels.max()) + 1
    scalar_mix = ScalarMix(features.shape[0]) if mix else None
    core = _Core(scalar_mix, _classifier(config, features.shape[-1], num_classes, generator))

    best_accuracy, best_epoch, steps, curve = _fit(
        core, x_train, labels[train_idx], x_dev, labels[dev_idx], config, generator
    )
    return TrainedProbe(
        module=_Probe(standardize, core).eval(),
        objective=config.objective,
        best_dev_accuracy=best_accuracy,
        best_epoch=best_epoch,
        steps=steps,
        dev_curve=curve,
    )


def _fit(
    core: _Core,
    x_train: Tensor,
    y_train: Tensor,
    x_dev: Tensor,
    y_dev: Tensor,
    config: ProbeConfig,
    generator: torch.Generator,
) -> tuple[float, int, int, list[float]]:
    """AdamW with early stopping on dev accuracy; leaves `core` holding its best-dev weights.

    Returns (best dev accuracy, best epoch, optimiser steps run, dev accuracy per epoch).
    """
    optimizer = torch.optim.AdamW(_param_groups(core, config.weight_decay), lr=config.lr)
    best_accuracy, best_epoch, best_state = -1.0, 0, _snapshot(core)
    steps, curve = 0, []
    for epoch in range(config.max_epochs):
        for batch in _batches(y_train.numel(), config.batch_size, generator):
            inputs = x_train if batch is None else x_train.index_select(-2, batch)
            targets = y_train if batch is None else y_train[batch]
            loss = _loss(core(inputs), targets, config.objective)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        accuracy = (_predict(core, x_dev) == y_dev).double().mean().item()
        curve.append(accuracy)
        if accuracy > best_accuracy:
            best_accuracy, best_epoch, best_state = accuracy, epoch, _snapshot(core)
        elif epoch - best_epoch >= config.patience:
            break
    core.load_state_dict(best_state)
    return best_accuracy, best_epoch, steps, curve


def _loss(logits: Tensor, targets: Tensor, objective: Objective) -> Tensor:
    """Softmax cross-entropy, or jiant's sigmoid cross-entropy against one-hot targets."""
    if objective == "sigmoid":
        return nn.functional.binary_cross_entropy_with_logits(
            logits, nn.functional.one_hot(targets, logits.shape[-1]).to(logits.dtype)
        )
    return nn.functional.cross_entropy(logits, targets)


def _batches(n: int, batch_size: int | None, generator: torch.Generator) -> list[Tensor | None]:
    """One epoch of batches: [None] for full batch, else shuffled index chunks."""
    if batch_size is None or batch_size >= n:
        return [None]
    return list(torch.randperm(n, generator=generator).split(batch_size))


def _param_groups(core: _Core, weight_decay: float) -> list[dict]:
    """Decay weight matrices only; biases and the scalar mix (a, gamma) are left alone."""
    matrices = [p for p in core.parameters() if p.dim() >= 2]
    others = [p for p in core.parameters() if p.dim() < 2]
    return [{"params": matrices, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _classifier(config: ProbeConfig, dim: int, num_classes: int, generator: torch.Generator) -> nn.Module:
    """A linear map, or a one-hidden-layer ReLU MLP, initialised from `generator`."""
    if config.kind == "linear":
        return _linear(dim, num_classes, generator)
    return nn.Sequential(
        _linear(dim, config.hidden, generator), nn.ReLU(), _linear(config.hidden, num_classes, generator)
    )


def _linear(in_features: int, out_features: int, generator: torch.Generator) -> nn.Linear:
    """nn.Linear with PyTorch's default U(-1/sqrt(in), 1/sqrt(in)) init, drawn from `generator`
    rather than the global RNG."""
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features)
    bound = 1.0 / math.sqrt(in_features)
    for parameter in (layer.weight, layer.bias):
        nn.init.uniform_(parameter, -bound, bound, generator=generator)
    return layer


@torch.no_grad()
def _predict(module: nn.Module, features: Tensor) -> Tensor:
    """Predicted class per example, `[N]`."""
    return module(features.float()).argmax(dim=-1)


# ----------------------------------------------------------------------------- validation


def _as_index(split: Tensor, n: int, name: str) -> Tensor:
    """Turn a boolean mask `[N]` or an index tensor into a non-empty long index tensor."""
    if split.dtype == torch.bool:
        if split.shape != (n,):
            raise StepError(f"the {name} mask has shape {list(split.shape)}, expected [{n}]")
        split = split.nonzero().squeeze(1)
    if split.dim() != 1 or split.is_floating_point():
        raise StepError(f"the {name} split must be a 1-D index tensor or boolean mask")
    if split.numel() == 0:
        raise StepError(f"the {name} split is empty")
    if int(split.min()) < 0 or int(split.max()) >= n:
        raise StepError(f"the {name} split indexes outside the {n} examples")
    return split.long()


def _check_labels(features: Tensor, labels: Tensor) -> None:
    if labels.dim() != 1 or labels.is_floating_point():
        raise StepError(f"labels must be a 1-D integer tensor, got shape {list(labels.shape)}")
    if features.shape[-2] != labels.numel():
        raise StepError(f"features hold {features.shape[-2]} examples but there are {labels.numel()} labels")
    if int(labels.min()) < 0:
        raise StepError("labels must be class ids >= 0")


def _check_length(layers: Sequence[int], expected: int, what: str) -> list[int]:
    layers = [int(layer) for layer in layers]
    if len(layers) != expected:
        raise StepError(f"{len(layers)} layer indices given for {expected} slots ({what})")
    return layers


def _slot_layers(layers: Sequence[int] | None, features: Tensor) -> list[int]:
    """The hidden-state index of every slot of `features` `[layers, N, dim]` (default: 0, 1, ...)."""
    if layers is None:
        return list(range(features.shape[0]))
    return _check_length(layers, features.shape[0], "feature layers")


def _check_layered(features: Tensor, labels: Tensor) -> None:
    if features.dim() != 3:
        raise StepError(f"expected features [layers, examples, dim], got shape {list(features.shape)}")
    _check_labels(features, labels)


def _check_config(config: ProbeConfig) -> None:
    if config.kind not in ("linear", "mlp"):
        raise StepError(f"unknown probe kind {config.kind!r}", hint="use 'linear' or 'mlp'")
    if config.max_epochs < 1 or config.patience < 1 or config.hidden < 1:
        raise StepError("max_epochs, patience and hidden must be at least 1")
    if config.batch_size is not None and config.batch_size < 1:
        raise StepError("batch_size must be at least 1, or null for full batch")
