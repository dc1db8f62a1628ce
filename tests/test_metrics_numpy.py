"""The workbench's numpy classification metrics equal scikit-learn's, value for value (issue 14: they
replace sklearn.metrics, whose import costs a fresh run more than half a second)."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis.metrics import classification_metrics


def _sklearn(labels, predictions, num_labels):  # type: ignore[no-untyped-def]
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    expected = {"accuracy": float(accuracy_score(labels, predictions))}
    if num_labels == 2:
        expected["f1"] = float(f1_score(labels, predictions, average="binary", pos_label=1, zero_division=0))
    expected["f1_macro"] = float(f1_score(labels, predictions, average="macro", zero_division=0))
    expected["f1_micro"] = float(f1_score(labels, predictions, average="micro", zero_division=0))
    expected["mcc"] = float(matthews_corrcoef(labels, predictions))
    return expected


@pytest.mark.parametrize("num_labels", [2, 3, 5])
def test_numpy_metrics_equal_sklearn_on_random_labels(num_labels):
    generator = np.random.default_rng(num_labels)
    for trial in range(300):
        size = int(generator.integers(1, 60))
        used = int(generator.integers(1, num_labels + 1))  # some classes may be absent from both
        labels = generator.integers(0, used, size)
        predictions = np.where(generator.random(size) < 0.6, labels, generator.integers(0, num_labels, size))
        ours = classification_metrics(labels, predictions, num_labels)
        assert ours == _sklearn(labels, predictions, num_labels), (trial, labels.tolist(), predictions.tolist())


@pytest.mark.parametrize(
    ("labels", "predictions"),
    [([0, 0, 0], [0, 0, 0]), ([1, 1], [1, 1]), ([0, 1], [1, 0]), ([0, 0, 1], [0, 0, 0]), ([1], [0])],
)
def test_degenerate_cases_equal_sklearn(labels, predictions):
    labels, predictions = np.array(labels), np.array(predictions)
    assert classification_metrics(labels, predictions, 2) == _sklearn(labels, predictions, 2)
