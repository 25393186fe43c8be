"""Quality metrics for imbalanced fraud data: AUC-PR and recall at a fixed false-positive rate."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_curve

TARGET_FPR = 0.01


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float = TARGET_FPR) -> float:
    """The recall a threshold reaches while flagging at most ``fpr`` of genuine transactions."""
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
    return float(true_positive_rate[false_positive_rate <= fpr].max())


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float = TARGET_FPR) -> float:
    return float(np.quantile(scores[~labels], 1.0 - fpr))


def quality(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "auc_pr": float(average_precision_score(labels, scores)),
        "recall_at_1pct_fpr": recall_at_fpr(labels, scores),
    }


def recall_by_scenario(labels: np.ndarray, scores: np.ndarray, scenario: np.ndarray) -> dict[str, float]:
    """Recall of each fraud scenario at the overall 1%-FPR threshold: shows which patterns need history."""
    threshold = threshold_at_fpr(labels, scores)
    out = {}
    for name in sorted(set(scenario[labels]) - {""}):
        mask = labels & (scenario == name)
        out[name] = float((scores[mask] > threshold).mean())
    return out
