"""Task metrics (scikit-learn / scipy) and which direction is better for each."""

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
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    metrics = {"accuracy": float(accuracy_score(labels, predictions))}
    if num_labels == 2:
        metrics["f1"] = float(f1_score(labels, predictions, average="binary", pos_label=1, zero_division=0))
    metrics["f1_macro"] = float(f1_score(labels, predictions, average="macro", zero_division=0))
    metrics["f1_micro"] = float(f1_score(labels, predictions, average="micro", zero_division=0))
    metrics["mcc"] = float(matthews_corrcoef(labels, predictions))
    return metrics


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
