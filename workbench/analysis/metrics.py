"""Task metrics and which direction is better for each.

Classification metrics are computed here with numpy, by scikit-learn's own formulas (the same
operations in the same order: tests/test_metrics_numpy.py checks equality with sklearn.metrics on
random labels), because importing sklearn.metrics costs a fresh run more than half a second
(issue 14). Regression metrics use scipy (transformers has imported it already).
"""

from __future__ import annotations

import math

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "f1", "f1_macro", "f1_micro", "mcc")
REGRESSION_METRICS = ("pearson", "spearman", "mse")
LM_METRICS = ("perplexity", "loss")
LOWER_IS_BETTER = {"perplexity", "loss", "mse"}


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy, F1 and Matthews correlation; which F1 follows the model's head, never the data.

    `f1` is GLUE's (binary, positive class 1) and exists only for two-class heads; `f1_macro`
    (unweighted mean over the classes that occur in the labels or predictions) and `f1_micro`
    are reported for every classification head.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)  # sklearn's label union
    truth, guess = encoded[: len(labels)], encoded[len(labels) :]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)  # [true class, predicted class]
    np.add.at(confusion, (truth, guess), 1)
    tp, true_sum, pred_sum = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    metrics = {"accuracy": float(np.average(labels == predictions))}
    if num_labels == 2:
        positive = np.flatnonzero(classes == 1)
        metrics["f1"] = float(_f1(tp[positive], true_sum[positive], pred_sum[positive])[0]) if len(positive) else 0.0
    metrics["f1_macro"] = float(np.average(_f1(tp, true_sum, pred_sum)))
    metrics["f1_micro"] = float(_f1(tp.sum(keepdims=True), true_sum.sum(keepdims=True), pred_sum.sum(keepdims=True))[0])
    metrics["mcc"] = _mcc(confusion)
    return metrics


def _f1(tp: np.ndarray, true_sum: np.ndarray, pred_sum: np.ndarray) -> np.ndarray:
    """sklearn's F-score with beta 1: (1 + b^2) tp / (b^2 true + predicted), 0 where nothing is true or predicted."""
    denominator = 1.0 * true_sum.astype(np.float64) + pred_sum.astype(np.float64)
    numerator = 2.0 * tp.astype(np.float64)
    scores = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=scores, where=denominator != 0)
    return scores


def _mcc(confusion: np.ndarray) -> float:
    """Matthews' correlation of a multi-class confusion matrix, as sklearn's matthews_corrcoef computes it."""
    t_sum = confusion.sum(axis=1, dtype=np.float64)
    p_sum = confusion.sum(axis=0, dtype=np.float64)
    n_correct = np.trace(confusion, dtype=np.float64)
    n_samples = p_sum.sum()
    cov_ytyp = n_correct * n_samples - np.dot(t_sum, p_sum)
    cov_ypyp = n_samples**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n_samples**2 - np.dot(t_sum, t_sum)
    product = cov_ypyp * cov_ytyt
    return 0.0 if product == 0 else float(cov_ytyp / np.sqrt(product))


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    constant = np.ptp(predictions) == 0 or np.ptp(labels) == 0
    return {
        "pearson": float("nan") if constant else float(pearsonr(predictions, labels)[0]),
        "spearman": float("nan") if constant else float(spearmanr(predictions, labels)[0]),
        "mse": float(np.mean((predictions - labels) ** 2)),
    }


def lm_metrics(total_nll: float, total_tokens: int) -> dict[str, float]:
    loss = total_nll / max(total_tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def default_metric(task_kind: str) -> str:
    """The score a head search watches when the recipe names none (the reference scripts' defaults).

    Language models: the loss, so that masking continues while loss <= loss_0 / threshold, which is
    run_prune_gpt.py's rule (its score is 1 / loss). The same rule on perplexity would be far
    stricter (ppl = exp(loss)); `metric: perplexity` still asks for it.
    """
    return {"classification": "accuracy", "regression": "pearson", "lm": "loss"}[task_kind]


def still_acceptable(score: float, original: float, threshold: float, metric: str) -> bool:
    """Whether a masked model's score is within `threshold` of the original.

    Higher-is-better metrics must stay >= threshold * original (the reference script's rule);
    lower-is-better ones (perplexity, loss) must stay <= original / threshold.
    """
    if higher_is_better(metric):
        return score >= threshold * original
    return score <= original / threshold


def metric_value(metrics: dict[str, float], metric: str) -> float:
    """One named score, or a StepError saying which the model head offers."""
    from workbench.errors import StepError

    if metric not in metrics:
        raise StepError(f"metric '{metric}' is not available for this model head", hint=f"choose one of {sorted(metrics)}")
    return metrics[metric]
