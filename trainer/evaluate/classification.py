"""Diseased vs healthy: ROC, AUC with a bootstrap 95 % interval, sensitivity and specificity at a threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from trainer.evaluate.bootstrap import percentile_ci, ratio_ci, safe_ratio


@dataclass(frozen=True)
class ClassificationResult:
    """Image-level classification metrics (None where a class is absent).

    Attributes:
        auc, auc_ci95: area under the ROC curve and its bootstrap 95 % interval.
        sensitivity, sensitivity_ci95: diseased images with prob >= threshold.
        specificity, specificity_ci95: healthy images with prob < threshold.
        threshold: the decision threshold used.
        fpr, tpr: the ROC curve (for the plot).
        n_diseased, n_healthy: class sizes.
    """

    auc: float | None
    auc_ci95: list[float] | None
    sensitivity: float | None
    sensitivity_ci95: list[float] | None
    specificity: float | None
    specificity_ci95: list[float] | None
    threshold: float
    fpr: np.ndarray
    tpr: np.ndarray
    n_diseased: int
    n_healthy: int


def bootstrap_auc(probs: np.ndarray, diseased: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """AUC of every bootstrap resample at once (Mann-Whitney: mean ranks, ties averaged); NaN for one-class samples.

    Args:
        probs: (n,) scores; diseased: (n,) bool; idx: (n_boot, n) indices.
    """
    scores, labels = probs[idx], diseased[idx]
    ranks = rankdata(scores, axis=1)
    n_pos = labels.sum(axis=1).astype(np.float64)
    n_neg = labels.shape[1] - n_pos
    u = (ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def classification_metrics(probs: np.ndarray, diseased: np.ndarray, threshold: float,
                           idx: np.ndarray) -> ClassificationResult:
    """Compute the classification metrics.

    Args:
        probs: (n,) referable probability per image.
        diseased: (n,) bool ground truth.
        threshold: referable when ``prob >= threshold``.
        idx: (n_boot, n) bootstrap indices (may be empty: no intervals).

    Returns:
        :class:`ClassificationResult`.
    """
    probs, diseased = np.asarray(probs, np.float64), np.asarray(diseased, bool)
    positive = probs >= threshold
    n_pos, n_neg = int(diseased.sum()), int((~diseased).sum())
    auc, auc_ci, fpr, tpr = None, None, np.array([0.0, 1.0]), np.array([0.0, 1.0])
    if n_pos and n_neg:
        auc = float(roc_auc_score(diseased, probs))
        fpr, tpr, _ = roc_curve(diseased, probs)
        auc_ci = percentile_ci(bootstrap_auc(probs, diseased, idx)) if idx.size else None
    return ClassificationResult(
        auc=auc, auc_ci95=auc_ci,
        sensitivity=safe_ratio((positive & diseased).sum(), n_pos),
        sensitivity_ci95=ratio_ci(positive & diseased, diseased, idx),
        specificity=safe_ratio((~positive & ~diseased).sum(), n_neg),
        specificity_ci95=ratio_ci(~positive & ~diseased, ~diseased, idx),
        threshold=float(threshold), fpr=fpr, tpr=tpr, n_diseased=n_pos, n_healthy=n_neg,
    )
