"""Task metrics (scikit-learn / scipy) and which direction is better for each."""

from __future__ import annotations

import math

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman", "mse")
LM_METRICS = ("perplexity", "loss")
LOWER_IS_BETTER = {"perplexity", "loss", "mse"}


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """accuracy, F1 (of class 1 when binary, macro otherwise) and Matthews correlation."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    binary = set(np.unique(labels)) | set(np.unique(predictions)) <= {0, 1}
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average="binary" if binary else "macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, predictions)),
    }


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
    """The score a head search watches when the recipe names none (the reference's defaults)."""
    return {"classification": "accuracy", "regression": "pearson", "lm": "perplexity"}[task_kind]


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
