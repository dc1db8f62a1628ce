"""Probing core on synthetic features whose labels live in one known layer."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest
import torch

from workbench.analysis.probing import (
    ProbeConfig,
    Splits,
    center_of_gravity,
    control_labels,
    cumulative_probes,
    evaluate_probe,
    expected_layer,
    layerwise_probes,
    scalar_mix_probe,
    selectivity,
    train_probe,
)
from workbench.errors import StepError

INFORMATIVE = 2
LAYERS, EXAMPLES, DIM, CLASSES = 5, 1200, 16, 4


def _splits(n: int, seed: int = 0) -> Splits:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train, dev = int(0.6 * n), int(0.8 * n)
    return Splits(train=order[:train], dev=order[train:dev], test=order[dev:])


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These problems are tiny: one thread avoids OpenMP overhead, which dominates on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def layered() -> tuple[torch.Tensor, torch.Tensor, Splits]:
    """Labels are a linear function of layer 2 only; every other layer is independent noise."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(LAYERS, EXAMPLES, DIM, generator=generator)  # [layers, words, dim]
    readout = torch.randn(DIM, CLASSES, generator=generator)
    labels = (features[INFORMATIVE] @ readout).argmax(dim=1)  # [words]
    return features, labels, _splits(EXAMPLES)


def test_layerwise_accuracy_peaks_at_the_informative_layer(layered):
    features, labels, splits = layered
    seen = []
    scores = layerwise_probes(features, labels, splits, on_progress=seen.append)
    assert seen == list(range(LAYERS))
    assert max(range(LAYERS), key=scores.accuracy.__getitem__) == INFORMATIVE
    assert scores.accuracy[INFORMATIVE] > 0.85
    assert scores.macro_f1[INFORMATIVE] > 0.8
    noise = [acc for layer, acc in enumerate(scores.accuracy) if layer != INFORMATIVE]
    assert max(noise) < 0.5


def test_scalar_mix_concentrates_on_the_informative_layer(layered):
    features, labels, splits = layered
    mix = scalar_mix_probe(features, labels, splits)
    assert len(mix.weights) == LAYERS
    assert math.isclose(sum(mix.weights), 1.0, rel_tol=1e-5)
    assert mix.weights[INFORMATIVE] > 0.5
    assert abs(mix.center_of_gravity - INFORMATIVE) < 0.4
    assert mix.accuracy > 0.8


def test_cumulative_deltas_put_the_expected_layer_at_the_informative_layer(layered):
    features, labels, splits = layered
    result = cumulative_probes(features, labels, splits)
    assert len(result.scores) == LAYERS and len(result.deltas) == LAYERS - 1
    assert max(range(1, LAYERS), key=lambda layer: result.deltas[layer - 1]) == INFORMATIVE
    assert result.deltas[INFORMATIVE - 1] > 0.4
    assert abs(result.expected_layer - INFORMATIVE) < 0.4
    assert result.mixes[-1].weights[INFORMATIVE] > 0.5


def test_expected_layer_follows_the_definition_and_is_nan_without_gain():
    # Delta(1) = 0.1, Delta(2) = 0.3, Delta(3) = -0.1: (1*0.1 + 2*0.3 - 3*0.1) / 0.3
    assert expected_layer([0.1, 0.3, -0.1]) == pytest.approx(0.4 / 0.3)
    assert math.isnan(expected_layer([0.0, 0.0]))
    assert math.isnan(expected_layer([0.1, -0.2]))


def test_layer_indices_put_center_and_expected_layer_in_layer_units():
    assert center_of_gravity([0.25, 0.75]) == pytest.approx(0.75)
    assert center_of_gravity([0.25, 0.75], layers=[4, 8]) == pytest.approx(7.0)
    # slots [0, 4, 8]: Delta(4) = 0.1, Delta(8) = 0.3 -> (4 * 0.1 + 8 * 0.3) / 0.4
    assert expected_layer([0.1, 0.3], layers=[0, 4, 8]) == pytest.approx(2.8 / 0.4)
    assert expected_layer([0.1, 0.3], layers=[0, 1, 2]) == expected_layer([0.1, 0.3])
    assert math.isnan(expected_layer([0.1, -0.2], layers=[0, 4, 8]))
    with pytest.raises(StepError, match="layer indices"):
        expected_layer([0.1, 0.3], layers=[4, 8])
    with pytest.raises(StepError, match="layer indices"):
        center_of_gravity([0.5, 0.5], layers=[1, 2, 3])


def test_probes_on_a_subset_of_layers_answer_in_layer_units(layered):
    """Slots 0, 1, 2 hold hidden states 0, 2, 4: the informative layer 2 is slot 1."""
    features, labels, splits = layered
    subset, layers = features[[0, INFORMATIVE, 4]], [0, INFORMATIVE, 4]
    config = ProbeConfig(max_epochs=60)
    mix = scalar_mix_probe(subset, labels, splits, config, layers=layers)
    assert mix.center_of_gravity == pytest.approx(sum(l * w for l, w in zip(layers, mix.weights)))
    assert abs(mix.center_of_gravity - INFORMATIVE) < 0.6
    result = cumulative_probes(subset, labels, splits, config, layers=layers)
    assert result.expected_layer == pytest.approx(expected_layer(result.deltas, layers))
    assert abs(result.expected_layer - INFORMATIVE) < 0.6
    assert [m.center_of_gravity for m in result.mixes] == pytest.approx(
        [center_of_gravity(m.weights, layers[: len(m.weights)]) for m in result.mixes]
    )
    with pytest.raises(StepError, match="layer indices"):
        scalar_mix_probe(subset, labels, splits, config, layers=[0, 2])


def test_control_labels_are_fixed_per_type_and_follow_the_label_distribution():
    generator = torch.Generator().manual_seed(1)
    num_types, occurrences = 20_000, 3
    probabilities = torch.tensor([0.6, 0.3, 0.1])
    labels = torch.multinomial(probabilities, num_types * occurrences, replacement=True, generator=generator)
    keys = [f"w{i % num_types}" for i in range(num_types * occurrences)]

    control = control_labels(keys, labels, seed=3)
    by_type: dict[str, set[int]] = {}
    for key, label in zip(keys, control.tolist()):
        by_type.setdefault(key, set()).add(label)
    assert all(len(assigned) == 1 for assigned in by_type.values())

    type_counts = Counter(next(iter(assigned)) for assigned in by_type.values())
    empirical = torch.bincount(labels).double() / labels.numel()
    for label in range(3):
        assert type_counts[label] / num_types == pytest.approx(empirical[label].item(), abs=0.015)

    assert torch.equal(control, control_labels(keys, labels, seed=3))
    assert not torch.equal(control, control_labels(keys, labels, seed=4))


def test_control_labels_accept_word_pairs_as_types():
    keys = [("the", "dog"), ("dog", "the"), ("the", "dog")]
    control = control_labels(keys, torch.tensor([0, 1, 2]), seed=0)
    assert control[0] == control[2]


def test_selectivity_is_high_where_the_task_is_decodable(layered):
    features, labels, splits = layered
    words = [f"w{i}" for i in range(EXAMPLES)]  # every word its own type: control is unlearnable
    task = layerwise_probes(features, labels, splits)
    control = layerwise_probes(features, control_labels(words, labels, seed=0), splits)
    gaps = selectivity(task, control)
    assert gaps[INFORMATIVE] > 0.4
    assert all(abs(gap) < 0.25 for layer, gap in enumerate(gaps) if layer != INFORMATIVE)


def test_a_linear_probe_cannot_fit_xor_but_an_mlp_can():
    points = torch.rand(2000, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1  # [words, 2]
    labels = ((points[:, 0] > 0) ^ (points[:, 1] > 0)).long()
    splits = _splits(len(labels))
    scores = {}
    for kind in ("linear", "mlp"):
        probe = train_probe(points, labels, splits.train, splits.dev, ProbeConfig(kind=kind, hidden=32))
        scores[kind] = evaluate_probe(probe, points, labels, splits.test)["accuracy"]
    assert scores["linear"] < 0.7
    assert scores["mlp"] > 0.9


def test_same_seed_gives_identical_probes(layered):
    features, labels, splits = layered
    config = ProbeConfig(kind="mlp", hidden=32, batch_size=128, max_epochs=15, seed=7)
    first = train_probe(features[INFORMATIVE], labels, splits.train, splits.dev, config)
    second = train_probe(features[INFORMATIVE], labels, splits.train, splits.dev, config)
    other = train_probe(features[INFORMATIVE], labels, splits.train, splits.dev, replace(config, seed=8))
    assert first.dev_curve == second.dev_curve and first.steps == second.steps
    for name, value in first.module.state_dict().items():
        assert torch.equal(value, second.module.state_dict()[name])
    assert other.dev_curve != first.dev_curve


def test_early_stopping_restores_the_best_dev_weights():
    """Few examples, many dimensions, noisy labels: dev accuracy peaks early, then overfitting sets in."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(300, 200, generator=generator)  # [words, dim]
    clean = (features[:, 0] > 0).long()
    flipped = torch.rand(300, generator=generator) < 0.3
    labels = torch.where(flipped, 1 - clean, clean)
    splits = Splits(train=torch.arange(0, 100), dev=torch.arange(100, 200), test=torch.arange(200, 300))
    config = ProbeConfig(patience=15, max_epochs=500)

    probe = train_probe(features, labels, splits.train, splits.dev, config)

    assert probe.best_dev_accuracy == max(probe.dev_curve)
    assert probe.dev_curve[probe.best_epoch] == probe.best_dev_accuracy
    assert probe.dev_curve[-1] < probe.best_dev_accuracy
    assert len(probe.dev_curve) == probe.best_epoch + config.patience + 1 < config.max_epochs
    assert probe.steps == len(probe.dev_curve)  # full batch: one step per epoch
    restored = evaluate_probe(probe, features, labels, splits.dev)["accuracy"]
    assert restored == pytest.approx(probe.best_dev_accuracy)


def test_masks_and_indices_select_the_same_examples(layered):
    features, labels, splits = layered
    mask = torch.zeros(EXAMPLES, dtype=torch.bool)
    mask[splits.train] = True
    by_index = train_probe(features[INFORMATIVE], labels, splits.train.sort().values, splits.dev)
    by_mask = train_probe(features[INFORMATIVE], labels, mask, splits.dev)
    assert by_index.dev_curve == by_mask.dev_curve


def test_bad_inputs_raise_step_errors(layered):
    features, labels, splits = layered
    with pytest.raises(StepError, match="empty"):
        train_probe(features[0], labels, torch.tensor([], dtype=torch.long), splits.dev)
    with pytest.raises(StepError, match="labels"):
        train_probe(features[0], labels[:10], splits.train, splits.dev)
    with pytest.raises(StepError, match="kind"):
        train_probe(features[0], labels, splits.train, splits.dev, ProbeConfig(kind="forest"))
    with pytest.raises(StepError, match="layers"):
        layerwise_probes(features[0], labels, splits)
